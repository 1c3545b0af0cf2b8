"""What a model was made for (its config's ``scope`` section), and whether a study is within it.

A recipe declares the modalities and body regions its model reads, what it was trained on, whether that data
was synthetic, and its intended use::

    "scope": {"modalities": ["ct"], "body_regions": ["chest"], "synthetic_only": true,
              "training_data": "synthetic chest CT phantoms (radreport phantoms)",
              "intended_use": "trying the plugin on a CPU; not for clinical use"}

``ModelScope.parse`` checks the section once, when the model loads (a bad field stops the load, naming it).
``scope_verdict`` compares a study with it before a task runs: the study's kind against the modalities, the
regions it covers (``io.body_region``: header, else image) against the body regions, and, for a model trained
only on synthetic data, whether the study is one of the project's synthetic phantoms. A model without the
section has an undeclared scope: only its modality is checked, and the verdict says the rest is unknown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from napari_radreport.io.body_region import BODY_REGIONS, body_regions

MODALITIES = ("ct", "xray")
# The description the project's synthetic phantoms carry in their NIfTI header (``descrip``, which io/nifti.py
# reads into ``Study.extra["description"]``): what a synthetic-only model may read.
SYNTHETIC_PHANTOM = "napari-radreport synthetic phantom"
_FIELDS = ("modalities", "body_regions", "synthetic_only", "training_data", "intended_use")


@dataclass(frozen=True)
class ModelScope:
    modalities: tuple[str, ...]  # "ct" (volumes), "xray" (radiograph sets)
    body_regions: tuple[str, ...] = ()  # empty: any region
    synthetic_only: bool = False  # trained on synthetic data only: meaningless on real scans
    training_data: str = ""
    intended_use: str = ""
    declared: bool = True  # False: the config has no scope section

    @classmethod
    def parse(cls, section: dict | None, modality: str) -> ModelScope:
        """The scope in a config's ``scope`` dict, for a model reading ``modality``; a ValueError names a bad
        field."""
        if not section:
            return cls(modalities=(modality,), declared=False)
        unknown = sorted(set(section) - set(_FIELDS))
        if unknown:
            raise ValueError(f"scope has unknown field(s) {', '.join(unknown)}; known: {', '.join(_FIELDS)}")
        modalities = tuple(section.get("modalities") or (modality,))
        regions = tuple(section.get("body_regions") or ())
        for name, values, allowed in (("modalities", modalities, MODALITIES),
                                      ("body_regions", regions, BODY_REGIONS)):
            wrong = [v for v in values if v not in allowed]
            if wrong:
                raise ValueError(f"scope.{name} has {', '.join(map(repr, wrong))}; use {', '.join(allowed)}")
        return cls(modalities=modalities, body_regions=regions,
                   synthetic_only=bool(section.get("synthetic_only")),
                   training_data=str(section.get("training_data", "")),
                   intended_use=str(section.get("intended_use", "")))

    def describe(self) -> str:
        """One line: what the model reads and what it learned from."""
        reads = "/".join(m.upper() if m == "ct" else "radiographs" for m in self.modalities)
        where = f" of the {', '.join(self.body_regions)}" if self.body_regions else ""
        data = f"; trained on {self.training_data}" if self.training_data else ""
        return f"{reads}{where}{data}" if self.declared else f"{reads} (scope not declared by the model)"


@dataclass(frozen=True)
class ScopeVerdict:
    """Whether a study is within a model's scope, and why not (or what could not be checked)."""

    in_scope: bool
    reasons: list[str] = field(default_factory=list)  # why it is out of scope, or what could not be checked
    model_data: str = ""  # ModelScope.describe()
    study_regions: list[str] = field(default_factory=list)
    region_source: str = ""  # "header", "image", "modality" or "none"
    readable: bool = True  # False: the model cannot read this kind of study at all (no override helps)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def warning(self) -> str:
        """One line for a dock's banner or stderr ("" when in scope with nothing to say)."""
        if self.in_scope and not self.reasons:
            return ""
        head = "Out of this model's scope" if not self.in_scope else "Scope not fully checked"
        return f"{head}: {'; '.join(self.reasons)}."


def study_modality(study) -> str:
    """"ct" for a CT volume, "xray" for a radiograph set, else the study's kind (mr, pt, volume...)."""
    return "xray" if study.kind == "xray_set" else ("ct" if study.kind == "ct" else study.kind)


def modality_mismatch(scope: ModelScope, study) -> str:
    """Why a model of ``scope`` cannot read ``study`` at all (its kind is not one of the model's
    modalities); "" when it can. No override runs such a study."""
    kind = study_modality(study)
    if kind in scope.modalities:
        return ""
    reads = " or ".join("CT volumes" if m == "ct" else "chest radiographs" for m in scope.modalities)
    shown = "radiographs" if kind == "xray" else f"a {kind}"
    return f"the model reads {reads}; this study is {shown}"


def scope_verdict(scope: ModelScope, study) -> ScopeVerdict:
    """The verdict for ``study`` under ``scope``: out of scope for any definite mismatch; in scope, with
    notes, where something could not be checked (see the module docstring)."""
    against, notes = [], []
    unreadable = modality_mismatch(scope, study)
    if unreadable:
        against.append(unreadable)
    found = body_regions(study)
    if scope.body_regions and not found.regions:
        notes.append(f"the body region could not be told ({found.evidence}); the model was made for the "
                     f"{', '.join(scope.body_regions)}")
    elif scope.body_regions and not set(found.regions) & set(scope.body_regions):
        against.append(f"the model was made for the {', '.join(scope.body_regions)}; this study shows the "
                       f"{', '.join(found.regions)} (from its {found.source})")
    if scope.synthetic_only and study.extra.get("description") != SYNTHETIC_PHANTOM:
        against.append("the model was trained only on synthetic phantoms, so what it writes about a real "
                       "scan is meaningless")
    if not scope.declared and not against:
        notes.append("the model declares no scope beyond its modality")
    return ScopeVerdict(in_scope=not against, reasons=against + notes, model_data=scope.describe(),
                        study_regions=list(found.regions), region_source=found.source,
                        readable=not unreadable)
