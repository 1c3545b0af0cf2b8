"""The Findings dock: the model's probability for each abnormality it was asked about, sortable, thresholded.

CT models are asked about CT-RATE's 18 abnormalities (E3D-GPT's yes/no question); radiograph models
about the labels they support. All questions share one cached image prefix.

"Show where" (or a double-click on a row) locates the row's abnormality: where in the image the model's "Yes"
comes from (``Engine.ground_label``), drawn as the Report dock draws a located sentence.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor, QFont
from qtpy.QtWidgets import (
    QDoubleSpinBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_radreport.engine.events import Progress
from napari_radreport.engine.prompts import DIAGNOSIS_THRESHOLD
from napari_radreport.widgets.scope_note import ScopeNote
from napari_radreport.widgets.session import error_html, session_for
from napari_radreport.widgets.shortcuts import add_shortcut
from napari_radreport.widgets.status_line import StatusLine
from napari_radreport.widgets.study_picker import StudyPicker

if TYPE_CHECKING:
    import napari


class _Number(QTableWidgetItem):
    """Sorts by value, shows a percentage."""

    def __init__(self, value: float):
        super().__init__(f"{value:.1%}")
        self.value = value
        self.setData(Qt.ItemDataRole.UserRole, value)

    def __lt__(self, other: QTableWidgetItem) -> bool:
        return self.value < getattr(other, "value", 0.0)


class FindingsDock(QWidget):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.session = session = session_for(napari_viewer)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)  # no stretch below
        self.results: dict[str, dict[str, float]] = {}  # study key -> label -> probability
        self.picker = StudyPicker(session)
        self.run_button = QPushButton("Check abnormalities")
        self.run_button.setObjectName("radreport-findings-run")
        self.run_button.clicked.connect(self.run)
        self.where_button = QPushButton("Show where")
        self.where_button.setObjectName("radreport-findings-where")
        self.where_button.setToolTip("Where in the image the model's answer for the selected row comes from "
                                     "(or double-click a row)")
        self.where_button.clicked.connect(lambda: self.show_where(self.table.currentRow()))
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("radreport-findings-stop")
        self.stop_button.clicked.connect(session.stop)
        add_shortcut(self, "Escape", session.stop, self.stop_button)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0.0, 1.0)
        self.threshold.setDecimals(3)
        self.threshold.setSingleStep(0.05)
        self.threshold.setValue(DIAGNOSIS_THRESHOLD)
        self.threshold.setToolTip("Probabilities at or above this are marked present")
        self.threshold.valueChanged.connect(self.render)
        self.table = QTableWidget(0, 3)
        self.table.setObjectName("radreport-findings-table")
        self.table.setMinimumHeight(72)  # a few rows at least; the layout gives it more
        self.table.setHorizontalHeaderLabels(["Abnormality", "Probability", "Present"])
        self.table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.table.verticalHeader().setVisible(False)
        self.table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table.setSelectionBehavior(QTableWidget.SelectionBehavior.SelectRows)
        self.table.cellDoubleClicked.connect(lambda row, _column: self.show_where(row))
        self.progress = QProgressBar()  # determinate: the engine says which question batch it is on
        self.progress.setVisible(False)
        self.status = StatusLine()
        self.pending = None

        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button, 1)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.where_button)
        buttons.addWidget(QLabel("Threshold:"))
        buttons.addWidget(self.threshold)
        layout = QVBoxLayout(self)
        layout.setSpacing(4)
        layout.addWidget(self.picker)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.status)
        layout.addWidget(ScopeNote(session))  # why the study is outside the model's scope, if it is
        session.study_changed.connect(self.render)
        session.busy_changed.connect(self._busy_changed)
        session.model_changed.connect(self.render)
        for signal in (session.model_changed, session.study_changed):
            signal.connect(lambda *_: self._busy_changed(self.session.busy))
        self.destroyed.connect(lambda *_, s=session: s.shutdown(timeout=0))
        self._busy_changed(session.busy)
        self.render()

    def _busy_changed(self, busy: bool) -> None:
        self.run_button.setEnabled(not busy)
        self.where_button.setEnabled(not busy and self._grounding_refusal() == "")
        self.stop_button.setEnabled(busy and self.session.job_owner is self)

    def run(self) -> None:
        study = self.session.study
        if study is None or not self.session.engine.loaded:
            self.status.setText("Open a study and load a model first.")
            return
        watcher = self.session.run(self, "diagnose", study, on_events=self._on_events, on_result=self._done,
                                   on_error=self._show_error, on_end=self._ended, progress=self.progress)
        if watcher is None:  # busy: said why, nothing started
            return
        self.pending = study
        self.status.setText("Asking about each abnormality…")
        self._busy_changed(True)

    def _grounding_refusal(self) -> str:
        from napari_radreport.grounding.support import grounding_refusal

        info, study = self.session.engine.info, self.session.study
        if info is None or study is None:
            return "load a model and open a study first"
        return grounding_refusal(info.kind, info.modality, study)

    def show_where(self, row: int) -> None:
        """Locate the abnormality of table row ``row`` in the active study and show it."""
        item = self.table.item(row, 0) if row >= 0 else None
        refusal = self._grounding_refusal()
        if item is None or refusal:
            self.status.setText(error_html(f"Cannot show where: {refusal}") if refusal else
                                "Select a row first.")
            return
        study = self.session.study

        def shown(sentence) -> None:
            from napari_radreport.widgets.location_layers import show_sentence

            if self.session.study is not study:
                return  # the user moved on: not drawn over another study
            said = show_sentence(self.session, sentence.as_dict(), sentence.location)
            self.status.setText(said or f"{html.escape(item.text())}: no location ({sentence.why_none}).")

        self.session.run(self, "ground_label", study, item.text(), on_result=shown, on_error=self._show_error,
                         progress=self.progress, error_prefix="Could not locate it")

    def _on_events(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, Progress):
                self.status.setText(html.escape(event.message or event.stage))

    def _done(self, result: dict[str, float]) -> None:
        """The result is the study's the check started on, and says so (the user may have moved on)."""
        self.results[self.pending.key] = result
        name = html.escape(self.session.name_of(self.pending) or "the study")
        self.status.setText(f"{name}: {sum(p >= self.threshold.value() for p in result.values())} of "
                            f"{len(result)} above the threshold. Model output, not a diagnosis.")

    def _show_error(self, text: str) -> None:
        self.status.setText(error_html(text))

    def _ended(self) -> None:
        self.pending = None
        self.render()

    def render(self, *_args) -> None:
        study = self.session.study
        result = self.results.get(study.key, {}) if study is not None else {}
        if not result and self.session.engine.info is not None:
            result = dict.fromkeys(self.session.engine.info.labels)
        self.table.setSortingEnabled(False)
        self.table.setRowCount(len(result))
        threshold = self.threshold.value()
        bold = QFont()
        bold.setBold(True)
        for row, (label, p) in enumerate(result.items()):
            name = QTableWidgetItem(label)
            value = _Number(p) if p is not None else QTableWidgetItem("—")
            present = QTableWidgetItem("" if p is None else ("yes" if p >= threshold else "no"))
            if p is not None and p >= threshold:
                for item in (name, value, present):
                    item.setFont(bold)
                    item.setForeground(QBrush(QColor("#f0a040")))
            self.table.setItem(row, 0, name)
            self.table.setItem(row, 1, value)
            self.table.setItem(row, 2, present)
        self.table.setSortingEnabled(True)
