"""The Settings dock: model folder, device, dtype, generation; remembered between sessions."""

from __future__ import annotations

from typing import TYPE_CHECKING

from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QWidget,
)

from napari_radreport.engine.device import DEVICES, DTYPES
from napari_radreport.widgets.session import session_for

if TYPE_CHECKING:
    import napari


class SettingsDock(QWidget):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.session = session = session_for(napari_viewer)
        s = session.settings
        self.model_folder = QLineEdit(s.model_folder)
        self.model_folder.setPlaceholderText("empty: the demo model shipped with napari-radreport")
        self.model_folder.editingFinished.connect(lambda: self._set(model_folder=self.model_folder.text().strip()))
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.model_folder, 1)
        folder_row.addWidget(browse)
        self.device = QComboBox()
        self.device.addItems(list(DEVICES))
        self.device.setCurrentText(s.device)
        self.device.currentTextChanged.connect(lambda v: self._set(device=v))
        self.dtype = QComboBox()
        self.dtype.addItems(list(DTYPES))
        self.dtype.setCurrentText(s.dtype)
        self.dtype.setToolTip("auto: bfloat16 on CUDA, float32 on the CPU")
        self.dtype.currentTextChanged.connect(lambda v: self._set(dtype=v))
        self.max_new_tokens = QSpinBox()
        self.max_new_tokens.setRange(1, 4096)
        self.max_new_tokens.setValue(s.max_new_tokens)
        self.max_new_tokens.valueChanged.connect(lambda v: self._set(max_new_tokens=int(v)))
        self.do_sample = QCheckBox("Sample (otherwise greedy)")
        self.do_sample.setChecked(s.do_sample)
        self.do_sample.toggled.connect(lambda v: self._set(do_sample=bool(v)))
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.05, 2.0)
        self.temperature.setSingleStep(0.05)
        self.temperature.setValue(s.temperature)
        self.temperature.valueChanged.connect(lambda v: self._set(temperature=float(v)))
        self.top_p = QDoubleSpinBox()
        self.top_p.setRange(0.05, 1.0)
        self.top_p.setSingleStep(0.05)
        self.top_p.setValue(s.top_p)
        self.top_p.valueChanged.connect(lambda v: self._set(top_p=float(v)))
        self.load_button = QPushButton("Load model with these settings")
        self.load_button.clicked.connect(self._load)
        session.busy_changed.connect(self._busy_changed)

        form = QFormLayout(self)
        form.addRow("Model folder", folder_row)
        form.addRow("Device", self.device)
        form.addRow("Precision", self.dtype)
        form.addRow("Max new tokens", self.max_new_tokens)
        form.addRow("", self.do_sample)
        form.addRow("Temperature", self.temperature)
        form.addRow("Top-p", self.top_p)
        form.addRow(self.load_button)
        self._sampling_enabled(s.do_sample)
        self.do_sample.toggled.connect(self._sampling_enabled)

    def _busy_changed(self, busy: bool) -> None:
        self.load_button.setEnabled(not busy)

    def _set(self, **changes) -> None:
        self.session.update_settings(**changes)

    def _sampling_enabled(self, on: bool) -> None:
        self.temperature.setEnabled(on)
        self.top_p.setEnabled(on)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder")
        if folder:
            self.model_folder.setText(folder)
            self._set(model_folder=folder)

    def _load(self) -> None:
        from napari_radreport.engine.engine import EngineBusy

        try:
            self.session.start("settings", "load", **self.session.load_args())
        except EngineBusy as exc:
            self.session.message.emit(str(exc))
