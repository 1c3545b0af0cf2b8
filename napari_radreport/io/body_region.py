"""Which body regions a study covers: named by its DICOM header, or read from the CT image itself.

A model made for chest CT must know when it is shown a head or an abdomen. The header is read first (Body Part
Examined, protocol name, study and series descriptions: words such as "CHEST", "THORAX", "ABD", "PELVIS",
"HEAD"). Where it names no region, the CT volume is sampled every 10 mm along the body axis and each axial
slice is classed by what lies inside the body outline (the largest connected region above -500 HU, its holes
filled):

* chest: air-filled lung (-960..-600 HU) is at least 15 % of the outline's area;
* head: a small outline (under 300 cm^2) mostly of brain density (0..80 HU) inside bone (above 300 HU);
* abdomen or pelvis: a larger outline (300 cm^2 or more) with under 5 % lung. Below a chest, such slices
  within 25 cm of the lowest lung slice are abdomen and lower ones pelvis; without a chest in the scan the
  image cannot tell the two apart and gives both.

A region counts when at least 3 sampled slices (3 cm) show it. Radiographs are chest radiographs unless the
header says otherwise. Measured on the real CTs of ``../shared/data`` and the synthetic phantoms
(docs/inputs.md). Limits: no head CT was at hand, so the head rule is untested on a real scan; a chest CT that
stops above the lungs, or lungs filled with fluid, are not seen as chest by the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

BODY_REGIONS = ("head", "chest", "abdomen", "pelvis")
# Header words (upper case, whole words) -> regions; "CAP" and "TAP" are chest-abdomen-pelvis protocols.
_WORDS = {
    "head": ("HEAD", "BRAIN", "SKULL", "CRANIAL", "CRANIUM", "NEURO", "SINUS", "SINUSES", "ORBIT", "ORBITS",
             "CEREBRAL", "NEUROCRANIUM"),
    "chest": ("CHEST", "THORAX", "THORACIC", "THX", "LUNG", "LUNGS", "PULMONARY", "CTPA", "THORAKS", "TORAX"),
    "abdomen": ("ABDOMEN", "ABDOMINAL", "ABD", "ABDO", "LIVER", "KIDNEY", "KIDNEYS", "RENAL", "PANCREAS"),
    "pelvis": ("PELVIS", "PELVIC", "BECKEN", "HIP", "HIPS", "BLADDER", "PROSTATE"),
}
_ALL_TRUNK = ("CAP", "TAP", "TRUNK", "WHOLEBODY", "WB")
MIN_SLICES = 3
SAMPLE_MM = 10.0
ABDOMEN_MM = 250.0  # below the lowest lung slice, abdomen; further down, pelvis


@dataclass(frozen=True)
class BodyRegions:
    """The regions a study covers, where that came from ("header" or "image") and the evidence in words."""

    regions: tuple[str, ...]  # in BODY_REGIONS order; empty when neither source tells
    source: str
    evidence: str


def regions_from_text(*texts: str) -> tuple[str, ...]:
    """The regions header texts name ("CT CHEST W/O" -> chest; "CT ABD PELVIS" -> abdomen, pelvis)."""
    text = " ".join(t for t in texts if t).upper().replace("WHOLE BODY", "WHOLEBODY")
    words = set(re.findall(r"[A-Z]+", text))
    found = {region for region, names in _WORDS.items() if words & set(names)}
    if words & set(_ALL_TRUNK):
        found |= {"chest", "abdomen", "pelvis"}
    return tuple(r for r in BODY_REGIONS if r in found)


def classify_slice(hu: np.ndarray, pixel_area_cm2: float) -> str | None:
    """"head", "chest", "abdomen-pelvis" or None for one axial slice in HU (see the module docstring)."""
    from scipy import ndimage

    solid = hu > -500
    labels, count = ndimage.label(solid)
    if count == 0:
        return None
    sizes = ndimage.sum(solid, labels, range(1, count + 1))
    body = labels == 1 + int(np.argmax(sizes))
    outline = ndimage.binary_fill_holes(body)
    area = outline.sum() * pixel_area_cm2
    if area < 20:
        return None
    lung = (outline & (hu > -960) & (hu < -600)).sum() * pixel_area_cm2 / area
    if lung >= 0.15:
        return "chest"
    bone = (body & (hu > 300)).sum() * pixel_area_cm2 / area
    brain = (body & (hu > 0) & (hu < 80)).sum() * pixel_area_cm2 / area
    if area < 300 and brain >= 0.4 and bone >= 0.08:
        return "head"
    if area >= 300 and lung < 0.05:
        return "abdomen-pelvis"
    return None


def regions_from_image(study) -> tuple[tuple[str, ...], dict[str, int]]:
    """(regions, sampled slices per region) read from a CT volume's voxels; ((), {}) without its geometry."""
    image = study.image
    if image.direction is None or None in image.spacing or np.asarray(image.array).ndim != 3:
        return (), {}
    axis = int(np.argmax(np.abs(np.asarray(image.direction)[:, 2])))  # the grid axis nearest the body axis
    volume = np.moveaxis(np.asarray(image.array), axis, 0)
    in_plane = [float(s) for i, s in enumerate(image.spacing) if i != axis]
    step = max(1, int(round(4.0 / min(in_plane))))  # about 4 mm pixels are enough to find the outline
    pixel_area_cm2 = in_plane[0] * in_plane[1] * step * step / 100.0
    every = max(1, int(round(SAMPLE_MM / float(image.spacing[axis]))))
    classed = []  # (height in mm along the body axis, class)
    for index in range(0, volume.shape[0], every):
        kind = classify_slice(np.asarray(volume[index, ::step, ::step], dtype=np.float32), pixel_area_cm2)
        if kind is not None:
            position = [0, 0, 0]
            position[axis] = index
            classed.append((float(image.index_to_patient(position)[2]), kind))
    lung_floor = min((z for z, kind in classed if kind == "chest"), default=None)
    counts: dict[str, int] = {}
    for z, kind in classed:
        if kind != "abdomen-pelvis":
            names = [kind]
        elif lung_floor is None:
            names = ["abdomen", "pelvis"]  # no chest to measure from: not told apart
        else:
            names = ["abdomen" if z >= lung_floor - ABDOMEN_MM else "pelvis"]
        for name in names:
            counts[name] = counts.get(name, 0) + 1
    return tuple(r for r in BODY_REGIONS if counts.get(r, 0) >= MIN_SLICES), counts


def body_regions(study) -> BodyRegions:
    """What the header names, else what the CT image shows, else nothing (radiographs: chest unless named).

    Found once per study and kept in ``study.extra`` (as ``Study.key`` keeps its key): every task on the study
    checks its scope, and the image is not sampled again for each."""
    found = study.extra.get("body_regions")
    if found is None:
        found = study.extra["body_regions"] = _find_body_regions(study)
    return found


def _find_body_regions(study) -> BodyRegions:
    texts = [getattr(study.tags, name, "") for name in ("body_part", "protocol_name", "study_description",
                                                        "series_description")]
    named = regions_from_text(*texts)
    if named:
        return BodyRegions(named, "header", "header: " + "; ".join(t for t in texts if t))
    if study.kind == "xray_set":
        return BodyRegions(("chest",), "modality", "radiographs whose header names no region: read as chest")
    if not study.is_volume or study.modality not in ("CT", ""):
        return BodyRegions((), "none", f"a {study.kind} ({study.modality or 'no modality'}) names no region")
    regions, counts = regions_from_image(study)
    slices = ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "none classed"
    return BodyRegions(regions, "image", f"image, slices sampled every {SAMPLE_MM:g} mm: {slices}")
