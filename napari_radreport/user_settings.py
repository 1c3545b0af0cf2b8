"""The user's choices (model, device, generation), remembered between sessions in a small JSON file.

napari 0.9 has no settings store for plugin-defined fields, so the file lives in the user's config folder
(``paths.settings_file``: platformdirs, or where ``RADREPORT_CONFIG`` points). An unreadable file falls back
to the defaults.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from napari_radreport.common import write_atomic
from napari_radreport.paths import settings_file

# The Settings dock's switch for ``allow_mixed_patients``; the napari reader's refusal names it.
MIXED_PATIENTS_SWITCH = "Open files from different patients as one study"


@dataclass
class UserSettings:
    model_folder: str = ""  # empty: the demo model shipped with the package
    models_folder: str = ""  # where the Settings dock looks for model folders to choose from
    device: str = "auto"
    dtype: str = "auto"
    quantization: str = "none"  # weight-only "int8" / "int4" (modeling/quantize.py)
    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    drafts_folder: str = ""  # empty: the default drafts folder
    notice_acknowledged: bool = False
    allow_out_of_scope: bool = False  # run studies a model was not made for (outputs say so)
    allow_mixed_patients: bool = False  # open files of several patients as one study (reports say so)
    reading_layout: str = ""  # the docks' arrangement when the window last closed (``widgets.layout``)
    reviewer_name: str = ""  # who signs drafts off; asked the first time a draft is marked reviewed

    def generation(self):
        from napari_radreport.engine.decoding import GenerationSettings

        return GenerationSettings(max_new_tokens=self.max_new_tokens, do_sample=self.do_sample,
                                  temperature=self.temperature, top_p=self.top_p)

    @classmethod
    def load(cls, path: Path | None = None) -> UserSettings:
        path = path or settings_file()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        known = {f.name: f.type for f in fields(cls)}
        defaults = cls()
        values = {}
        for name, value in data.items() if isinstance(data, dict) else []:
            if name in known and type(value) is type(getattr(defaults, name)):
                values[name] = value
        return cls(**values)

    def save(self, path: Path | None = None) -> None:
        path = path or settings_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(asdict(self), indent=1).encode("utf-8"))
