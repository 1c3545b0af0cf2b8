"""Radiographs opened together through napari (File > Open, drag and drop) become one set.

napari's ``ViewerModel.open(paths, stack=False)`` hands the reader one file at a time, so three radiographs
chosen together arrive as three one-image studies. ``RadiographSetGatherer`` watches the layers one
``viewer.open`` call inserts (it finds that call on the stack, so a Qt progress bar pumping events between
files does not split the batch) and, after the call returns, replaces two or more one-image radiograph studies
by one set read with ``load_study`` of their files: the same-patient rule, notes and warnings apply. Files of
several patients stay separate, with one message (``message`` signal, ``last_message``). CT and other
volumes, studies added by the docks (``add_study``) and radiographs opened by another call are left alone.
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import QObject, QTimer, Signal

from napari_radreport.common import one_line
from napari_radreport.user_settings import MIXED_PATIENTS_SWITCH
from napari_radreport.widgets.session import real_viewer, study_of

if TYPE_CHECKING:
    import napari

    from napari_radreport.io import Study

RETRY_MS = 50  # while the open call is still reading (its progress bar pumps events), look again this late
_GATHERERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _one_radiograph(layer: Any) -> Study | None:
    """The layer's study when it is a radiograph set of exactly one image, else None."""
    study = study_of(layer)
    if study is None or study.kind != "xray_set" or len(study.images) != 1:
        return None
    return study if len(study.images[0].source_files) == 1 else None


def settings_allow_mixed_patients() -> bool:
    """The user's Settings switch for files of several patients, as saved."""
    from napari_radreport.user_settings import UserSettings

    return UserSettings.load().allow_mixed_patients


def kept_apart_message(count: int, exc: BaseException) -> str:
    """One line: why ``count`` radiographs opened together stay separate studies (no patient names)."""
    from napari_radreport.io.study import MixedPatients

    if isinstance(exc, MixedPatients):
        differs = ", ".join(exc.differs) or "the patient tags"
        verb = "differs" if len(exc.differs) == 1 else "differ"
        return (f"The {count} radiographs opened together come from {exc.patients or 'several'} patients "
                f"({differs} {verb}): kept as {count} separate studies; to open such files as one set, "
                f"switch on '{MIXED_PATIENTS_SWITCH}' in Settings")
    return f"The {count} radiographs opened together were kept as separate studies: {one_line(exc)}"


class RadiographSetGatherer(QObject):
    """Makes the one-image radiograph studies of one ``viewer.open`` call into one set (see module doc).

    ``message`` carries one line when radiographs opened together are kept apart (files of several patients,
    or a file that could not be read again); ``gathered`` carries the set Study that replaced them."""

    message = Signal(str)
    gathered = Signal(object)

    def __init__(self, viewer: napari.Viewer, *, allow_mixed_patients: Callable[[], bool] | None = None
                 ) -> None:
        from napari.components.viewer_model import ViewerModel

        super().__init__()
        viewer = real_viewer(viewer)
        self.viewer_ref = weakref.ref(viewer)
        self.allow_mixed_patients = allow_mixed_patients or settings_allow_mixed_patients
        self.last_message = ""
        self._open_code = ViewerModel.open.__code__
        # id(open call's frame) -> (that frame, kept alive so the id stays its own; the layers it inserted)
        self._pending: dict[int, tuple[FrameType, list[Any]]] = {}
        self._armed = False
        self._workers: list[Any] = []
        viewer.layers.events.inserted.connect(self._on_inserted)

    @property
    def busy(self) -> bool:
        """Layers are waiting for their open call to end, or a set is being read."""
        return bool(self._pending or self._workers)

    # -- noticing -----------------------------------------------------------------------------------------
    def _open_frames(self) -> list[FrameType]:
        """The frames of ``open`` calls on this viewer now running, innermost first."""
        viewer = self.viewer_ref()
        found = []
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            if frame.f_code is self._open_code and frame.f_locals.get("self") is viewer:
                found.append(frame)
            frame = frame.f_back
        return found

    def _on_inserted(self, event: Any) -> None:
        layer = event.value
        if _one_radiograph(layer) is None:
            return
        frames = self._open_frames()
        if not frames:  # added by code (a dock's add_study, a script), not opened from files
            return
        frame = frames[-1]  # the outermost: the user's one action
        self._pending.setdefault(id(frame), (frame, []))[1].append(layer)
        self._arm(0)

    def _arm(self, delay_ms: int) -> None:
        if not self._armed:
            self._armed = True
            QTimer.singleShot(delay_ms, self._flush)

    def _flush(self) -> None:
        self._armed = False
        running = {id(f) for f in self._open_frames()}
        for key in [k for k in self._pending if k not in running]:
            _, layers = self._pending.pop(key)
            self._gather(layers)
        if self._pending:  # an open call is still reading its files
            self._arm(RETRY_MS)

    # -- gathering ----------------------------------------------------------------------------------------
    def _gather(self, layers: list[Any]) -> None:
        from napari.qt.threading import create_worker

        from napari_radreport.io import load_study

        viewer = self.viewer_ref()
        if viewer is None:
            return
        layers = [layer for layer in layers if layer in viewer.layers and _one_radiograph(layer) is not None]
        studies = list({id(s): s for s in map(_one_radiograph, layers)}.values())
        if len(studies) < 2:
            return
        files = [str(Path(s.images[0].source_files[0])) for s in studies]
        worker = create_worker(load_study, files, allow_mixed_patients=self.allow_mixed_patients(),
                               _ignore_errors=True)
        worker.returned.connect(lambda study: self._replace(layers, study))
        worker.errored.connect(lambda exc: self._say(kept_apart_message(len(studies), exc)))
        worker.finished.connect(lambda: self._workers.remove(worker))
        self._workers.append(worker)
        worker.start()

    def _replace(self, layers: list[Any], study: Study) -> None:
        """Show ``study`` in place of ``layers``, unless one of them was closed meanwhile (then nothing)."""
        from napari_radreport.viewer import add_study

        viewer = self.viewer_ref()
        if viewer is None or any(layer not in viewer.layers for layer in layers):
            return
        add_study(viewer, study)  # first, so that the session moves from the old studies to this one
        for layer in layers:
            viewer.layers.remove(layer)
        self.gathered.emit(study)

    def _say(self, text: str) -> None:
        self.last_message = text
        if self.receivers(self.message) > 0:
            self.message.emit(text)
        else:  # nobody shows it in a dock: napari's notification does
            from napari.utils.notifications import show_warning

            show_warning(text)


def gather_radiograph_sets(viewer: napari.Viewer, *,
                           allow_mixed_patients: Callable[[], bool] | None = None) -> RadiographSetGatherer:
    """The viewer's gatherer, made and connected on first use (later calls return the same one).

    ``allow_mixed_patients`` is asked each time a set is read (default: the user's Settings switch)."""
    real = real_viewer(viewer)
    gatherer = _GATHERERS.get(real)
    if gatherer is None:
        gatherer = _GATHERERS[real] = RadiographSetGatherer(real, allow_mixed_patients=allow_mixed_patients)
    elif allow_mixed_patients is not None:
        gatherer.allow_mixed_patients = allow_mixed_patients
    return gatherer
