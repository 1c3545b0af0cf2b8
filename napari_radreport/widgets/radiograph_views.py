"""The "Views" box: the radiographs of a set, with buttons to add views from files and to remove one.

Each change reads the set's files again on a background thread (``add_views`` / ``remove_view``: the
same-patient rule, notes and warnings of ``load_study``), then shows the new set in place of the old one's
layers. Errors show as one line in the box; the set in the viewer stays as it was."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_radreport.common import one_line
from napari_radreport.io.xray import SET_KINDS
from napari_radreport.user_settings import MIXED_PATIENTS_SWITCH
from napari_radreport.widgets.radiograph_sets import settings_allow_mixed_patients
from napari_radreport.widgets.session import study_of

if TYPE_CHECKING:
    import napari

    from napari_radreport.io import Study
    from napari_radreport.widgets.session import ViewerSession

FILE_FILTER = "Radiographs (*.png *.jpg *.jpeg *.dcm *.dicom);;All files (*)"


def view_text(index: int, image: Any) -> str:
    """A view's line in the list: its number, view position (— when unknown) and label."""
    return f"{index + 1}. {image.view_position or '—'} {image.label}"


class RadiographViews(QGroupBox):
    """The views of the radiograph set given to ``show_study`` (hidden for anything else).

    ``study_replaced(old, new)`` fires once the viewer shows ``new`` in place of ``old``; the session, when
    given, is told (``set_study``) and gives the Settings switch for files of several patients."""

    study_replaced = Signal(object, object)

    def __init__(self, viewer: napari.Viewer, session: ViewerSession | None = None,
                 parent: QWidget | None = None) -> None:
        super().__init__("Views", parent)
        self.viewer = viewer
        self.session = session
        self.study: Study | None = None
        self._worker: Any = None

        self.views = QListWidget()
        self.views.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.views.currentRowChanged.connect(lambda _row: self._enable())
        self.add_button = QPushButton("Add views…")
        self.add_button.setToolTip("Add radiographs of the same patient (PNG, JPEG or DICOM) to this set")
        self.add_button.clicked.connect(self._ask_files)
        self.remove_button = QPushButton("Remove")
        self.remove_button.setToolTip("Remove the chosen view from this set (a set keeps at least one)")
        self.remove_button.clicked.connect(lambda: self.remove_view())
        self.status = QLabel("")
        self.status.setWordWrap(True)

        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.views)
        layout.addLayout(buttons)
        layout.addWidget(self.status)
        self.show_study(None)

    @property
    def busy(self) -> bool:
        return self._worker is not None

    # -- showing ------------------------------------------------------------------------------------------
    def show_study(self, study: Study | None) -> None:
        """List ``study``'s views when it is a radiograph set; hide the box otherwise."""
        if study is not self.study:
            self.status.setText("")
        self.study = study if study is not None and study.kind in SET_KINDS else None
        self.views.clear()
        for i, image in enumerate(self.study.images if self.study is not None else []):
            self.views.addItem(view_text(i, image))
        self.setVisible(self.study is not None)
        self._enable()

    def _enable(self) -> None:
        ready = self.study is not None and not self.busy
        self.add_button.setEnabled(ready)
        self.remove_button.setEnabled(ready and self.views.count() > 1 and self.views.currentRow() >= 0)

    # -- changing -----------------------------------------------------------------------------------------
    def _ask_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Add views to the set", "", FILE_FILTER)
        if paths:
            self.add_views(paths)

    def add_views(self, paths: Sequence[str]) -> Any:
        """Read the set with ``paths`` added, on a thread; the worker, or None when there is no set."""
        from napari_radreport.io.xray import add_views

        allow = (self.session.settings.allow_mixed_patients if self.session is not None
                 else settings_allow_mixed_patients())
        return self._start(add_views, list(paths), allow_mixed_patients=allow, what="add",
                           hint=f"to add them anyway, switch on '{MIXED_PATIENTS_SWITCH}' in Settings")

    def remove_view(self, index: int | None = None) -> Any:
        """Read the set without view ``index`` (default: the chosen one), on a thread; the worker, or None
        when refused at once (the last view, no such view)."""
        from napari_radreport.io.study import StudyReadError
        from napari_radreport.io.xray import remove_view, views_left

        if self.study is None:
            return None
        index = self.views.currentRow() if index is None else index
        try:
            views_left(self.study, index)  # refuses the last view before anything is read
        except StudyReadError as exc:
            self._error("remove", exc)
            return None
        return self._start(remove_view, index, what="remove")

    def _start(self, work: Callable[..., Study], *args: Any, what: str, hint: str = "", **kwargs: Any) -> Any:
        from napari.qt.threading import create_worker

        study = self.study
        if study is None or self.busy:
            return None
        self.status.setText("Reading the set's files…")
        worker = create_worker(work, study, *args, _ignore_errors=True, **kwargs)
        worker.returned.connect(lambda new: self._show(study, new))
        worker.errored.connect(lambda exc: self._error(what, exc, hint))
        worker.finished.connect(lambda: self._finished(worker))
        self._worker = worker
        self._enable()
        worker.start()
        return worker

    def _finished(self, worker: Any) -> None:
        if self._worker is worker:
            self._worker = None
        self._enable()

    def _error(self, what: str, exc: BaseException, hint: str = "") -> None:
        from napari_radreport.io.study import MixedPatients
        from napari_radreport.widgets.session import error_html

        if isinstance(exc, MixedPatients) and hint:
            exc = exc.with_hint(hint)
        self.status.setText(error_html(f"Could not {what}: {one_line(exc)}"))

    def _show(self, old: Study, new: Study) -> None:
        """The viewer shows ``new`` in place of ``old``'s layers (added first, so the session moves to it)."""
        from napari_radreport.viewer import add_study

        layers = [layer for layer in self.viewer.layers if study_of(layer) is old]
        if not layers:
            self.status.setText("The set was closed meanwhile: nothing changed")
            return
        add_study(self.viewer, new)
        for layer in layers:
            self.viewer.layers.remove(layer)
        self.status.setText("")
        if self.session is not None:
            self.session.set_study(new)
        if self.study is old:
            self.show_study(new)
        self.study_replaced.emit(old, new)
