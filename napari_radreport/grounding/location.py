"""What a grounding method gives for one sentence, and the sentence it belongs to.

A ``Location`` is in patient coordinates (LPS, mm: the frame of ``ImageData.index_to_patient``): a peak
point and an axis-aligned box. A method that works on the model's input grid also keeps its mask and heatmap
there (small), with the ``ModelGrid`` that puts them on the study's own voxel grid when asked (``mask``,
``heatmap``: what napari shows and the grounding evaluation scores). A radiograph has no patient space: its
location is in the pixels of one radiograph of the set (``image_index``; the peak in ``peak_index`` and the
box's first and last pixel in ``box_pixel``, each (row, column)), its grid a ``radiographs.ViewGrid``.
``as_dict`` gives the JSON the report export carries; arrays never go into it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_radreport.grounding.geometry import ModelGrid

if TYPE_CHECKING:
    from napari_radreport.grounding.radiographs import ViewGrid


@dataclass
class Location:
    method: str  # how it was found: "attribution", "m3d-segmentation", "m3d-box", ...
    peak_lps_mm: tuple[float, ...] | None  # None on a radiograph
    box_lps_mm: tuple[tuple[float, ...], tuple[float, ...]] | None  # (min corner, max corner)
    peak_index: tuple[float, ...] | None = None  # the peak in the study's (radiograph's) array order
    grid: ModelGrid | ViewGrid | None = field(default=None, repr=False)
    model_mask: np.ndarray | None = field(default=None, repr=False)  # bool on the model's grid
    model_heatmap: np.ndarray | None = field(default=None, repr=False)  # float32 in [0, 1], model's grid
    image_index: int | None = None  # a radiograph's location: which image of the set
    box_pixel: tuple[tuple[float, float], tuple[float, float]] | None = None  # its first and last pixel

    @property
    def on_radiograph(self) -> bool:
        return self.image_index is not None

    @property
    def mask(self) -> np.ndarray | None:
        """Bool on the study's grid (computed on each call), or None."""
        if self.grid is None or self.model_mask is None:
            return None
        return self.grid.to_study(self.model_mask.astype(np.float32)) >= 0.5

    @property
    def heatmap(self) -> np.ndarray | None:
        """Float32 in [0, 1] on the study's grid (computed on each call), or None."""
        if self.grid is None or self.model_heatmap is None:
            return None
        return self.grid.to_study(self.model_heatmap)

    def as_dict(self) -> dict[str, Any]:
        if self.on_radiograph:
            return {"method": self.method, "image_index": int(self.image_index),
                    "peak_pixel_rc": [round(float(v), 1) for v in self.peak_index],
                    "box_pixel_rc": [[round(float(v), 1) for v in corner] for corner in self.box_pixel]}
        return {"method": self.method, "peak_lps_mm": [round(float(v), 2) for v in self.peak_lps_mm],
                "box_lps_mm": [[round(float(v), 2) for v in corner] for corner in self.box_lps_mm]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Location:
        if "image_index" in data:
            first, last = data["box_pixel_rc"]
            return cls(str(data["method"]), None, None, tuple(float(v) for v in data["peak_pixel_rc"]),
                       image_index=int(data["image_index"]),
                       box_pixel=(tuple(float(v) for v in first), tuple(float(v) for v in last)))
        low, high = data["box_lps_mm"]
        return cls(str(data["method"]), tuple(float(v) for v in data["peak_lps_mm"]),
                   (tuple(float(v) for v in low), tuple(float(v) for v in high)))


def peak_words(location: dict[str, Any]) -> str:
    """Where a location's peak is, in words: "LPS (x, y, z) mm" or "row R, column C of radiograph K"."""
    if "image_index" in location:
        row, column = location["peak_pixel_rc"]
        return f"row {row:.0f}, column {column:.0f} of radiograph {int(location['image_index']) + 1}"
    return f"LPS ({', '.join(f'{v:.1f}' for v in location['peak_lps_mm'])}) mm"


@dataclass
class GroundedSentence:
    """One sentence of a report or an answer: its section, its span in the text it came from, the finding it
    states (a key of ``consistency.FINDINGS``; None when it states none present), and where that is."""

    section: str  # "findings", "impression", "answer" or "" (text before any heading)
    text: str
    start: int
    end: int
    finding: str | None = None
    location: Location | None = None
    why_none: str = ""  # why a sentence stating a finding has no location ("" when it has one or needs none)

    @property
    def mask(self) -> np.ndarray | None:
        return self.location.mask if self.location is not None else None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"section": self.section, "text": self.text, "finding": self.finding,
                                "location": self.location.as_dict() if self.location else None}
        if self.why_none:
            data["why_none"] = self.why_none
        return data
