"""CT display windows (level/width in HU) and the default contrast for each kind of study."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Window:
    name: str
    label: str
    level: float
    width: float

    @property
    def limits(self) -> tuple[float, float]:
        return (self.level - self.width / 2, self.level + self.width / 2)


# Common clinical presets (level/width in HU).
CT_WINDOWS: dict[str, Window] = {
    w.name: w
    for w in (
        Window("lung", "Lung", -600, 1500),
        Window("mediastinum", "Mediastinum", 50, 350),
        Window("soft_tissue", "Soft tissue", 40, 400),
        Window("abdomen", "Abdomen", 60, 400),
        Window("bone", "Bone", 400, 1800),
        Window("brain", "Brain", 40, 80),
    )
}
DEFAULT_CT_WINDOW = "soft_tissue"


def default_contrast_limits(kind: str, array: np.ndarray, file_window: tuple[float, float] | None = None):
    """Contrast limits on open: the soft-tissue window for CT, else the file's window or percentiles."""
    if kind == "ct":
        return CT_WINDOWS[DEFAULT_CT_WINDOW].limits
    if file_window is not None:
        centre, width = file_window
        return (centre - width / 2, centre + width / 2)
    if array.size == 0:
        return (0.0, 1.0)
    step = max(1, array.size // 1_000_000)
    sample = array.reshape(-1)[::step]
    if sample.dtype.kind == "f":  # NaN/inf voxels (warned about when read) do not set the contrast
        sample = sample[np.isfinite(sample)]
        if sample.size == 0:
            return (0.0, 1.0)
    lo, hi = np.percentile(sample, [0.5, 99.5])
    return (float(lo), float(hi if hi > lo else lo + 1))
