"""CT-RATE's volume preprocessing, as CT-CHAT's encoder script does it, for a Study (``intensity: ct_rate``).

CT-CHAT ``llava/serve/encode_script.py`` (``nii_img_to_tensor``, the same steps as CT-CLIP's
``scripts/data_inference_nii.py``) reads a NIfTI with nibabel in its stored voxel order (i, j, k), with no
reorientation, and then:

1. HU (``slope * value + intercept``; 1 and 0 for volumes already in HU), clipped to [-1000, 1000];
2. put in (k, i, j) order and resampled by trilinear interpolation (``align_corners=False``, float64) to
   1.5 mm along k and 0.75 mm along i and j, each axis to ``int(n * spacing / target)`` voxels (rounded down);
3. divided by 1000 (so [-1, 1]) and made float32;
4. centre-cropped or padded with -1 to 480 x 480 x 240 along (i, j, k) (crop from ``(n - 480) // 2``, pad
   ``(480 - n) // 2`` before);
5. handed to CT-ViT as (1, 1, k, i, j) = (1, 1, 240, 480, 480).

A Study's array is in this project's display order (docs/conventions.md), so the stored order is found again:
a NIfTI's from the reorientation its reader recorded (``study.extra["reorientation"]``), exactly; any other
volume (a DICOM series) in LPS+ order (i toward the patient's left, j toward posterior, k toward superior),
the index order ITK keeps for an axial series. The recipe's ``preprocess`` section gives ``target_shape``
(k, i, j), ``spacing_mm`` (k, i, j) and ``hu_window``; ``channels`` repeats the volume.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

PAD_VALUE = -1.0  # what CT-CHAT pads with: -1000 HU after the division by 1000
HU_SCALE = 1000.0
_LPS = np.eye(3)


def stored_order(study) -> tuple[tuple[int, int, int], tuple[bool, bool, bool]]:
    """How to bring the study's array back to its stored voxel order (i, j, k): the array axis that holds
    each of i, j, k and whether it runs backwards there."""
    plan = study.extra.get("reorientation")
    if plan is not None:  # the NIfTI reader moved stored axis perm[t] to array axis t, flipped if flip[t]
        perm, flip = [int(p) for p in plan["perm"]], [bool(f) for f in plan["flip"]]
        axes = tuple(perm.index(source) for source in range(3))
        return axes, tuple(flip[a] for a in axes)  # type: ignore[return-value]
    direction = study.direction
    if direction is None:
        raise ValueError("the study has no orientation: CT-RATE's voxel order cannot be found")
    similarity = np.asarray(direction, dtype=float) @ _LPS.T  # [array axis, patient axis]
    axes = tuple(int(np.argmax(np.abs(similarity[:, target]))) for target in range(3))
    if len(set(axes)) != 3:
        raise ValueError("the study's axes are too oblique to tell which runs along which patient axis")
    return axes, tuple(bool(similarity[a, t] < 0) for t, a in enumerate(axes))  # type: ignore[return-value]


def _kij(study, array: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """The array in (k, i, j) order of the stored volume, and its spacing along those axes."""
    axes, backwards = stored_order(study)
    flips = [a for a, back in zip(axes, backwards) if back]
    stored = np.flip(array, axis=flips) if flips else array
    order = (axes[2], axes[0], axes[1])
    return np.transpose(stored, order), tuple(float(study.spacing[a]) for a in order)  # type: ignore[return-value]


def resampled_size(shape, spacing, target) -> list[int]:
    """CT-CHAT's ``resize_array`` size: ``int(n * (spacing / target))`` per axis, rounded down."""
    return [int(n * (s / t)) for n, s, t in zip(shape, spacing, target)]


def crop_start(have: int, want: int) -> int:
    """The first kept voxel (crop) or minus the voxels padded before (pad), as CT-CHAT centres them."""
    return max((have - want) // 2, 0) if have >= want else -((want - have) // 2)


def ct_rate_pixels(study, spec) -> torch.Tensor:
    """(1, channels, *target_shape) float32 in CT-CHAT's (k, i, j) order, values in [-1, 1]."""
    from napari_radreport.modeling.processor import InputError

    if not study.is_volume or study.array.ndim != 3:
        raise InputError(f"this model reads one CT volume; the study is a {study.kind}")
    if None in study.spacing:
        raise InputError("the study's voxel spacing is unknown; CT-RATE's preprocessing resamples to 1.5 x "
                         "0.75 x 0.75 mm")
    try:
        array, spacing = _kij(study, study.array)
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    low, high = spec.hu_window or (-1000.0, 1000.0)
    volume = torch.from_numpy(np.array(array, dtype=np.float64))
    volume = torch.nan_to_num(volume, nan=low, posinf=high, neginf=low).clamp_(low, high)
    target = spec.spacing_mm or spacing
    size = resampled_size(volume.shape, spacing, target)
    volume = F.interpolate(volume[None, None], size=size, mode="trilinear", align_corners=False)[0, 0]
    volume = (volume / HU_SCALE).float()
    out = torch.full(tuple(spec.target_shape), PAD_VALUE, dtype=torch.float32)
    src, dst = [], []
    for have, want in zip(volume.shape, spec.target_shape):
        start = crop_start(have, want)
        kept = min(have, want)
        src.append(slice(max(start, 0), max(start, 0) + kept))
        dst.append(slice(max(-start, 0), max(-start, 0) + kept))
    out[tuple(dst)] = volume[tuple(src)]
    return out[None, None].expand(1, spec.channels, *spec.target_shape).contiguous()


def ct_rate_index(study, spec, position) -> np.ndarray:
    """Where an LPS position (mm) lands in ``ct_rate_pixels(study, spec)``: a continuous (k, i, j) index."""
    index = np.asarray(study.image.patient_to_index(position), dtype=float)
    axes, backwards = stored_order(study)
    shape = study.array.shape
    stored = [shape[a] - 1 - index[a] if back else index[a] for a, back in zip(axes, backwards)]
    order = (axes[2], axes[0], axes[1])
    kij = np.array([stored[2], stored[0], stored[1]])
    have = [shape[a] for a in order]
    spacing = [float(study.spacing[a]) for a in order]
    size = resampled_size(have, spacing, spec.spacing_mm or spacing)
    kij = (kij + 0.5) * np.asarray(size) / np.asarray(have) - 0.5
    return kij - np.array([crop_start(n, want) for n, want in zip(size, spec.target_shape)])
