"""The Settings dock, a magicgui panel: model folder, device, precision, generation; remembered."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtWidgets import QSizePolicy

from napari_radreport.engine.device import DEVICES, DTYPES
from napari_radreport.engine.events import Progress
from napari_radreport.user_settings import MIXED_PATIENTS_SWITCH
from napari_radreport.widgets.session import error_html, session_for

if TYPE_CHECKING:
    import napari

MAX_NEW_TOKENS = (1, 4096)
TEMPERATURE = (0.05, 2.0)
TOP_P = (0.05, 1.0)


def _within(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


class SettingsDock(Container):
    """Each change is written through ``session.update_settings`` (and so saved) as it is made."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        self.session = session = session_for(napari_viewer)
        s = session.settings
        folder = FileEdit(mode="d", nullable=True, value=s.model_folder or None, label="Model folder",
                          tooltip="A model folder on this machine; empty: the demo model")
        folder.choose_btn.text = "Browse…"
        folder.line_edit.native.setPlaceholderText("empty: the demo model")
        device = ComboBox(choices=DEVICES, value=s.device if s.device in DEVICES else DEVICES[0],
                          label="Device")
        dtype = ComboBox(choices=DTYPES, value=s.dtype if s.dtype in DTYPES else DTYPES[0], label="Precision",
                         tooltip="auto: bfloat16 on CUDA, float32 on the CPU")
        max_new = SpinBox(min=MAX_NEW_TOKENS[0], max=MAX_NEW_TOKENS[1], label="Max new tokens",
                          value=int(_within(s.max_new_tokens, MAX_NEW_TOKENS)))
        sample = CheckBox(text="Sample (otherwise greedy)", value=s.do_sample)
        temperature = FloatSpinBox(min=TEMPERATURE[0], max=TEMPERATURE[1], step=0.05, label="Temperature",
                                   value=_within(s.temperature, TEMPERATURE))
        top_p = FloatSpinBox(min=TOP_P[0], max=TOP_P[1], step=0.05, label="Top-p",
                             value=_within(s.top_p, TOP_P))
        out_of_scope = CheckBox(text="Allow studies outside the model's scope", value=s.allow_out_of_scope,
                                tooltip="Run a study the model was not made for (wrong body region, a real "
                                        "scan for a synthetic-only model); its outputs say so. Off: refused.")
        mixed = CheckBox(text=MIXED_PATIENTS_SWITCH, value=s.allow_mixed_patients,
                         tooltip="Open files whose PatientID, PatientName or birth date differ as one study "
                                 "(File > Open); its reports say MIXED PATIENTS and no DICOM SR is written. "
                                 "Off: refused (the Study dock asks).")
        form = Container()
        form.extend([folder, device, dtype, max_new, sample, temperature, top_p,  # aligned labels
                     out_of_scope, mixed])
        load = PushButton(text="Load model with these settings")
        progress = ProgressBar(min=0, max=100)
        status = Label(value="")
        super().__init__(widgets=[form, load, progress, status], labels=False)
        self.model_folder, self.device, self.dtype, self.max_new_tokens = folder, device, dtype, max_new
        self.do_sample, self.temperature, self.top_p = sample, temperature, top_p
        self.allow_out_of_scope, self.allow_mixed_patients = out_of_scope, mixed
        self.load_button, self.progress, self.status = load, progress, status
        progress.native.setVisible(False)
        status.native.setWordWrap(True)
        status.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)

        folder.changed.connect(self._folder_changed)
        folder.line_edit.native.editingFinished.connect(self._save_folder)
        device.changed.connect(lambda v: self._set(device=v))
        dtype.changed.connect(lambda v: self._set(dtype=v))
        max_new.changed.connect(lambda v: self._set(max_new_tokens=int(v)))
        sample.changed.connect(lambda v: self._set(do_sample=bool(v)))
        temperature.changed.connect(lambda v: self._set(temperature=float(v)))
        top_p.changed.connect(lambda v: self._set(top_p=float(v)))
        out_of_scope.changed.connect(lambda v: self._set(allow_out_of_scope=bool(v)))
        mixed.changed.connect(lambda v: self._set(allow_mixed_patients=bool(v)))
        sample.changed.connect(self._sampling_enabled)
        load.changed.connect(self.load)
        self._sampling_enabled(s.do_sample)
        session.busy_changed.connect(self._busy_changed)
        self.native.destroyed.connect(lambda *_: session.busy_changed.disconnect(self._busy_changed))
        self._busy_changed(session.busy)

    def _set(self, **changes: Any) -> None:
        self.session.update_settings(**changes)

    def _folder_changed(self, _value: Any) -> None:
        """Chosen in the dialog or set by code: saved now; typed: saved when the typing ends."""
        if not self.model_folder.line_edit.native.hasFocus():
            self._save_folder()

    def _save_folder(self) -> None:
        text = self.model_folder.line_edit.value.strip()
        if text != self.session.settings.model_folder:
            self._set(model_folder=text)

    def _sampling_enabled(self, on: bool) -> None:
        self.temperature.enabled = self.top_p.enabled = bool(on)

    def _busy_changed(self, busy: bool) -> None:
        self.load_button.enabled = not busy

    def _show(self, text: str, *, error: bool = False) -> None:
        self.status.value = error_html(text) if error else html.escape(text)

    def load(self, *_args: Any) -> None:
        """Load the model these settings name (what the Load button does)."""
        self._save_folder()
        self._show("Loading the model…")
        self.session.run(self, "load", on_events=self._on_events, on_result=self._loaded,
                         on_error=lambda text: self._show(text, error=True), progress=self.progress.native,
                         error_prefix="Could not load the model", **self.session.load_args())

    def _on_events(self, events: list[Any]) -> None:
        for event in events:
            if isinstance(event, Progress):
                self._show(event.message or event.stage)

    def _loaded(self, info) -> None:
        self._show("; ".join(info.warnings) or f"Loaded {info.name} ({info.device}, {info.dtype}).")

