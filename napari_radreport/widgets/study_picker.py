"""The active study at the top of every dock: one line that says whose study it is (patient name and ID,
date, series, modality), and a list of the studies open in the viewer to choose another; bound to the
session's active study."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox

from napari_radreport.io.identity import identity_line
from napari_radreport.widgets.session import ViewerSession

STUDY_OBJECT_NAME = "radreport-study"
NO_STUDY = "No study open"


class StudyPicker(QComboBox):
    def __init__(self, session: ViewerSession):
        super().__init__()
        self.session = session
        self.setObjectName(STUDY_OBJECT_NAME)
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(16)  # a long identity must not widen the dock; the tooltip has it all
        self._studies: list = []
        session.studies_changed.connect(self._refill)
        session.study_changed.connect(self._show_current)
        self.currentIndexChanged.connect(self._chosen)
        self._refill()

    def _refill(self) -> None:
        self.blockSignals(True)
        self.clear()
        found = self.session.studies()
        self._studies = [study for _, study in found]
        for name, study in found:
            self.addItem(identity_line(study, name), name)
        if not found:
            self.addItem(NO_STUDY)
        self.blockSignals(False)
        self._show_current(self.session.study)

    def _show_current(self, study) -> None:
        index = next((i for i, s in enumerate(self._studies) if s is study), -1)
        self.blockSignals(True)
        self.setCurrentIndex(index if self._studies else 0)
        self.blockSignals(False)
        text = self.itemText(index) if index >= 0 else NO_STUDY
        layer = f"\nLayer: {self.itemData(index)}" if index >= 0 else ""
        self.setToolTip(f"The active study: {text}{layer}\nWhat the model reads and every dock shows; "
                        "selecting a study's layer in the layer list chooses it too.")

    def _chosen(self, index: int) -> None:
        if 0 <= index < len(self._studies):
            self.session.set_study(self._studies[index])
