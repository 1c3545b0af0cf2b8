"""Which way a channels-layout mask lies on its volume: the HU under the masks of dense findings, for each
way the stored mask axes could be flipped.

Whether ReXGroundingCT's released masks carry the flip of the first two axes that the authors' upload script
applied to the volumes it sent for annotation was not established (``data/adapters/rexgroundingct.py``). A
nodule, a consolidation, atelectasis or a pleural effusion is denser than aerated lung: under a mask that lies
where it was drawn, few voxels are air. A flipped mask lands on aerated lung, soft tissue or the air around
the patient. ``check_mask_orientation`` reads a few records' dense-category masks under each candidate flip
and reports the median HU and the fraction of voxels below ``AERATED_HU``; the candidate with the least
aerated voxels under its masks is the likely orientation. No torch, no Qt.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

# ReXGroundingCT categories whose findings are denser than aerated lung (the authors' schema, data/truth.py
# CATEGORY_FINDINGS): atelectasis / fibrosis, consolidation / atelectasis, nodule, pleural effusion
DENSE_CATEGORIES = ("2a", "2b", "2d", "2e")
CANDIDATE_FLIPS: tuple[tuple[int, ...], ...] = ((), (0,), (1,), (0, 1))
# below this a voxel is aerated lung or air, not a dense finding (ground glass, about -700 to -300 HU, is in
# category 2c, not read)
AERATED_HU = -700.0
CLEAR_MARGIN = 2.0  # the best candidate's aerated fraction is this many times below every other's: clear


@dataclass
class OrientationFigures:
    """What lies under the dense-category masks of the checked records when their stored axes are flipped by
    ``flip_axes``."""

    flip_axes: tuple[int, ...]
    voxels: int
    median_hu: float
    aerated_fraction: float


@dataclass
class MaskCheck:
    records: int  # records read
    masks: int  # dense-category masks read (each under every candidate)
    figures: list[OrientationFigures]
    current: tuple[int, ...]  # the records' own flip_axes (the first record's; they are written for all)

    @property
    def best(self) -> OrientationFigures | None:
        scored = [f for f in self.figures if f.voxels]
        return min(scored, key=lambda f: f.aerated_fraction) if scored else None

    @property
    def clear(self) -> bool:
        """The best candidate has at most 1 / CLEAR_MARGIN of every other's aerated fraction."""
        best = self.best
        if best is None:
            return False
        others = [f.aerated_fraction for f in self.figures if f is not best and f.voxels]
        return bool(others) and all(best.aerated_fraction * CLEAR_MARGIN <= a for a in others)

    def verdict(self) -> str:
        """One line: which flip the masks need, or why that cannot be said."""
        best = self.best
        if best is None:
            return "no dense-finding mask was read: nothing to say about the orientation"
        name = f"flip_axes {list(best.flip_axes)}" if best.flip_axes else "no flip"
        share = f"{best.aerated_fraction:.1%} of the voxels under the masks aerated"
        if not self.clear:
            return (f"not clear: {name} has the fewest ({share}), but not {CLEAR_MARGIN:g}x fewer than "
                    "another candidate; check more records")
        if best.flip_axes == self.current:
            return f"the manifest's orientation ({name}) is the likely one: {share}"
        as_is = next(f.aerated_fraction for f in self.figures if f.flip_axes == self.current)
        flags = " ".join(map(str, best.flip_axes))
        fix = f"--mask-flip-axes {flags}" if flags else "no --mask-flip-axes"
        return (f"the masks likely need {name} ({share}, against {as_is:.1%} as the manifest has them): "
                f"convert again with {fix}")


def check_mask_orientation(records: Iterable, limit: int = 20) -> MaskCheck:
    """Read up to ``limit`` channels-layout records that have dense-category masks and report, for each of
    ``CANDIDATE_FLIPS``, the HU under those masks."""
    from napari_radreport.data.studies import read_record_study
    from napari_radreport.data.truth import channel_reader

    values: dict[tuple[int, ...], list[np.ndarray]] = {flips: [] for flips in CANDIDATE_FLIPS}
    read = masks = 0
    current: tuple[int, ...] = ()
    for record in records:
        spec = record.masks or {}
        dense = [s for s in spec.get("sentences", []) if s.get("category") in DENSE_CATEGORIES]
        if spec.get("layout") != "channels" or not dense or record.mask_path() is None:
            continue
        if read == 0:
            current = tuple(spec.get("flip_axes", ()))
            values.setdefault(current, [])  # an unusual flip the manifest has is weighed too
        study = read_record_study(record)
        channel = channel_reader(record, study, record.mask_path())
        for sentence in dense:
            for flips, under in values.items():
                under.append(study.array[channel(sentence["channel"], flips)])
        read += 1
        masks += len(dense)
        if read >= limit:
            break
    figures = []
    for flips, parts in values.items():
        under = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        figures.append(OrientationFigures(flips, int(under.size),
                                          float(np.median(under)) if under.size else float("nan"),
                                          float(np.mean(under < AERATED_HU)) if under.size else float("nan")))
    return MaskCheck(read, masks, figures, current)
