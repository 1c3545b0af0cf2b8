"""The truth of a manifest record for grounding: where its findings are drawn, on its study's own grid.

``truth_from_record`` reads the record's ``masks`` through the project's readers (so a mask lies on exactly
the grid of ``Study.array``): a label map (``layout: "labels"``, the phantoms: one value per finding) or one
channel per report sentence (``layout: "channels"``, ReXGroundingCT), then the ``positions`` of findings no
mask draws (centres only). The grounding evaluation scores against it, the grounding head trains on it. No
Qt, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_radreport.consistency import finding_of_label
from napari_radreport.grounding.geometry import StudyGrid

# ReXGroundingCT's lung and pleura categories (the authors' schema, src/categorize.py of
# github.com/rajpurkarlab/ReXGroundingCT): the findings a sentence of the category may name, and the one it is
# when its text names none of them (None: the category mixes findings).
CATEGORY_FINDINGS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "1a": (("peribronchial thickening",), "peribronchial thickening"),
    "1b": (("bronchiectasis",), "bronchiectasis"), "1c": (("emphysema",), "emphysema"),
    "1d": (("septal thickening",), "septal thickening"), "2a": (("atelectasis", "fibrosis"), None),
    "2b": (("consolidation", "atelectasis"), None), "2c": (("opacity",), "opacity"),
    "2d": (("nodule",), "nodule"), "2e": (("pleural effusion",), None), "2f": (("fibrosis",), "fibrosis"),
    "2g": (("pneumothorax",), "pneumothorax"),
}

def finding_of_sentence(text: str, category: str = "") -> str | None:
    """The finding a truth sentence states present: the first one its words name (among those its category
    allows, when it has a known category), else the category's own."""
    from napari_radreport.consistency import FINDINGS, read_statements

    named = [s.finding for s in read_statements(text) if s.stance == "present"]
    allowed, default = CATEGORY_FINDINGS.get(category, (None, None))
    if allowed is not None:
        named = [name for name in named if name in allowed]
        if not named:
            return default if default in FINDINGS else None
    return named[0] if named else None



@dataclass
class TruthRegion:
    """Where one finding (or one sentence's finding) is: a mask on the study's grid, or only centres."""

    name: str  # the manifest's label name, or the sentence
    finding: str | None  # a key of consistency.FINDINGS
    mask: np.ndarray | None = field(default=None, repr=False)  # bool on the study's grid
    box: tuple[np.ndarray, np.ndarray] | None = None  # LPS mm, (min corner, max corner)
    centres: list[np.ndarray] = field(default_factory=list)  # LPS mm
    text: str = ""  # the sentence this region is the truth of ("" for a named finding)


@dataclass
class StudyTruth:
    """A study's grid, its truth regions, and the findings it has (mask or not)."""

    grid: StudyGrid
    regions: list[TruthRegion] = field(default_factory=list)
    present: frozenset[str] = frozenset()


def region_from_mask(grid: StudyGrid, name: str, finding: str | None, mask: np.ndarray,
                     text: str = "") -> TruthRegion | None:
    """A truth region of a bool mask (None when the mask is empty)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != grid.shape:
        raise ValueError(f"the mask of {name!r} has shape {mask.shape}, the study {grid.shape}")
    if not mask.any():
        return None
    return TruthRegion(name, finding, mask, grid.box(mask), text=text)


def _label_map(record, study, path) -> np.ndarray:
    """The record's label map read with ``load_study``, refused unless it lies on the volume's grid."""
    from napari_radreport.io import load_study

    image, labels = study.image, load_study(path).image
    same = (labels.array.shape == image.array.shape
            and np.allclose(labels.origin, image.origin, atol=1e-3)
            and np.allclose(labels.direction, image.direction, atol=1e-4)
            and np.allclose(labels.spacing, image.spacing, atol=1e-4))
    if not same:
        raise ValueError(f"record {record.id}: mask {path} is not on its image's grid (shape "
                         f"{labels.array.shape} vs {image.array.shape}, or another origin / axes)")
    return np.rint(labels.array).astype(np.int64)


def channel_reader(record, study, path):
    """A function giving channel ``c`` of a channels-layout mask as bool on the study's grid, its stored axes
    ``flips`` flipped first (None: the record's ``flip_axes``); the channel last read is kept, so reading it
    again under another flip reads no file."""
    from functools import lru_cache

    import nibabel

    from napari_radreport.io.geometry import Reorientation, reorient

    plan = study.extra.get("reorientation")
    if plan is None:
        raise ValueError(f"record {record.id}: a channels-layout mask needs a NIfTI volume")
    plan = Reorientation(tuple(plan["perm"]), tuple(plan["flip"]))
    stored = tuple(study.array.shape[plan.perm.index(axis)] for axis in range(3))
    proxy = nibabel.load(str(path)).dataobj
    if len(proxy.shape) != 4 or tuple(proxy.shape[1:]) != stored:
        raise ValueError(f"record {record.id}: mask {path} has shape {tuple(proxy.shape)}, expected "
                         f"(findings, {', '.join(map(str, stored))}) like its volume")
    own_flips = tuple(record.masks.get("flip_axes", ()))

    @lru_cache(maxsize=1)
    def stored_channel(index: int) -> np.ndarray:
        if not 0 <= index < proxy.shape[0]:
            raise ValueError(f"record {record.id}: mask {path} has no channel {index}")
        return np.asarray(proxy[index]) != 0

    def channel(index: int, flips: tuple[int, ...] | None = None) -> np.ndarray:
        data = stored_channel(index)
        flips = own_flips if flips is None else tuple(flips)
        if flips:
            data = np.flip(data, axis=flips)
        return np.ascontiguousarray(reorient(data, (1.0, 1.0, 1.0), np.zeros(3), np.eye(3), plan)[0])

    return channel


def _mask_regions(record, study, grid: StudyGrid) -> list[TruthRegion]:
    masks, path = record.masks, record.mask_path()
    if path is None:
        return []
    if not path.exists():
        raise ValueError(f"record {record.id}: mask file {path} does not exist")
    regions: list[TruthRegion | None] = []
    if masks.get("layout", "labels") == "channels":
        channel = channel_reader(record, study, path)
        pick = [(s, channel(s["channel"])) for s in masks.get("sentences", [])]
    else:
        values = _label_map(record, study, path)
        regions += [region_from_mask(grid, name, finding_of_label(name), values == value)
                    for name, value in masks.get("labels", {}).items()]
        pick = [(s, values == s["label"]) for s in masks.get("sentences", [])]
    regions += [region_from_mask(grid, s["text"], finding_of_sentence(s["text"], s.get("category", "")),
                                 mask, text=s["text"]) for s, mask in pick]
    return [r for r in regions if r is not None]


def truth_from_record(record, study) -> StudyTruth:
    """The truth of a manifest record on its study's grid: mask regions, then centre-only regions for the
    ``positions`` of findings no mask draws."""
    grid = StudyGrid.of(study)
    present = frozenset(f for label, value in record.labels.items() if value
                        for f in [finding_of_label(label)] if f is not None)
    regions = _mask_regions(record, study, grid)
    drawn = {r.finding for r in regions}
    for label, points in record.positions.items():
        finding = finding_of_label(label)
        centres = [np.asarray(p, float) for p in points]
        if finding not in drawn:
            regions += [TruthRegion(label, finding, centres=centres)] if centres else []
            continue
        for region in regions:  # a drawn finding keeps its centres beside its mask
            if region.finding == finding and not region.text:
                region.centres += centres
    return StudyTruth(grid, regions, present | {r.finding for r in regions if r.finding})
