"""The Study dock: open a study, see what was read, switch CT windows, choose its prior (side by side, linked
slices: ``widgets/prior_study.py``), open another series.

Files of more than one patient are opened as one study only when the user says so: the Settings switch, or
Yes to the question this dock asks (default No)."""

from __future__ import annotations

import html
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_radreport.io.windows import CT_WINDOWS
from napari_radreport.user_settings import MIXED_PATIENTS_SWITCH
from napari_radreport.widgets.prior_study import PriorRow
from napari_radreport.widgets.radiograph_sets import gather_radiograph_sets
from napari_radreport.widgets.radiograph_views import RadiographViews
from napari_radreport.widgets.reading_tools import ReadingTools
from napari_radreport.widgets.session import error_html, session_for, study_of, warning_html
from napari_radreport.widgets.status_line import StatusLine
from napari_radreport.widgets.study_picker import StudyPicker

INFO_LINES = 4  # the geometry, warnings and notes show this many lines; the tooltip has them all

if TYPE_CHECKING:
    import napari
    from napari.layers import Image

    from napari_radreport.io import Study
    from napari_radreport.io.study import MixedPatients


class StudyDock(QWidget):
    """One per viewer: it shows the session's active study (the one every dock works on); nothing global."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.session = session = session_for(napari_viewer)
        self._worker = None
        # Asked when the files mix patients and the Settings switch is off; True opens them as one study.
        self.ask_mixed_patients: Callable[[MixedPatients], bool] = self._ask_mixed_patients

        open_files = QPushButton("Open files…")
        open_files.setObjectName("radreport-open-files")
        open_files.setToolTip("DICOM files, a NIfTI file, or chest radiographs (PNG, JPEG, DICOM); several "
                              "radiographs make one set")
        open_files.clicked.connect(self._ask_files)
        open_folder = QPushButton("Open folder…")
        open_folder.setObjectName("radreport-open-folder")
        open_folder.setToolTip("A folder holding a DICOM series or a set of radiographs")
        open_folder.clicked.connect(self._ask_folder)
        buttons = QHBoxLayout()
        buttons.addWidget(open_files)
        buttons.addWidget(open_folder)

        self.picker = StudyPicker(session)
        self.info = QLabel("No study open.")
        self.info.setWordWrap(True)
        self.info.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.info.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
        self.status = StatusLine()

        self.window_box = QGroupBox("CT window")
        grid = QGridLayout(self.window_box)
        grid.setContentsMargins(4, 4, 4, 4)
        grid.setSpacing(2)
        self.window_buttons = QButtonGroup(self)
        self.window_buttons.setExclusive(True)
        for i, window in enumerate(CT_WINDOWS.values()):
            button = QPushButton(window.label)
            button.setCheckable(True)
            button.setToolTip(f"level {window.level:g} HU, width {window.width:g} HU (on the active study)")
            button.setObjectName(f"window_{window.name}")
            button.clicked.connect(lambda _=False, name=window.name: self.apply_window(name))
            button.setMinimumHeight(button.sizeHint().height())  # the dock splitter must not squash the text
            self.window_buttons.addButton(button, i)
            grid.addWidget(button, i // 3, i % 3)

        self.tools = ReadingTools(napari_viewer, session)  # letters, W/L, planes, ruler, ROI on the canvas
        self.tools.measurement_text.connect(session.insert_into_report.emit)
        self.prior = PriorRow(napari_viewer, session)  # the prior study: Comparison, side by side, linked
        self.views = RadiographViews(napari_viewer, session)  # a radiograph set's views: add and remove
        self.views.views.setMaximumHeight(self.info.fontMetrics().lineSpacing() * INFO_LINES + 6)
        self.series_box = QGroupBox("Other series in this input")
        series_layout = QHBoxLayout(self.series_box)
        self.series_combo = QComboBox()
        self.open_series_button = QPushButton("Open series")
        self.open_series_button.clicked.connect(self._open_selected_series)
        series_layout.addWidget(self.series_combo, 1)
        series_layout.addWidget(self.open_series_button)

        layout = QVBoxLayout(self)
        layout.setSpacing(4)
        layout.addLayout(buttons)
        layout.addWidget(self.picker)
        layout.addWidget(self.info)
        layout.addWidget(self.window_box)
        layout.addWidget(self.tools)
        layout.addWidget(self.prior)
        layout.addWidget(self.series_box)
        layout.addWidget(self.views)
        layout.addWidget(self.status)
        layout.addStretch(1)

        self.viewer.layers.events.inserted.connect(self._layer_inserted)
        session.study_changed.connect(self._on_study_chosen)
        session.study_changed.connect(self.views.show_study)
        # radiographs chosen together in File > Open become one set; two patients' files stay apart, said here
        self.gatherer = gather_radiograph_sets(
            napari_viewer, allow_mixed_patients=lambda: session.settings.allow_mixed_patients)
        self.gatherer.message.connect(lambda text: self.status.setText(warning_html(text)))
        self.views.show_study(session.study)
        self._on_study_chosen()

    # -- the active study ------------------------------------------------------------------
    def _layer_inserted(self, event) -> None:
        if study_of(event.value) is not None:
            from napari_radreport.viewer import widen_contrast_range

            widen_contrast_range(event.value)

    @property
    def current_study(self) -> Study | None:
        """The session's active study."""
        return self.session.study

    @property
    def current_layer(self) -> Image | None:
        """The active study's layer (for a radiograph set, the selected one of its layers, else its first)."""
        study, viewer = self.session.study, self.session.viewer_ref()  # the viewer, not napari's proxy of it
        if study is None or viewer is None:
            return None
        layers = [layer for layer in viewer.layers if study_of(layer) is study]
        active = viewer.layers.selection.active
        return active if active in layers else (layers[0] if layers else None)

    def _on_study_chosen(self, *_args) -> None:
        study = self.current_study
        lines = self._describe(study) if study else ["No study open."]
        more = len(lines) - INFO_LINES + 1
        shown = lines if more <= 1 else [*lines[:INFO_LINES - 1], f"<i>… {more} more lines (hover)</i>"]
        self.info.setText("<br>".join(shown))  # at most INFO_LINES lines: the dock stays compact
        self.info.setToolTip("<br>".join(lines) if len(shown) < len(lines) else "")
        is_ct = study is not None and study.kind == "ct"
        self.window_box.setVisible(is_ct)
        layer = self.current_layer
        active = layer.metadata.get("radreport_window") if is_ct and layer is not None else None
        for button in self.window_buttons.buttons():
            button.setChecked(button.objectName() == f"window_{active}")
        self._fill_series(study)

    @staticmethod
    def _describe(study: Study) -> list[str]:
        """The images' geometry, then the warnings (ranked) and notes, one line each (rich text)."""
        summary = study.summary()
        lines = []  # whose study it is: the header above
        for image in summary["images"][:4]:
            spacing = ", ".join("?" if s is None else f"{s:g}" for s in image["spacing_mm"])
            orient = "".join(image["orientation"]) if image["orientation"] else "—"
            lines.append(
                f"{html.escape(image['label'])}: {' x '.join(map(str, image['shape']))}, "
                f"spacing {spacing} mm, orientation {orient}"
            )
        lines += [f"<span style='color:#e0a030'>⚠ {html.escape(w)}</span>" for w in summary["warnings"]]
        lines += [f"<i>{html.escape(n)}</i>" for n in summary["notes"]]
        return lines

    # -- windows ---------------------------------------------------------------------------
    def apply_window(self, name: str) -> None:
        """Set a CT window preset on the active study's layer."""
        layer = self.current_layer
        if layer is None or self.current_study.kind != "ct":
            return
        lo, hi = CT_WINDOWS[name].limits
        range_lo, range_hi = layer.contrast_limits_range
        layer.contrast_limits_range = (min(lo, range_lo), max(hi, range_hi))
        layer.contrast_limits = (lo, hi)
        layer.metadata["radreport_window"] = name
        for button in self.window_buttons.buttons():
            button.setChecked(button.objectName() == f"window_{name}")

    # -- series ----------------------------------------------------------------------------
    def _fill_series(self, study: Study | None) -> None:
        self.series_combo.clear()
        others = [s for s in (study.series if study else []) if not s.chosen]
        for s in others:
            self.series_combo.addItem(f"{s.modality} {s.description or s.uid[-12:]} ({s.n_images}, {s.role})",
                                      s.index)
        self.series_box.setVisible(bool(others))

    def _open_selected_series(self) -> None:
        study = self.current_study
        index = self.series_combo.currentData()
        if study is None or index is None:
            return
        self.open_study(list(study.extra.get("input", study.source)), series=int(index))

    # -- opening ---------------------------------------------------------------------------
    def _ask_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Open study files")
        if paths:
            self.open_study(paths if len(paths) > 1 else paths[0])

    def _ask_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a DICOM series or radiograph folder")
        if folder:
            self.open_study(folder)

    def open_study(self, source, series: int | str | None = None, *,
                   allow_mixed_patients: bool | None = None):
        """Read in a background thread, then add the layers; errors show as one line here.

        Files of several patients: opened when ``allow_mixed_patients`` (default: the Settings switch),
        else ``ask_mixed_patients`` decides after the refusal."""
        from napari.qt.threading import create_worker

        from napari_radreport.io import load_study

        if allow_mixed_patients is None:
            allow_mixed_patients = session_for(self.viewer).settings.allow_mixed_patients
        first = source if isinstance(source, (str, Path)) else source[0]
        self.status.setText(f"Reading {html.escape(Path(str(first)).name)}…")
        # The dock shows read errors itself; napari need not relay them as notifications.
        worker = create_worker(load_study, source, series=series, allow_mixed_patients=allow_mixed_patients,
                               _ignore_errors=True)
        worker.returned.connect(self._on_loaded)
        worker.errored.connect(lambda exc: self._on_error(exc, source, series))
        worker.finished.connect(lambda: self._on_finished(worker))
        self._worker = worker
        worker.start()
        return worker

    def _on_loaded(self, study: Study) -> None:
        from napari_radreport.viewer import add_study

        add_study(self.viewer, study)
        self.status.setText("")

    def _on_error(self, exc: BaseException, source=None, series: int | str | None = None) -> None:
        """One line in the status; files of several patients are opened again when the user agrees."""
        from napari_radreport.common import one_line
        from napari_radreport.io.study import MixedPatients

        if isinstance(exc, MixedPatients) and source is not None and self.ask_mixed_patients(exc):
            self.open_study(source, series, allow_mixed_patients=True)
            return
        self.status.setText(error_html(f"Could not open: {one_line(exc)}"))

    def mixed_patients_box(self, exc: MixedPatients) -> QMessageBox:
        """The question: what differs, the IDs and files in the details; No is the default."""
        from napari_radreport.common import one_line

        box = QMessageBox(self)
        box.setIcon(QMessageBox.Icon.Warning)
        box.setWindowTitle("Files of different patients")
        verb = "differs" if len(exc.differs) == 1 else "differ"
        box.setText(f"These files come from {exc.patients or 'several'} patients: "
                    f"{', '.join(exc.differs)} {verb}.")
        box.setInformativeText("Open them as one study anyway? Its reports will say MIXED PATIENTS and no "
                               f"DICOM SR can be exported. (Settings: '{MIXED_PATIENTS_SWITCH}' opens such "
                               "files without asking.)")
        box.setDetailedText(one_line(exc))
        box.setStandardButtons(QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.setEscapeButton(QMessageBox.StandardButton.No)
        return box

    def _ask_mixed_patients(self, exc: MixedPatients) -> bool:
        return self.mixed_patients_box(exc).exec() == QMessageBox.StandardButton.Yes

    def _on_finished(self, worker) -> None:
        if self._worker is worker:  # not the read started after it (mixed patients, opened when agreed)
            self._worker = None
