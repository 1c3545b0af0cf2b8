"""Per-viewer state shared by the docks: the engine, the chosen study, settings, drafts, chat histories, and
each study's prior (the study it is compared with: ``prior_of``, ``set_prior``, ``comparison``).

One ``ViewerSession`` per napari viewer (kept in a weak dictionary keyed by the viewer, never global).
Engine jobs run on the engine's thread; ``JobWatcher`` polls their event queue from a Qt timer in the GUI
thread, so widgets are only ever touched from the GUI thread. Docks start work with ``ViewerSession.run``.
"""

from __future__ import annotations

import html
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtWidgets import QProgressBar

from napari_radreport.common import one_line
from napari_radreport.drafts import DraftStore
from napari_radreport.engine.engine import Engine, EngineBusy
from napari_radreport.engine.events import Progress, ScopeChecked
from napari_radreport.io.prior_link import PriorLink, check_prior, choose_link, comparison_text
from napari_radreport.user_settings import UserSettings

if TYPE_CHECKING:
    import napari

    from napari_radreport.engine.jobs import Job
    from napari_radreport.io import Study
    from napari_radreport.io.study import ImageData

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
POLL_MS = 25


class JobWatcher(QObject):
    """Relays a Job's events as Qt signals in the GUI thread; ``finished`` carries (result, error)."""

    events = Signal(list)
    finished = Signal(object, object)

    def __init__(self, job: Job, parent: QObject | None = None):
        super().__init__(parent)
        self.job = job
        self._polling = False
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self._timer.start()

    def _poll(self) -> None:
        if self._polling:  # a handler ran the event loop (napari's activity bar does): no nested poll, so
            return  # events and the outcome arrive in order, the outcome once
        self._polling = True
        try:
            events, done = self.job.drain()
            if events:
                self.events.emit(events)
            if done:
                self._timer.stop()
                self.finished.emit(*self.job.outcome(0))
                self.deleteLater()
        finally:
            self._polling = False


def error_html(text: str) -> str:
    """One line of error text, escaped, in the docks' error colour (for a status label's rich text)."""
    return f"<span style='color:#e05050'>{html.escape(text, quote=False)}</span>"


def warning_html(text: str) -> str:
    """One line of warning text, escaped, in the docks' warning colour."""
    return f"<span style='color:#f0a040'>{html.escape(text, quote=False)}</span>"


def scope_html(scope: dict | None) -> str:
    """A study's scope verdict (``ScopeVerdict.as_dict()``) as a dock's orange rich text; "" when the study is
    within the model's scope with nothing to say."""
    from napari_radreport.modeling.scope import ScopeVerdict

    text = ScopeVerdict(**scope).warning() if scope else ""
    return f"<span style='color:#f0a040'><b>{html.escape(text, quote=False)}</b></span>" if text else ""


def show_fraction(bar: QProgressBar, fraction: float | None) -> None:
    """A determinate bar (0..100) at ``fraction`` (0..1), or an indeterminate one when it is None."""
    if fraction is None:
        bar.setRange(0, 0)
    else:
        bar.setRange(0, 100)
        bar.setValue(round(100 * min(max(fraction, 0.0), 1.0)))


class _Relay(QObject):
    """Hands one job's events and outcome to a dock's handlers; a child of the dock, so a closed dock gets
    no calls."""

    def __init__(self, parent: QObject, on_result: Callable[[Any], None], on_error: Callable[[str], None],
                 on_events: Callable[[list[Any]], None] | None, on_end: Callable[[], None] | None,
                 progress: QProgressBar | None, prefix: str):
        super().__init__(parent)
        self.on_result, self.on_error, self.on_events, self.on_end = on_result, on_error, on_events, on_end
        self.progress, self.prefix = progress, prefix

    def events(self, events: list[Any]) -> None:
        if self.progress is not None:  # the last Progress decides: its fraction, or indeterminate
            last = next((e for e in reversed(events) if isinstance(e, Progress)), None)
            if last is not None:
                show_fraction(self.progress, last.fraction)
        if self.on_events is not None:
            self.on_events(events)

    def finished(self, result: Any, error: BaseException | None) -> None:
        self.deleteLater()
        if self.progress is not None:
            self.progress.setVisible(False)
        try:
            if error is None:
                self.on_result(result)
            else:
                self.on_error(self.prefix + one_line(error))
        finally:
            if self.on_end is not None:
                self.on_end()


def study_of(layer: Any) -> Study | None:
    """The study a layer shows (None for a layer of no study, or no layer)."""
    return getattr(layer, "metadata", {}).get("study") if layer is not None else None


def image_of(layer: Any) -> ImageData | None:
    """The study image a layer shows (its study's ``radreport_image_index``-th image; None for a layer of no
    study)."""
    study = study_of(layer)
    if study is None or not study.images:
        return None
    return study.images[layer.metadata.get("radreport_image_index", 0)]


def studies_in(viewer: napari.Viewer) -> list[tuple[str, Study]]:
    """(layer name, study) for each study shown in the viewer, each study once, in layer order."""
    seen, found = set(), []
    for layer in viewer.layers:
        study = study_of(layer)
        if study is not None and id(study) not in seen:
            seen.add(id(study))
            found.append((layer.name, study))
    return found


class ViewerSession(QObject):
    """What the docks of one viewer share."""

    study_changed = Signal(object)  # Study or None
    studies_changed = Signal()
    model_changed = Signal(object)  # ModelInfo or None
    busy_changed = Signal(bool)
    settings_changed = Signal(object)  # UserSettings
    scope_changed = Signal()  # a study's verdict against the model's scope arrived (``scopes``)
    readability_known = Signal()  # ``cannot_read`` has an answer it did not have before
    insert_into_report = Signal(str)  # text for the draft at its cursor (a measurement, reading tools)
    prior_changed = Signal(object)  # the Study whose prior (or its offset) changed
    _off_thread_done = Signal(object, object)  # ``off_thread``'s (callback, result), queued to the GUI thread

    def __init__(self, viewer: napari.Viewer):
        super().__init__()
        self.viewer_ref = weakref.ref(viewer)
        self.engine = Engine()
        self.settings = UserSettings.load()
        self.drafts = DraftStore(self.settings.drafts_folder or None)
        self.study: Study | None = None
        self.chats: dict[str, list[tuple[str, str, str]]] = {}  # study key -> (question, answer, note)
        self.scopes: dict[str, dict] = {}  # study key -> the loaded model's ScopeVerdict.as_dict()
        self._unreadable: dict[tuple[str, str], str | None] = {}  # (model folder, study key) -> cannot_read
        self.watcher: JobWatcher | None = None
        self.job_owner: Any = None  # the dock that started the running job
        self.job_task: str = ""
        self.docks: dict[str, Any] = {}  # the plugin's docks by name, when widgets.layout docked them
        self._priors: dict[str, tuple[Study, Study, float]] = {}  # study key -> (study, prior, offset mm)
        self._off_thread_done.connect(self._deliver)
        viewer.layers.events.inserted.connect(self._layer_inserted)
        viewer.layers.events.removed.connect(self._layers_changed)
        viewer.layers.selection.events.active.connect(self._active_layer_changed)
        self._layers_changed()

    # -- studies ----------------------------------------------------------------------------
    def studies(self) -> list[tuple[str, Study]]:
        viewer = self.viewer_ref()
        return studies_in(viewer) if viewer is not None else []

    def name_of(self, study: Study) -> str:
        """The study's layer name (its first layer's), as the pickers list it; "" when it is not shown."""
        return next((name for name, s in self.studies() if s is study), "")

    def _layers_changed(self, *_args) -> None:
        studies = [s for _, s in self.studies()]
        self._forget_closed_priors(studies)
        self.studies_changed.emit()
        if self.study is None or all(s is not self.study for s in studies):
            self.set_study(studies[-1] if studies else None)

    def _layer_inserted(self, event: Any) -> None:
        """A newly opened study becomes the active one."""
        self.studies_changed.emit()
        study = study_of(event.value)
        self.set_study(study if study is not None else self.study)

    def _active_layer_changed(self, event: Any) -> None:
        """Selecting a study's layer makes that study the active one (a layer of no study changes nothing)."""
        study = study_of(event.value)
        if study is not None:
            self.set_study(study)

    def set_study(self, study: Study | None) -> None:
        """Make ``study`` the active study of every dock. It is put on screen first: its layers shown, one of
        them selected, the other studies' layers hidden (unless the viewer shows a grid)."""
        if study is not self.study:
            self.study = study
            self._put_on_screen(study)
            self.study_changed.emit(study)

    def put_on_screen(self) -> None:
        """Show the active study as choosing it does (after the viewer left its grid, say)."""
        self._put_on_screen(self.study)

    def _put_on_screen(self, study: Study | None) -> None:
        viewer = self.viewer_ref()
        if viewer is None or study is None:
            return
        own = [layer for layer in viewer.layers if study_of(layer) is study]
        if not own:  # not (or no longer) in the viewer
            return
        if not viewer.canvas.grid.enabled:
            for layer in viewer.layers:
                if study_of(layer) is not None:
                    layer.visible = study_of(layer) is study
        if study_of(viewer.layers.selection.active) is not study:
            viewer.layers.selection.active = own[-1]

    # -- priors ------------------------------------------------------------------------------
    def prior_of(self, study: Study | None) -> Study | None:
        """The study ``study`` is compared with (None when none was chosen)."""
        entry = self._priors.get(study.key) if study is not None else None
        return entry[1] if entry is not None else None

    def set_prior(self, study: Study, prior: Study | None) -> list[str]:
        """Make ``prior`` the prior of ``study`` (None: no prior); a new prior starts with no offset. Returns
        the notes on the pair (``io.prior_link.check_prior``); PriorRefused (one line) leaves the earlier
        prior in place."""
        if prior is None:
            notes: list[str] = []
            self._priors.pop(study.key, None)
        else:
            notes = check_prior(study, prior)
            same = self.prior_of(study) is prior
            self._priors[study.key] = (study, prior, self._priors[study.key][2] if same else 0.0)
        self.prior_changed.emit(study)
        return notes

    def prior_link(self, study: Study | None) -> PriorLink | None:
        """How the prior of ``study`` is linked with it (mode and offset); None without a prior."""
        entry = self._priors.get(study.key) if study is not None else None
        return None if entry is None else choose_link(entry[0], entry[1], entry[2])

    def set_prior_offset(self, study: Study, offset_mm: float) -> None:
        """The manual offset (mm along the body axis, + toward the head) of the prior of ``study``."""
        entry = self._priors.get(study.key)
        if entry is not None and entry[2] != float(offset_mm):
            self._priors[study.key] = (entry[0], entry[1], float(offset_mm))
            self.prior_changed.emit(study)

    def comparison(self, study: Study | None) -> str:
        """The Comparison line for ``study``: its prior named (``comparison_text``); "" without one."""
        prior = self.prior_of(study)
        return comparison_text(prior) if prior is not None else ""

    def _forget_closed_priors(self, open_studies: list[Study]) -> None:
        """A pair goes when its study or its prior is no longer open."""
        shown = {id(s) for s in open_studies}
        for key, (study, prior, _) in list(self._priors.items()):
            if id(study) not in shown or id(prior) not in shown:
                del self._priors[key]
                self.prior_changed.emit(study)

    # -- settings ----------------------------------------------------------------------------
    def update_settings(self, **changes: Any) -> None:
        for name, value in changes.items():
            setattr(self.settings, name, value)
        self.settings.save()
        if "drafts_folder" in changes:
            self.drafts = DraftStore(self.settings.drafts_folder or None)
        self.settings_changed.emit(self.settings)

    # -- jobs ---------------------------------------------------------------------------------
    @property
    def busy(self) -> bool:
        return self.watcher is not None

    def run(self, owner: Any, task: str, *args: Any, on_result: Callable[[Any], None],
            on_error: Callable[[str], None], on_events: Callable[[list[Any]], None] | None = None,
            on_end: Callable[[], None] | None = None, progress: QProgressBar | None = None,
            error_prefix: str = "", **kwargs: Any) -> JobWatcher | None:
        """Start an engine task for the dock ``owner``; while busy, None and ``on_error`` with the reason.

        ``on_events`` gets each batch of events. When the job ends, ``on_result`` gets its result or
        ``on_error`` its error as one line (after ``error_prefix: ``), then ``on_end()`` runs. ``progress``
        shows while the job runs: determinate at a ``Progress`` event's fraction, indeterminate otherwise.
        napari's activity dock shows the job too (``widgets/progress.py``), until it ends however it ends.
        The buttons are back (``busy_changed(False)``) before the handlers run; a closed dock gets no calls.
        """
        from napari_radreport.widgets.progress import JobActivity

        self.engine.allow_out_of_scope = self.settings.allow_out_of_scope  # refused unless the user allows it
        try:
            job = self.engine.start(task, *args, **kwargs)
        except EngineBusy as exc:
            on_error(one_line(exc))
            return None
        watcher = JobWatcher(job, self)
        self.watcher, self.job_owner, self.job_task = watcher, owner, task
        activity = JobActivity(task, stop=None if task in ("load", "unload") else self.stop)
        watcher.finished.connect(lambda *_: activity.close())
        watcher.destroyed.connect(lambda *_: activity.close())  # the viewer closed while the job ran
        watcher.finished.connect(self._job_finished)
        relay = _Relay(getattr(owner, "native", owner), on_result, on_error, on_events, on_end, progress,
                       f"{error_prefix}: " if error_prefix else "")
        watcher.events.connect(relay.events)
        if args and hasattr(args[0], "key"):  # a task on a study: keep its scope verdict for every dock
            watcher.events.connect(lambda events, key=args[0].key: self._keep_scope(key, events))
        watcher.events.connect(activity.update)  # last: it runs the event loop (see JobWatcher._poll)
        watcher.finished.connect(relay.finished)
        if progress is not None:
            show_fraction(progress, None)
            progress.setVisible(True)
        self.busy_changed.emit(True)
        QTimer.singleShot(0, activity.start)  # not from inside the caller (see JobActivity)
        return watcher

    def _keep_scope(self, key: str, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, ScopeChecked):
                self.scopes[key] = event.verdict.as_dict()
                self.scope_changed.emit()

    def _job_finished(self, result: Any, error: BaseException | None) -> None:
        task = self.job_task
        self.watcher, self.job_owner, self.job_task = None, None, ""
        if task in ("load", "unload"):
            self.scopes.clear()  # a verdict is the loaded model's
            self.model_changed.emit(self.engine.info)
        self.busy_changed.emit(False)

    def stop(self) -> None:
        if self.engine.job is not None:
            self.engine.job.stop()

    def cannot_read(self, study: Study) -> str | None:
        """Why the chosen model cannot read ``study`` at all ("" when it can; None while its config is still
        being read, on a thread: a family's check may import transformers, which must not stall the UI).
        ``readability_known`` fires when an answer arrives."""
        from napari_radreport.engine.engine import cannot_read

        if self.engine.loaded:
            from napari_radreport.modeling.scope import modality_mismatch

            return modality_mismatch(self.engine.runner.family.scope, study)
        key = (self.settings.model_folder, study.key)
        if key not in self._unreadable:
            self._unreadable[key] = None  # asked: the answer fills it in

            def known(answer: str) -> None:
                self._unreadable[key] = answer
                self.readability_known.emit()

            self.off_thread(lambda: cannot_read(key[0] or None, study), known)
        return self._unreadable[key]

    def off_thread(self, work: Callable[[], Any], done: Callable[[Any], None]) -> None:
        """Run ``work`` (light I/O, e.g. reading model configs, that may import a heavy library) on a thread
        of its own, not the engine's; ``done(result)`` runs in the GUI thread afterwards."""
        threading.Thread(target=lambda: self._off_thread_done.emit(done, work()), name="radreport-off-thread",
                         daemon=True).start()

    def _deliver(self, done: Callable[[Any], None], result: Any) -> None:
        done(result)  # in the GUI thread: the session lives there, so the signal arrives queued

    def load_args(self) -> dict[str, Any]:
        """Arguments of engine.load from the settings."""
        s = self.settings
        return {"source": s.model_folder or None, "device": s.device, "dtype": s.dtype,
                "quantization": s.quantization}

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop any running job and end the engine's thread, waiting up to ``timeout`` s (a dock closing)."""
        return self.engine.shutdown(timeout)


def real_viewer(viewer: Any) -> Any:
    """napari hands plugin docks a proxy per dock; the session belongs to the viewer behind them."""
    return getattr(viewer, "__wrapped__", viewer)


def session_for(viewer: napari.Viewer) -> ViewerSession:
    """The viewer's session, made on first use and shared by all the plugin's docks in that viewer."""
    viewer = real_viewer(viewer)
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = ViewerSession(viewer)
    return session
