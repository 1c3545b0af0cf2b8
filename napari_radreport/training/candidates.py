"""Candidate-patch pretraining of the 3-D ViT's conv stem (``--stage candidates``).

A small finding (a lung nodule of 8-30 mm) fills a few voxels of one patch; trained on image-level labels
alone the encoder does not find it (docs/training.md, the demo model). Here the stem learns it from balanced
local examples, as candidate classifiers in nodule detection do: a positive is a patch around a
finding's centre (the manifest's ``positions``, mapped into the preprocessed volume), a negative a patch at
the same kind of place (a centre taken from a positive study) in a study whose label says it is absent.

The stem's 3x3x3 convolutions and its detector (a 1x1 convolution) give a response map. A negative's logit
is the map's maximum over the whole patch (nothing in it may respond); a positive's is the maximum within one
voxel of the finding's centre, so the response has to rise on the finding itself (with the whole-patch
maximum the training often stuck at the prior: the gradient reached only whichever voxel, a rib edge say,
responded most).
Over a whole volume the maximum response scores the study. The stem is kept (``stem.safetensors``); in the
encoder each patch gets its detector's highest probability (modeling/vit3d.py). A labels or report run starts
from it with ``--encoder``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from napari_radreport.data.label_scores import label_scores
from napari_radreport.data.manifest import ManifestError, ManifestRecord


def candidate_names(configured: list[str], records: list[ManifestRecord]) -> list[str]:
    """The labels to learn: ``configured``, else every label some training record gives positions for."""
    names = list(configured) or sorted({name for r in records for name in r.positions})
    if not names:
        raise ManifestError("--stage candidates: no training record gives 'positions' for any finding")
    for name in names:
        positives = sum(1 for r in records if r.labels.get(name) == 1 and r.positions.get(name))
        negatives = sum(1 for r in records if r.labels.get(name) == 0)
        if not positives or not negatives:
            raise ManifestError(f"--stage candidates: label {name!r} needs training records with positions "
                                f"where it is 1 and records where it is 0 (found {positives} and "
                                f"{negatives})")
    return names


class StudyCandidates(torch.utils.data.Dataset):
    """``dataset[i]`` -> one patch of record ``i`` for one of ``names`` and whether that finding is in it.

    A record where the label is 1 gives a patch around one of its positions; one where it is 0 a patch at a
    position of a positive record, in pixel indices (the preprocessed volumes share a grid), so position
    does not tell the classes apart. The pick and the jitter come from a generator seeded by (seed, epoch,
    index), so a resumed run sees the same patches.
    """

    def __init__(self, records: list[ManifestRecord], images, names: list[str], to_index,
                 patch: list[int], jitter: list[int], seed: int = 0):
        self.records, self.images, self.names, self.seed, self.epoch = records, images, names, seed, 0
        self.patch, self.jitter = np.asarray(patch, dtype=int), np.asarray(jitter, dtype=int)
        if (self.patch.shape != (3,) or self.jitter.shape != (3,) or (self.patch < 1).any()
                or (self.jitter < 0).any()):
            raise ValueError(f"candidate_patch must be 3 positive sizes and candidate_jitter 3 sizes >= 0, "
                             f"got {patch} and {jitter}")
        self.items: list[tuple[int, int, list[np.ndarray]]] = []  # (record index, label index, its centres)
        for i, record in enumerate(records):
            for j, name in enumerate(names):
                value = record.labels.get(name)
                if value == 1 and record.positions.get(name):
                    centres = [to_index(i, p) for p in record.positions[name]]
                    self.items.append((i, j, centres))
                elif value == 0:
                    self.items.append((i, j, []))
        self.pool = {j: [c for _, k, cs in self.items if k == j for c in cs] for j in range(len(names))}
        if not self.items or not all(self.pool.values()):
            raise ManifestError("--stage candidates: the records give no usable positive and negative "
                                "studies")

    def __len__(self) -> int:
        return len(self.items)

    def patch_at(self, pixels: torch.Tensor, centre: np.ndarray,
                 rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray]:
        """The (C, *patch) crop around ``centre`` moved by up to the jitter, kept inside the volume, and
        where ``centre`` lies in it (voxel indices; outside the patch when the crop stopped at the border)."""
        shape = np.asarray(pixels.shape[-3:])
        if (shape < self.patch).any():
            raise ValueError(f"candidate_patch {self.patch.tolist()} is larger than the volume "
                             f"{shape.tolist()}")
        moved = np.rint(centre).astype(int) + rng.integers(-self.jitter, self.jitter + 1)
        lo = np.clip(moved - self.patch // 2, 0, shape - self.patch)
        hi = lo + self.patch
        return pixels[0, :, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], np.rint(centre).astype(int) - lo

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, index])
        record, label, centres = self.items[index]
        pool = centres or self.pool[label]
        patch, where = self.patch_at(self.images[record], pool[int(rng.integers(len(pool)))], rng)
        return {"pixel_values": patch[None], "label_index": torch.tensor([label]),
                "target": torch.tensor([float(bool(centres))]), "where": torch.from_numpy(where)[None]}


def collate_candidates(items: list[dict]) -> dict[str, torch.Tensor]:
    keys = ("pixel_values", "label_index", "target", "where")
    return {key: torch.cat([item[key] for item in items]) for key in keys}


class CandidateDetector(nn.Module):
    """The recipe's conv stem with its detectors: (B, C, D, H, W) -> (B, labels), the maximum response."""

    def __init__(self, vision_config, num_labels: int):
        super().__init__()
        from napari_radreport.modeling.vit3d import ConvStem

        if not vision_config.conv_stem_channels or vision_config.conv_stem_detectors != num_labels:
            raise ValueError(f"--stage candidates trains the ViT's conv stem and its detectors: the recipe's "
                             f"vision config needs conv_stem_channels and conv_stem_detectors={num_labels} "
                             f"(one per candidate label), has {vision_config.conv_stem_channels} and "
                             f"{vision_config.conv_stem_detectors}")
        self.stem = ConvStem(vision_config.in_channels, vision_config.conv_stem_channels, num_labels)

    def response(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, labels, D, H, W) logit map."""
        return self.stem.response(self.stem.layers(pixel_values))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.response(pixel_values).flatten(2).amax(-1)


class CandidateObjective(nn.Module):
    """Binary cross-entropy of each patch's logit for its label: the maximum response within ``radius``
    voxels of ``where`` for a positive, over the whole patch for a negative."""

    def __init__(self, detector: CandidateDetector, radius: int = 1):
        super().__init__()
        self.model, self.radius = detector, radius

    def forward(self, pixel_values, label_index, target, where) -> torch.Tensor:
        maps = self.model.response(pixel_values).float()
        maps = maps.gather(1, label_index.view(-1, 1, 1, 1, 1).expand(-1, 1, *maps.shape[2:]))[:, 0]
        grids = torch.meshgrid(*(torch.arange(n, device=maps.device) for n in maps.shape[1:]), indexing="ij")
        near = torch.ones_like(maps, dtype=torch.bool)
        for axis, grid in enumerate(grids):
            near &= (grid[None] - where[:, axis].view(-1, 1, 1, 1)).abs() <= self.radius
        allowed = near | (target == 0).view(-1, 1, 1, 1)
        logits = maps.masked_fill(~allowed, float("-inf")).flatten(1).amax(1)
        # a positive whose centre the crop left outside (at the volume's border) takes the whole patch
        logits = torch.where(torch.isfinite(logits), logits, maps.flatten(1).amax(1))
        return F.binary_cross_entropy_with_logits(logits, target.float())


def volume_scores(detector: CandidateDetector, records: list[ManifestRecord], images, names: list[str],
                  batch_size: int = 8) -> dict[str, dict[str, Any]]:
    """Per label, how well the maximum response over whole validation volumes separates the studies."""
    was_training = detector.training
    detector.eval()
    device = next(detector.parameters()).device
    maxima = []
    with torch.no_grad():
        for start in range(0, len(records), batch_size):
            pixels = torch.cat([images[i] for i in range(start, min(start + batch_size, len(records)))])
            maxima.append(detector(pixels.to(device)).float().cpu())
    detector.train(was_training)
    out: dict[str, dict[str, Any]] = {}
    if not maxima:
        return out
    logits = torch.cat(maxima).numpy()
    for j, name in enumerate(names):
        given = [i for i, r in enumerate(records) if name in r.labels]
        truth = np.array([records[i].labels[name] for i in given], dtype=int)
        row: dict[str, Any] = {"studies": len(given), "positives": int(truth.sum())}
        if 0 < truth.sum() < len(truth):
            found = label_scores(truth, 1 / (1 + np.exp(-logits[given, j])))
            row.update({"AUROC": round(found["AUROC"], 4),
                        "balanced accuracy": round(found["balanced accuracy"], 4)})
        out[name] = row
    return out
