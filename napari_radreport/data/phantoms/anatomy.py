"""Seeded chest CT-like phantoms in HU: body, lungs, heart, aorta, spine, ribs, and the findings drawn into
them.

The array is in the project's canonical display order (axis 0 superior -> inferior, 1 anterior -> posterior,
2 patient right -> left; docs/conventions.md). Distances are in mm. A phantom is a caricature, not anatomy:
it exists so that a model trained on it must read the image to name the findings.

Beside the volume, ``Phantom.labels`` records where each regional finding was drawn (``MASK_LABELS``: one
integer per finding, pleural effusion per side): a voxel carries the label of the finding painted there last,
0 where anatomy was painted over it, so the mask is exactly the finding's visible voxels. Keeping it draws no
random number, so a phantom's volume is the same with or without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from napari_radreport.grounding.geometry import box_corners

SHAPE = (40, 80, 80)  # voxels (z, y, x)
SPACING = (6.0, 4.2, 4.2)  # mm -> 240 x 336 x 336 mm
HU = {"air": -1000.0, "fat": -100.0, "soft": 40.0, "lung": -860.0, "emphysema": -950.0, "blood": 150.0,
      "myocardium": 50.0, "fluid": 8.0, "bone": 450.0, "cortex": 800.0, "nodule": 30.0,
      "consolidation": -40.0}
LOBES = {"right": ("upper", "middle", "lower"), "left": ("upper", "lower")}
NODULE_SIZES_MM = (8, 10, 12, 15, 18, 22, 26, 30)
# Label map values of the findings drawn as regions (cardiomegaly and emphysema are not regions).
MASK_LABELS = {"Lung nodule": 1, "Consolidation": 2, "Pleural effusion (right)": 3,
               "Pleural effusion (left)": 4, "Pericardial effusion": 5}


@dataclass
class Findings:
    """What a phantom shows; ``None`` means absent."""

    nodule: tuple[str, str, int] | None = None  # (side, lobe, diameter mm)
    effusion: str | None = None  # "right", "left" or "bilateral"
    cardiomegaly: bool = False
    emphysema: bool = False
    consolidation: tuple[str, str] | None = None  # (side, lobe)
    pericardial_effusion: bool = False
    extras: dict = field(default_factory=dict)


def sample_findings(rng: np.random.Generator, prevalence: float = 0.35) -> Findings:
    """Independent findings, each present with probability ``prevalence``."""
    def present() -> bool:
        return bool(rng.random() < prevalence)

    def lobe() -> tuple[str, str]:
        side = str(rng.choice(("right", "left")))
        return side, str(rng.choice(LOBES[side]))

    nodule = (*lobe(), int(rng.choice(NODULE_SIZES_MM))) if present() else None
    effusion = str(rng.choice(("right", "left", "bilateral"))) if present() else None
    consolidation = lobe() if present() else None
    return Findings(nodule=nodule, effusion=effusion, cardiomegaly=present(), emphysema=present(),
                    consolidation=consolidation, pericardial_effusion=present())


def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel-centre coordinates in mm, centred on the volume (z grows inferior, y posterior, x to the
    left)."""
    axes = [(np.arange(n) - (n - 1) / 2) * s for n, s in zip(SHAPE, SPACING)]
    return np.meshgrid(*axes, indexing="ij")


def _ellipsoid(z, y, x, centre, radii) -> np.ndarray:
    return (((z - centre[0]) / radii[0]) ** 2 + ((y - centre[1]) / radii[1]) ** 2
            + ((x - centre[2]) / radii[2]) ** 2)


def lobe_of(side: str, z_fraction, y_mm, y_centre: float) -> np.ndarray:
    """The lobe at lung positions: ``z_fraction`` 0 at the apex, 1 at the base; anterior is y < y_centre."""
    z_fraction, anterior = np.asarray(z_fraction), np.asarray(y_mm) < y_centre
    if side == "right":
        return np.where(z_fraction < 0.4, "upper",
                        np.where(anterior & (z_fraction < 0.75), "middle", "lower"))
    return np.where((z_fraction < 0.5) | (anterior & (z_fraction < 0.7)), "upper", "lower")


class Phantom:
    """One phantom volume built from ``Findings`` with seeded anatomical variation."""

    def __init__(self, findings: Findings, rng: np.random.Generator):
        self.findings, self.rng = findings, rng
        self.z, self.y, self.x = _grid()
        self.volume = np.full(SHAPE, HU["air"], dtype=np.float32)
        self.labels = np.zeros(SHAPE, dtype=np.uint8)  # MASK_LABELS value of the finding drawn at each voxel

        def jitter(scale: float) -> float:
            return float(rng.normal(0, scale))

        self.body_radii = (150.0 + jitter(8), 110.0 + jitter(6))  # x, y half-axes
        self.lung_top, self.lung_bottom = -105.0 + jitter(5), 85.0 + jitter(5)
        self.lung_centres = {"right": -70.0 + jitter(3), "left": 70.0 + jitter(3)}
        self.lung_y, self.lung_ry, self.lung_rx = 5.0 + jitter(3), 80.0 + jitter(3), 55.0 + jitter(3)
        scale = 1.4 if findings.cardiomegaly else 1.0
        self.heart_centre = (35.0 + jitter(4), -30.0 + jitter(3), 15.0 + jitter(3))
        self.heart_radii = tuple(r * scale * (1 + jitter(0.03)) for r in (40.0, 38.0, 45.0))

    def lung_mask(self, side: str) -> np.ndarray:
        zc, rz = (self.lung_top + self.lung_bottom) / 2, (self.lung_bottom - self.lung_top) / 2
        shape = _ellipsoid(self.z, self.y, self.x, (zc, self.lung_y, self.lung_centres[side]),
                           (rz, self.lung_ry, self.lung_rx)) <= 1
        return shape & (self.z > self.lung_top + 5)

    def paint(self, where: np.ndarray, hu: float, label: int = 0) -> None:
        """Set ``where`` to ``hu`` and record what is drawn there (0: anatomy, else a ``MASK_LABELS``
        value)."""
        self.volume[where] = hu
        self.labels[where] = label

    def build(self) -> np.ndarray:
        f, (z, y, x) = self.findings, (self.z, self.y, self.x)
        ax, ay = self.body_radii
        body = (x / ax) ** 2 + (y / ay) ** 2
        self.paint(body <= 1, HU["fat"])
        self.paint(body <= 0.85, HU["soft"])
        self._ribs(body)
        heart = _ellipsoid(z, y, x, self.heart_centre, self.heart_radii)
        lungs = {side: self.lung_mask(side) & (heart > 1.25) for side in ("right", "left")}
        for mask in lungs.values():
            self.paint(mask, HU["emphysema"] if f.emphysema else HU["lung"])
        if f.emphysema:  # scattered bullae, upper-zone predominant
            holes = (self.rng.random(SHAPE) < 0.08) & (z < 0)
            self.paint(holes & (lungs["right"] | lungs["left"]), HU["air"] + 10)
        if f.pericardial_effusion:
            self.paint(heart <= 1.45, HU["fluid"], MASK_LABELS["Pericardial effusion"])
        self.paint(heart <= 1.0, HU["myocardium"])
        self.paint(heart <= 0.55, HU["blood"])
        aorta = (x - 25.0) ** 2 + (y - 55.0) ** 2 <= 12.0 ** 2
        self.paint(aorta & (body <= 0.85), HU["blood"])
        spine = x ** 2 + (y - 85.0) ** 2
        self.paint(spine <= 20.0 ** 2, HU["cortex"])
        self.paint(spine <= 16.0 ** 2, HU["bone"])
        fluid = np.zeros(SHAPE, dtype=bool)
        if f.effusion:
            for side in (("right", "left") if f.effusion == "bilateral" else (f.effusion,)):
                level = self.lung_y + self.lung_ry * float(self.rng.uniform(0.15, 0.45))
                side_fluid = lungs[side] & (y > level) & (z > 0)
                self.paint(side_fluid, HU["fluid"], MASK_LABELS[f"Pleural effusion ({side})"])
                fluid |= side_fluid
        aerated = {side: mask & ~fluid for side, mask in lungs.items()}  # blobs stay apart from the fluid
        if f.consolidation:
            opacity = self._consolidation(aerated, *f.consolidation)
            aerated = {side: mask & ~opacity for side, mask in aerated.items()}
        if f.nodule:
            side, lobe, size = f.nodule
            self._blob(aerated, side, lobe, radius=size / 2, hu=HU["nodule"], name="nodule")
        self.volume += self.rng.normal(0, 15, SHAPE).astype(np.float32)
        return np.clip(self.volume, -1024, 3071)

    def _ribs(self, body: np.ndarray) -> None:
        chest = (self.z > self.lung_top) & (self.z < self.lung_bottom)
        ring = (body <= 0.83) & (body > 0.72)
        period = 24.0
        rib_rows = np.mod(self.z - self.lung_top, period) < 7.0
        self.paint(chest & ring & rib_rows, HU["bone"])

    def _consolidation(self, lungs: dict[str, np.ndarray], side: str, lobe: str) -> np.ndarray:
        """Lobar airspace opacity: the part of ``lobe`` inside a large ellipsoid (so it stops at the fissures
        and the pleura, unlike a round nodule), crossed by air bronchograms that run out from its centre."""
        height = self.lung_bottom - self.lung_top
        in_lobe = lungs[side] & (
            lobe_of(side, (self.z - self.lung_top) / height, self.y, self.lung_y) == lobe)
        if not in_lobe.any():
            in_lobe = lungs[side]
        centre = np.argwhere(in_lobe)[self.rng.integers(int(in_lobe.sum()))]
        c = (self.z[tuple(centre)], self.y[tuple(centre)], self.x[tuple(centre)])
        radii = tuple(float(r) for r in self.rng.uniform(35, 55, size=3))
        opacity = in_lobe & (_ellipsoid(self.z, self.y, self.x, c, radii) <= 1)
        label = MASK_LABELS["Consolidation"]  # the air bronchograms inside belong to it
        self.paint(opacity, HU["consolidation"], label)
        offsets = (self.z - c[0], self.y - c[1], self.x - c[2])
        for _ in range(3):  # each bronchogram: a 3 mm-radius air tube along a half-line from the centre
            direction = self.rng.normal(size=3)
            direction /= np.linalg.norm(direction)
            along = sum(o * d for o, d in zip(offsets, direction))
            across_sq = sum(o * o for o in offsets) - along ** 2
            self.paint(opacity & (along > 0) & (across_sq <= 3.0 ** 2), HU["air"] + 100, label)
        self.findings.extras.setdefault("centres_mm", {})["consolidation"] = [float(v) for v in c]
        return opacity

    def _blob(self, lungs: dict[str, np.ndarray], side: str, lobe: str, radius: float, hu: float,
              name: str) -> None:
        """A sphere of ``radius`` mm centred inside ``lobe`` of the ``side`` lung (kept inside the lung); its
        centre goes to ``findings.extras["centres_mm"][name]``."""
        mask = lungs[side]
        height = self.lung_bottom - self.lung_top
        inner = mask.copy()
        erode_vox = [max(1, round(radius / s)) for s in SPACING]
        for axis, n in enumerate(erode_vox):  # a crude erosion so the centre leaves room for the blob
            for shift in (n, -n):
                inner &= np.roll(mask, shift, axis=axis)
        zf = (self.z - self.lung_top) / height
        candidates = np.argwhere(inner)
        if len(candidates) == 0:
            candidates = np.argwhere(mask)
        ok = lobe_of(side, zf[tuple(candidates.T)], self.y[tuple(candidates.T)], self.lung_y) == lobe
        if ok.any():
            candidates = candidates[ok]
        centre = candidates[self.rng.integers(len(candidates))]
        c = (self.z[tuple(centre)], self.y[tuple(centre)], self.x[tuple(centre)])
        sphere = _ellipsoid(self.z, self.y, self.x, c, (radius, radius, radius)) <= 1
        self.paint(sphere & mask, hu, MASK_LABELS["Lung nodule"] if name == "nodule" else 0)
        self.findings.extras.setdefault("centres_mm", {})[name] = [float(v) for v in c]


def phantom_volume(findings: Findings, rng: np.random.Generator) -> np.ndarray:
    """(z, y, x) float32 HU volume of ``SHAPE`` at ``SPACING`` showing ``findings``."""
    return Phantom(findings, rng).build()


def phantom_volume_and_labels(findings: Findings, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The volume of ``phantom_volume`` (the same for the same generator) and its uint8 label map
    (``MASK_LABELS``) on the same grid."""
    phantom = Phantom(findings, rng)
    return phantom.build(), phantom.labels


def index_to_patient(index) -> np.ndarray:
    """LPS position in mm of (continuous) array indices (..., 3) in the frame of ``nifti_affine``'s file."""
    index = np.asarray(index, dtype=float)
    ras = index @ nifti_affine()[:3, :3].T + nifti_affine()[:3, 3]
    return ras * np.array([-1.0, -1.0, 1.0])


def label_boxes(labels: np.ndarray) -> dict[str, list[list[float]]]:
    """Each drawn finding's box in LPS mm, [min corner, max corner], to its voxels' outer faces (half a voxel
    beyond the outermost voxel centres)."""
    boxes = {}
    for name, value in MASK_LABELS.items():
        where = np.argwhere(labels == value)
        if len(where) == 0:
            continue
        points = index_to_patient(box_corners(where.min(axis=0) - 0.5, where.max(axis=0) + 0.5))
        boxes[name] = [[float(v) for v in points.min(axis=0)], [float(v) for v in points.max(axis=0)]]
    return boxes


def patient_position(centre_mm) -> list[float]:
    """LPS position in mm of a point given in phantom coordinates (z, y, x from the volume centre, as
    ``_grid``), in the frame of the NIfTI file that ``nifti_affine`` describes."""
    index = np.asarray(centre_mm, dtype=float) / np.asarray(SPACING) + (np.asarray(SHAPE) - 1) / 2
    ras = nifti_affine() @ np.array([*index, 1.0])
    return [float(-ras[0]), float(-ras[1]), float(ras[2])]


def nifti_affine() -> np.ndarray:
    """RAS affine that reads back in the canonical order: axis 0 inferior, 1 posterior, 2 to the patient's
    left."""
    affine = np.zeros((4, 4))
    affine[0, 2] = -SPACING[2]  # voxel axis 2 -> -R (patient left)
    affine[1, 1] = -SPACING[1]  # voxel axis 1 -> -A (posterior)
    affine[2, 0] = -SPACING[0]  # voxel axis 0 -> -S (inferior)
    affine[3, 3] = 1.0
    return affine
