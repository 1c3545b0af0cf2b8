"""Step 2: preprocessing a CT to the E3D-GPT and M3D recipes: ours vs MONAI's transform chain.

MONAI's chains do the same steps with its standard transforms: ``Spacing`` (trilinear) +
``ScaleIntensityRange`` (clip) + ``ResizeWithPadOrCrop`` for E3D-GPT, ``ScaleIntensity`` + ``Resize``
(trilinear) for M3D. Outputs are compared twice: with MONAI's own chain, whose ``Spacing`` puts the output
grid on the first input voxel centre (ours keeps the volume's outer edges, as ``F.interpolate`` with
``align_corners=False`` does, so the grids are offset by a fraction of a voxel), and with MONAI's
``SpatialResample`` on our grid (which checks that the interpolation itself is the same).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from napari_radreport.bench.measure import ratio, timed
from napari_radreport.modeling.recipes import MODELS_DIR

RECIPES = {"e3d-gpt": "e3d-gpt-vicuna-7b", "m3d": "m3d-lamed-phi3-4b"}


def recipe_preprocess(name: str):
    from napari_radreport.modeling.processor import Preprocess

    return Preprocess.from_recipe(
        json.loads((MODELS_DIR / RECIPES[name] / "recipe.json").read_text())["preprocess"])


def monai_chain(spec):
    """MONAI transforms doing the recipe's steps on a channel-first MetaTensor in HU."""
    from monai.transforms import (
        Compose,
        Resize,
        ResizeWithPadOrCrop,
        ScaleIntensity,
        ScaleIntensityRange,
        Spacing,
    )

    steps = []
    if spec.spacing_mm is not None:
        steps.append(Spacing(pixdim=spec.spacing_mm, mode="bilinear"))
    if spec.intensity == "hu_window":
        lo, hi = spec.hu_window
        steps.append(ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True))
    else:
        steps.append(ScaleIntensity(minv=0.0, maxv=1.0))
    steps.append(ResizeWithPadOrCrop(spec.target_shape) if spec.resize == "crop_or_pad"
                 else Resize(spec.target_shape, mode="trilinear"))
    return Compose(steps)


def _meta_tensor(study):
    import torch
    from monai.data import MetaTensor

    affine = torch.diag(torch.tensor([*study.spacing, 1.0], dtype=torch.float64))
    return MetaTensor(torch.from_numpy(study.array.astype(np.float32))[None], affine=affine)


def resample_on_our_grid(study, spacing_mm) -> tuple[float, float]:
    """Max and mean |ours - MONAI SpatialResample| in HU, MONAI given the grid our resampling uses."""
    import torch
    from monai.transforms import SpatialResample

    from napari_radreport.modeling.processor import _resample

    volume = torch.from_numpy(study.array.astype(np.float32))
    resampled = _resample(volume, study.spacing, spacing_mm)
    source, shape = np.array(study.spacing), np.array(resampled.shape)
    step = np.array(volume.shape) * source / shape  # voxel size of our grid after rounding the shape
    affine = np.eye(4)
    affine[:3, :3] = np.diag(step)
    affine[:3, 3] = 0.5 * step - 0.5 * source  # voxel i's centre, with input voxel j's centre at j * spacing
    theirs = SpatialResample(mode="bilinear", padding_mode="border")(
        _meta_tensor(study), dst_affine=torch.tensor(affine), spatial_size=tuple(int(s) for s in shape))
    diff = (resampled - theirs.as_tensor()[0]).abs()
    return float(diff.max()), float(diff.mean())


def run(study, repeats: int) -> dict[str, Any]:
    from napari_radreport.modeling.processor import volume_to_pixels

    try:
        import monai  # noqa: F401
    except ImportError:
        return {"skipped": "MONAI is not installed (pip install monai)"}
    out: dict[str, Any] = {"input_shape": list(study.array.shape), "input_spacing_mm": list(study.spacing)}
    for name in RECIPES:
        spec = recipe_preprocess(name)
        chain = monai_chain(spec)
        ours = timed(lambda s=spec: volume_to_pixels(study, s), repeats)
        theirs = timed(lambda c=chain: c(_meta_tensor(study)), repeats)
        a, b = ours.result[0, 0], theirs.result.as_tensor()[0]
        entry: dict[str, Any] = {
            "steps": {"spacing_mm": spec.spacing_mm, "intensity": spec.intensity, "hu_window": spec.hu_window,
                      "resize": spec.resize, "target_shape": list(spec.target_shape)},
            "ours": ours.as_dict(), "monai": theirs.as_dict(),
            "monai_over_ours": ratio(theirs.seconds, ours.seconds),
            "same_shape": list(a.shape) == list(b.shape),
        }
        if entry["same_shape"]:
            diff = (a - b).abs()
            entry["vs_monai_chain"] = {"max_abs": round(float(diff.max()), 4),
                                       "mean_abs": round(float(diff.mean()), 5)}
        if spec.spacing_mm is not None:
            top, mean = resample_on_our_grid(study, spec.spacing_mm)
            entry["resample_vs_monai_on_our_grid_hu"] = {"max_abs": round(top, 4), "mean_abs": round(mean, 6)}
        out[name] = entry
    return out
