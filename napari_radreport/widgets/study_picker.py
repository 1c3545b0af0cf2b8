"""A combo box of the studies open in the viewer, bound to the session's current study."""

from __future__ import annotations

from qtpy.QtWidgets import QComboBox

from napari_radreport.widgets.session import ViewerSession


class StudyPicker(QComboBox):
    def __init__(self, session: ViewerSession):
        super().__init__()
        self.session = session
        self.setToolTip("The study the model reads (one of the studies open in the viewer)")
        self._studies: list = []
        session.studies_changed.connect(self._refill)
        session.study_changed.connect(self._show_current)
        self.currentIndexChanged.connect(self._chosen)
        self._refill()

    def _refill(self) -> None:
        self.blockSignals(True)
        self.clear()
        self._studies = [study for _, study in self.session.studies()]
        for name, _study in self.session.studies():
            self.addItem(name)
        self.blockSignals(False)
        self._show_current(self.session.study)

    def _show_current(self, study) -> None:
        index = next((i for i, s in enumerate(self._studies) if s is study), -1)
        self.blockSignals(True)
        self.setCurrentIndex(index)
        self.blockSignals(False)

    def _chosen(self, index: int) -> None:
        if 0 <= index < len(self._studies):
            self.session.set_study(self._studies[index])
