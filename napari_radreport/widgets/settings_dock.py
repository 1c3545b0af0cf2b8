"""The Settings dock, a magicgui panel: a models folder and the models found in it, the model folder, device,
precision, generation; remembered.

The models folder is scanned on a thread (``modeling.catalog``: config.json and safetensors headers only, but
a transformers family's check imports transformers); the list shows each model's family, size, what it reads
and the memory its weights take, and choosing one loads it.
"""

from __future__ import annotations

import contextlib
import html
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)
from qtpy.QtWidgets import QComboBox, QSizePolicy

from napari_radreport.engine.device import DEVICES, DTYPES
from napari_radreport.engine.events import Progress
from napari_radreport.modeling.quantize import LABELS as WEIGHT_LABELS
from napari_radreport.modeling.quantize import QUANTIZATIONS
from napari_radreport.user_settings import MIXED_PATIENTS_SWITCH
from napari_radreport.widgets.session import error_html, session_for

if TYPE_CHECKING:
    import napari

MAX_NEW_TOKENS = (1, 4096)
TEMPERATURE = (0.05, 2.0)
TOP_P = (0.05, 1.0)
# the Weights choice: (shown, the setting's value)
WEIGHT_CHOICES = [(WEIGHT_LABELS[q].capitalize(), q) for q in QUANTIZATIONS]


DEMO_CHOICE = ("Demo model (synthetic phantoms only)", "")


def _within(value: float, bounds: tuple[float, float]) -> float:
    return min(max(value, bounds[0]), bounds[1])


def model_choices(entries) -> list[tuple[str, str]]:
    """(label, folder) for each model folder found: what it reads, its size and its weights in bfloat16 (the
    family and every precision are in the list's tooltip); the demo model first, folders that cannot be read
    left out (their line shows in the tooltip too)."""
    from napari_radreport.modeling.catalog import human_bytes, human_count

    choices = [DEMO_CHOICE]
    for entry in entries:
        if entry.problem:
            continue
        reads = "/".join(m.upper() if m == "ct" else "radiographs" for m in entry.scope.modalities)
        where = f" {', '.join(entry.scope.body_regions)}" if entry.scope.body_regions else ""
        memory = human_bytes(entry.weight_bytes("bfloat16"))
        choices.append((f"{entry.name} ({reads}{where}, {human_count(entry.parameters)}, {memory} bf16)",
                        str(entry.path)))
    return choices


class SettingsDock(Container):
    """Each change is written through ``session.update_settings`` (and so saved) as it is made."""

    def __init__(self, napari_viewer: napari.Viewer) -> None:
        self.session = session = session_for(napari_viewer)
        s = session.settings
        models = FileEdit(mode="d", nullable=True, value=s.models_folder or None, label="Models folder",
                          tooltip="A folder of model folders: the models found there are listed below")
        models.choose_btn.text = "Browse…"
        models.line_edit.native.setPlaceholderText("a folder of model folders")
        choice = ComboBox(choices=[DEMO_CHOICE], label="Model",
                          tooltip="The models in the models folder (family, size, what each reads, weight "
                                  "memory); choosing one loads it")
        folder = FileEdit(mode="d", nullable=True, value=s.model_folder or None, label="Model folder",
                          tooltip="A model folder on this machine; empty: the demo model")
        folder.choose_btn.text = "Browse…"
        folder.line_edit.native.setPlaceholderText("empty: the demo model")
        device = ComboBox(choices=DEVICES, value=s.device if s.device in DEVICES else DEVICES[0],
                          label="Device")
        dtype = ComboBox(choices=DTYPES, value=s.dtype if s.dtype in DTYPES else DTYPES[0], label="Precision",
                         tooltip="auto: bfloat16 on CUDA, float32 on the CPU")
        weights = ComboBox(choices=WEIGHT_CHOICES, label="Weights",
                           value=s.quantization if s.quantization in QUANTIZATIONS else "none",
                           tooltip="8-bit or 4-bit weights take about 1/4 or 1/8 of float32's memory (a "
                                   "7-8 B model fits 16 GB); the text can differ a little from full "
                                   "precision's. Each report records its choice.")
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
        reviewer = LineEdit(value=s.reviewer_name, label="Reviewer",
                            tooltip="Your name as a signed-off report carries it (PDF, DICOM SR verifying "
                                    "observer); asked the first time you tick Reviewed when empty")
        form.extend([models, choice, folder, device, dtype, weights, max_new, sample, temperature,  # aligned
                     top_p, reviewer])
        choice.native.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        choice.native.setMinimumContentsLength(16)  # a long name must not widen the dock
        load = PushButton(text="Load model with these settings")
        progress = ProgressBar(min=0, max=100)
        status = Label(value="")
        reset_layout = PushButton(text="Reset the reading layout")
        reset_layout.tooltip = "Put every dock back where it starts: the report on the right, the study, " \
                               "findings and chat on the left"
        reset_layout.changed.connect(lambda: self._reset_layout(napari_viewer))
        # the two switches under the form: their long texts fit the dock's width without a label column
        super().__init__(widgets=[form, out_of_scope, mixed, load, progress, status, reset_layout],
                         labels=False)
        self.models_folder, self.model_choice = models, choice
        self.model_folder, self.device, self.dtype, self.max_new_tokens = folder, device, dtype, max_new
        self.weights = weights
        self.do_sample, self.temperature, self.top_p = sample, temperature, top_p
        self.allow_out_of_scope, self.allow_mixed_patients = out_of_scope, mixed
        self.load_button, self.progress, self.status = load, progress, status
        progress.native.setVisible(False)
        status.native.setWordWrap(True)
        status.native.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)

        self._scanning = ""  # the folder whose scan is running
        models.changed.connect(self._models_folder_changed)
        models.line_edit.native.editingFinished.connect(self._save_models_folder)
        choice.changed.connect(self._model_chosen)
        folder.changed.connect(self._folder_changed)
        folder.line_edit.native.editingFinished.connect(self._save_folder)
        device.changed.connect(lambda v: self._set(device=v))
        dtype.changed.connect(lambda v: self._set(dtype=v))
        weights.changed.connect(lambda v: self._set(quantization=v))
        max_new.changed.connect(lambda v: self._set(max_new_tokens=int(v)))
        sample.changed.connect(lambda v: self._set(do_sample=bool(v)))
        temperature.changed.connect(lambda v: self._set(temperature=float(v)))
        top_p.changed.connect(lambda v: self._set(top_p=float(v)))
        out_of_scope.changed.connect(lambda v: self._set(allow_out_of_scope=bool(v)))
        mixed.changed.connect(lambda v: self._set(allow_mixed_patients=bool(v)))
        reviewer.native.editingFinished.connect(lambda: self._set(reviewer_name=reviewer.value.strip()))
        self.reviewer = reviewer
        sample.changed.connect(self._sampling_enabled)
        load.changed.connect(self.load)
        self._sampling_enabled(s.do_sample)
        session.busy_changed.connect(self._busy_changed)
        session.settings_changed.connect(self._show_reviewer)  # a name given when ticking Reviewed
        self.native.destroyed.connect(self._disconnect)
        self._busy_changed(session.busy)
        if s.models_folder:
            self.scan(s.models_folder)

    def _disconnect(self, *_args: Any) -> None:
        """The dock is gone: the session stops calling it, and a scan still running is dropped."""
        self._scanning = ""
        with contextlib.suppress(TypeError, RuntimeError):  # already disconnected, or the session is gone
            self.session.busy_changed.disconnect(self._busy_changed)
        with contextlib.suppress(TypeError, RuntimeError):
            self.session.settings_changed.disconnect(self._show_reviewer)

    def _show_reviewer(self, settings: Any) -> None:
        if self.reviewer.value != settings.reviewer_name:
            self.reviewer.value = settings.reviewer_name

    @staticmethod
    def _reset_layout(viewer: napari.Viewer) -> None:
        from napari_radreport.widgets.layout import reset

        reset(viewer)

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

    # -- the models folder and its models --------------------------------------------------------------
    def _models_folder_changed(self, _value: Any) -> None:
        if not self.models_folder.line_edit.native.hasFocus():
            self._save_models_folder()

    def _save_models_folder(self) -> None:
        text = self.models_folder.line_edit.value.strip()
        if text != self.session.settings.models_folder:
            self._set(models_folder=text)
        if text:
            self.scan(text)

    def scan(self, folder: str) -> None:
        """List the models in ``folder`` (on a thread; ``_scanned`` fills the list)."""
        from napari_radreport.modeling.catalog import find_models

        self._scanning = folder
        self._show(f"Looking for models in {folder}…")

        def run() -> Any:  # the entries, or the error's line
            try:
                return find_models(folder)
            except (OSError, ValueError) as exc:
                return str(exc)

        self.session.off_thread(run, lambda found: self._scanned(folder, found))

    def _scanned(self, folder: str, found: Any) -> None:
        if folder != self._scanning:  # a later scan was asked for
            return
        if isinstance(found, str):
            self._show(found, error=True)
            return
        from napari_radreport.modeling.catalog import describe_line

        choices = model_choices(found)
        current = self.session.settings.model_folder
        with self.model_choice.changed.blocked():
            self.model_choice.choices = choices
            if current in [value for _, value in choices]:
                self.model_choice.value = current
        self.model_choice.tooltip = "\n".join(describe_line(e) for e in found) or "no model folders here"
        unreadable = [e for e in found if e.problem]
        found_text = f"{len(choices) - 1} model folder{'s' * (len(choices) != 2)} in {folder}"
        self._show(found_text + (f"; {len(unreadable)} could not be read (see the list's tooltip)"
                                 if unreadable else ""))

    def _model_chosen(self, value: str) -> None:
        """A model chosen in the list: it becomes the model folder and loads."""
        with self.model_folder.changed.blocked():
            self.model_folder.value = value or None
        self._set(model_folder=value or "")
        if not self.session.busy:
            self.load()

    def _sampling_enabled(self, on: bool) -> None:
        self.temperature.enabled = self.top_p.enabled = bool(on)

    def _busy_changed(self, busy: bool) -> None:
        self.load_button.enabled = not busy

    def _show(self, text: str, *, error: bool = False) -> None:
        self.status.value = error_html(text) if error else html.escape(text, quote=False)

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
        self._show("; ".join(info.warnings) or f"Loaded {info.name} ({info.device}, {info.precision}).")

