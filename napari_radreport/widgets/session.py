"""Per-viewer state shared by the docks: the engine, the chosen study, settings, drafts, chat histories.

One ``ViewerSession`` per napari viewer (kept in a weak dictionary keyed by the viewer, never global).
Engine jobs run in plain threads; ``JobWatcher`` polls their event queue from a Qt timer in the GUI thread,
so widgets are only ever touched from the GUI thread.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, QTimer, Signal

from napari_radreport.common import one_line
from napari_radreport.drafts import DraftStore
from napari_radreport.engine.engine import Engine
from napari_radreport.user_settings import UserSettings

if TYPE_CHECKING:
    import napari

    from napari_radreport.engine.jobs import Job
    from napari_radreport.io import Study

_SESSIONS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
POLL_MS = 25


class JobWatcher(QObject):
    """Relays a Job's events as Qt signals in the GUI thread; ``finished`` carries (result, error)."""

    events = Signal(list)
    finished = Signal(object, object)

    def __init__(self, job: Job, parent: QObject | None = None):
        super().__init__(parent)
        self.job = job
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        self._timer.start()

    def _poll(self) -> None:
        events, done = self.job.drain()
        if events:
            self.events.emit(events)
        if done:
            self._timer.stop()
            self.finished.emit(None if self.job.error else self.job._result, self.job.error)


def studies_in(viewer: napari.Viewer) -> list[tuple[str, Study]]:
    """(layer name, study) for each study shown in the viewer, each study once, in layer order."""
    seen, found = set(), []
    for layer in viewer.layers:
        study = getattr(layer, "metadata", {}).get("study")
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
    message = Signal(str)  # one line for the docks' status bars

    def __init__(self, viewer: napari.Viewer):
        super().__init__()
        self.viewer_ref = weakref.ref(viewer)
        self.engine = Engine()
        self.settings = UserSettings.load()
        self.drafts = DraftStore(self.settings.drafts_folder or None)
        self.study: Study | None = None
        self.chats: dict[str, list[tuple[str, str, str]]] = {}  # study key -> (question, answer, note)
        self.watcher: JobWatcher | None = None
        self.job_owner: str = ""  # which dock started the running job
        self.job_task: str = ""
        viewer.layers.events.inserted.connect(self._layers_changed)
        viewer.layers.events.removed.connect(self._layers_changed)
        self._layers_changed()

    # -- studies ----------------------------------------------------------------------------
    def studies(self) -> list[tuple[str, Study]]:
        viewer = self.viewer_ref()
        return studies_in(viewer) if viewer is not None else []

    def _layers_changed(self, *_args) -> None:
        studies = [s for _, s in self.studies()]
        self.studies_changed.emit()
        if self.study is None or all(s is not self.study for s in studies):
            self.set_study(studies[-1] if studies else None)

    def set_study(self, study: Study | None) -> None:
        if study is not self.study:
            self.study = study
            self.study_changed.emit(study)

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

    def start(self, owner: str, task: str, *args: Any, **kwargs: Any) -> JobWatcher:
        """Start an engine task; raises EngineBusy while another runs. Watch the returned object's signals."""
        job = self.engine.start(task, *args, **kwargs)
        self.watcher, self.job_owner, self.job_task = JobWatcher(job, self), owner, task
        self.watcher.finished.connect(self._job_finished)
        self.busy_changed.emit(True)
        return self.watcher

    def _job_finished(self, result: Any, error: BaseException | None) -> None:
        task = self.job_task
        self.watcher, self.job_owner, self.job_task = None, "", ""
        if task in ("load", "unload"):
            self.model_changed.emit(self.engine.info)
        if task == "load" and error is not None:
            self.message.emit(f"Could not load the model: {one_line(error)}")
        self.busy_changed.emit(False)

    def stop(self) -> None:
        if self.engine.job is not None:
            self.engine.job.stop()

    def load_args(self) -> dict[str, Any]:
        """Arguments of engine.load from the settings."""
        s = self.settings
        return {"source": s.model_folder or None, "device": s.device, "dtype": s.dtype}

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop any running job and end the engine's thread, waiting up to ``timeout`` s (a dock closing)."""
        return self.engine.shutdown(timeout)


def _real_viewer(viewer):
    """napari hands plugin docks a proxy per dock; the session belongs to the viewer behind them."""
    return getattr(viewer, "__wrapped__", viewer)


def session_for(viewer: napari.Viewer) -> ViewerSession:
    """The viewer's session, made on first use and shared by all the plugin's docks in that viewer."""
    viewer = _real_viewer(viewer)
    session = _SESSIONS.get(viewer)
    if session is None:
        session = _SESSIONS[viewer] = ViewerSession(viewer)
    return session
