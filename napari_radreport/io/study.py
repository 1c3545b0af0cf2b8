"""The Study: pixel data with its geometry and identifying tags. No Qt, no torch.

Conventions (see docs/conventions.md):

* Patient coordinates are DICOM's LPS, in mm: +x patient left, +y posterior, +z superior.
* Arrays are in napari axis order. For volumes the last three axes are spatial and are
  reoriented to run superior->inferior, anterior->posterior, patient right->left, so an
  axial slice shows anterior up and the patient's left on screen right (radiological view).
* ``origin`` is the LPS position of the centre of the first voxel; ``direction[i]`` is the
  LPS unit vector along spatial axis ``i``; ``spacing[i]`` is in mm (``None`` when unknown).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from napari_radreport.io.geometry import orientation_codes

StudyKind = str  # "ct", "xray_set", "mr", "pt", "volume" (unknown modality), "image" (other 2D)
VOLUME_KINDS = ("ct", "mr", "pt", "volume")


def kind_for_modality(modality: str) -> StudyKind:
    """Study kind of a volume from its DICOM modality code ("volume" when not CT, MR or PET)."""
    return {"CT": "ct", "MR": "mr", "PT": "pt"}.get(modality.upper(), "volume")


class StudyReadError(Exception):
    """An input could not be opened; the message is one line naming the file and the reason."""


class MixedPatients(StudyReadError):
    """The files of one study come from more than one patient (docs/inputs.md, One patient).

    ``load_study(..., allow_mixed_patients=True)`` opens them anyway. ``differs`` names the tags that differ
    (PatientID, PatientName, PatientBirthDate), ``patients`` counts the patients, ``files`` are the files."""

    def __init__(self, message: str, *, differs: tuple[str, ...] = (), patients: int = 0,
                 files: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.differs, self.patients, self.files = differs, patients, files

    def with_hint(self, hint: str) -> MixedPatients:
        """The same refusal with how to open the files anyway appended (each front end has its own way)."""
        return MixedPatients(f"{self}; {hint}", differs=self.differs, patients=self.patients,
                             files=self.files)


_CHUNK_ELEMENTS = 1 << 24  # value scans go through big volumes in blocks of this many elements


def _blocks(array: np.ndarray):
    """``array`` in slabs along its first axis, so that a scan's temporaries stay small."""
    if array.ndim == 0:
        yield array.reshape(1)
        return
    step = max(1, _CHUNK_ELEMENTS // max(1, array[0].size))
    for start in range(0, array.shape[0], step):
        yield array[start:start + step]


def count_nonfinite(array: np.ndarray) -> int:
    """How many values are NaN or infinite (0 for integer arrays; one min/max pass when there are none)."""
    if array.dtype.kind not in "fc" or array.size == 0:
        return 0
    if np.isfinite(np.min(array)) and np.isfinite(np.max(array)):
        return 0
    return int(sum(block.size - np.count_nonzero(np.isfinite(block)) for block in _blocks(array)))


def finite_range(array: np.ndarray) -> tuple[float, float] | None:
    """(min, max) over the finite values; None when there is none."""
    if array.size == 0:
        return None
    lo, hi = float(np.min(array)), float(np.max(array))
    if np.isfinite(lo) and np.isfinite(hi):
        return lo, hi
    ranges = [(float(f.min()), float(f.max())) for f in (b[np.isfinite(b)] for b in _blocks(array)) if f.size]
    return (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None


def nonfinite_warning(array: np.ndarray, what: str, unit: str = "voxels") -> str | None:
    """A warning counting the NaN/inf values of a float array; StudyReadError when no value is finite."""
    bad = count_nonfinite(array)
    if not bad:
        return None
    if bad == array.size:
        raise StudyReadError(f"{what}: all {array.size:,} {unit} are NaN or infinite; nothing to show")
    share = 100 * bad / array.size
    return (f"{bad:,} of {array.size:,} {unit} ({f'{share:.2f}%' if share >= 0.01 else 'under 0.01%'}) "
            "are NaN or infinite (no value): kept as they are, left out of the value range and contrast")


@dataclass(frozen=True)
class StudyTags:
    """Identifying tags, kept apart from the pixel data (may be empty for anonymised data)."""

    patient_id: str = ""
    patient_name: str = ""  # as a reader shows it ("DOE, JOHN"): ``identity.display_name``
    study_uid: str = ""
    series_uid: str = ""
    frame_of_reference_uid: str = ""
    study_date: str = ""
    series_date: str = ""
    acquisition_date: str = ""
    accession_number: str = ""
    study_description: str = ""
    series_description: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class ImageData:
    """One image grid: a volume, or one radiograph of a set."""

    array: np.ndarray
    spacing: tuple[float | None, ...]
    modality: str
    tags: StudyTags = field(default_factory=StudyTags)
    origin: tuple[float, ...] | None = None
    direction: np.ndarray | None = None
    label: str = ""
    view_position: str | None = None
    source_files: tuple[str, ...] = ()
    # Display window from the file (centre, width) after any inversion; None when absent.
    file_window: tuple[float, float] | None = None
    _value_range: tuple[float, float] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def spatial_ndim(self) -> int:
        return len(self.spacing)

    @property
    def orientation(self) -> tuple[str, ...] | None:
        """Letters of the direction each spatial axis increases toward (e.g. I, P, L)."""
        return None if self.direction is None else orientation_codes(self.direction)

    def index_to_patient(self, index: Any) -> np.ndarray:
        """LPS position in mm of a (continuous) spatial index given in array order."""
        if self.direction is None or self.origin is None or None in self.spacing:
            raise ValueError(f"{self.label}: no patient geometry (radiograph or unknown spacing)")
        idx = np.asarray(index, dtype=float)
        steps = idx * np.asarray(self.spacing, dtype=float)
        return np.asarray(self.origin, dtype=float) + steps @ self.direction

    def patient_to_index(self, position: Any) -> np.ndarray:
        """The (continuous) spatial index in array order of an LPS position in mm; inverse of
        index_to_patient."""
        if self.direction is None or self.origin is None or None in self.spacing:
            raise ValueError(f"{self.label}: no patient geometry (radiograph or unknown spacing)")
        offset = np.asarray(position, dtype=float) - np.asarray(self.origin, dtype=float)
        return (np.linalg.solve(np.asarray(self.direction, dtype=float).T, offset)
                / np.asarray(self.spacing, dtype=float))

    def value_range(self) -> tuple[float, float]:
        """(min, max) of the finite values, computed once (the dock and the summary ask for it repeatedly)."""
        if self._value_range is None:
            self._value_range = finite_range(self.array) or (0.0, 0.0)
        return self._value_range


@dataclass
class SeriesInfo:
    """One series found in the input, for listing and for choosing another."""

    index: int
    uid: str
    description: str
    modality: str
    n_images: int
    shape: tuple[int, ...]
    role: str  # "volume", "localizer", "radiograph", "other"
    chosen: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Study:
    """What a reader produced: one volume, or a set of radiographs, plus notes about it."""

    kind: StudyKind
    images: list[ImageData]
    source: tuple[str, ...] = ()
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    series: list[SeriesInfo] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    # -- the single-volume view used by most callers -------------------------------------
    @property
    def image(self) -> ImageData:
        if len(self.images) != 1:
            raise ValueError(f"this study has {len(self.images)} images; use .images")
        return self.images[0]

    @property
    def array(self) -> np.ndarray:
        return self.image.array

    @property
    def spacing(self) -> tuple[float | None, ...]:
        return self.image.spacing

    @property
    def origin(self) -> tuple[float, ...] | None:
        return self.image.origin

    @property
    def direction(self) -> np.ndarray | None:
        return self.image.direction

    @property
    def modality(self) -> str:
        return self.images[0].modality if self.images else ""

    @property
    def tags(self) -> StudyTags:
        return self.images[0].tags if self.images else StudyTags()

    @property
    def is_volume(self) -> bool:
        return self.kind in VOLUME_KINDS

    @property
    def key(self) -> str:
        """A stable key for caches and drafts: series UIDs and sources (object identity
        when neither exists)."""
        key = self.extra.get("cache_key")
        if key is None:
            import hashlib

            identity = [*(im.tags.series_uid for im in self.images),
                        *map(str, self.extra.get("input", self.source))]
            parts = [self.kind, *identity, *(str(im.array.shape) for im in self.images)]
            key = (hashlib.sha1("|".join(parts).encode()).hexdigest()[:16] if any(identity)
                   else f"object-{id(self)}")
            self.extra["cache_key"] = key
        return key

    @property
    def mixed_patients(self) -> int:
        """How many patients the files come from when more than one (opened as the user allowed), else 0."""
        count = len(self.extra.get("patients") or [])
        return count if count > 1 else 0

    @property
    def chosen_series(self) -> SeriesInfo | None:
        return next((s for s in self.series if s.chosen), None)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready description (what `radreport info --json` prints)."""
        from napari_radreport.io.summary import study_summary

        return study_summary(self)

    def to_layer_data(self) -> list[tuple[Any, dict[str, Any], str]]:
        """napari layer data tuples (scale, translate and units in mm; metadata holds the Study)."""
        from napari_radreport.io.layers import study_to_layer_data

        return study_to_layer_data(self)
