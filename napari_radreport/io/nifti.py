"""NIfTI-1/2 reader: reoriented to the canonical display, original affine kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_radreport.io.geometry import (
    OBLIQUE_TOLERANCE_DEG,
    obliquity_deg,
    plan_reorientation,
    reorient,
)
from napari_radreport.io.study import ImageData, Study, StudyReadError, StudyTags, kind_for_modality

NIFTI_SUFFIXES = (".nii", ".nii.gz", ".hdr", ".img", ".img.gz")
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def is_nifti_path(path: str | Path) -> bool:
    return str(path).lower().endswith(NIFTI_SUFFIXES)


def _load_image(path: Path):
    import nibabel

    try:
        img = nibabel.load(str(path))
    except FileNotFoundError as exc:
        raise StudyReadError(f"{path}: missing file {Path(exc.filename or '').name or path.name}") from exc
    except Exception as exc:  # nibabel raises many types for malformed headers
        raise StudyReadError(f"{path}: not a readable NIfTI file ({_first_line(exc)})") from exc
    if not isinstance(img, (nibabel.Nifti1Image, nibabel.Nifti2Image, nibabel.Nifti1Pair,
                            nibabel.Nifti2Pair)):
        raise StudyReadError(f"{path}: {type(img).__name__.removesuffix('Image')} file, not a NIfTI volume")
    return img


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _voxels(img, path: Path) -> np.ndarray:
    """Voxel values in a native-byte-order array: raw dtype unless the header scales them."""
    proxy = img.dataobj
    try:
        raw = np.asarray(proxy.get_unscaled())
    except FileNotFoundError as exc:
        missing = Path(exc.filename).name if exc.filename else "the image file"
        raise StudyReadError(f"{path}: header only, its voxel data file {missing} is missing") from exc
    except Exception as exc:
        raise StudyReadError(f"{path}: voxel data could not be read ({_first_line(exc)})") from exc
    if raw.dtype.kind not in "biuf":
        raise StudyReadError(f"{path}: voxel type {raw.dtype} (complex or RGB) is not supported")
    if raw.dtype.kind == "b":
        raw = raw.astype(np.uint8)
    slope = float(getattr(proxy, "slope", 1.0) or 1.0)
    inter = float(getattr(proxy, "inter", 0.0) or 0.0)
    if not np.isfinite(slope) or not np.isfinite(inter):
        slope, inter = 1.0, 0.0
    if slope != 1.0 or inter != 0.0:
        return raw.astype(np.float32) * np.float32(slope) + np.float32(inter)
    if not raw.dtype.isnative:
        raw = raw.astype(raw.dtype.newbyteorder("="))
    return raw


def guess_modality(array: np.ndarray) -> tuple[str, str]:
    """NIfTI stores no modality: call it CT when the values look like Hounsfield units."""
    if array.size == 0:
        return "", "empty volume"
    sample = array[..., :: max(1, array.shape[-1] // 64)]
    sample = sample[np.isfinite(sample)] if sample.dtype.kind == "f" else sample.reshape(-1)
    if sample.size == 0:
        return "", "modality not stored in NIfTI and the volume holds no finite values"
    lo, hi = float(np.min(sample)), float(np.max(sample))
    looks_hu = -1200.0 <= np.percentile(sample, 1) <= -600.0 and lo >= -1500.0 and hi >= 300.0
    if looks_hu:
        return "CT", ("modality not stored in NIfTI; assumed CT "
                      f"because values span {lo:.0f}..{hi:.0f} (HU-like)")
    return "", f"modality not stored in NIfTI and values ({lo:.4g}..{hi:.4g}) do not look like HU"


def read_nifti(path: str | Path, modality: str | None = None) -> Study:
    path = Path(path)
    img = _load_image(path)
    header = img.header
    data = _voxels(img, path)
    notes: list[str] = []
    warnings: list[str] = []
    shape = data.shape
    # Trailing singleton axes (e.g. 5-D with one component) carry nothing.
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., None]
        notes.append("2-D NIfTI opened as a single slice")
    if data.ndim not in (3, 4):
        raise StudyReadError(
            f"{path}: {data.ndim}-D NIfTI with shape {shape} is not supported (3-D or 4-D only)"
        )

    sform_code = int(header.get("sform_code", 0)) if "sform_code" in header else 0
    qform_code = int(header.get("qform_code", 0)) if "qform_code" in header else 0
    if sform_code == 0 and qform_code == 0:
        warnings.append("header has no sform or qform: orientation unknown, assumed RAS from voxel sizes")

    affine_ras = np.asarray(img.affine, dtype=float)
    lin = _RAS_TO_LPS @ affine_ras[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(lin)):
        raise StudyReadError(f"{path}: affine has a zero or invalid voxel size {tuple(spacing)}")
    direction = (lin / spacing).T  # row i = LPS unit vector of voxel axis i
    origin = _RAS_TO_LPS @ affine_ras[:3, 3]

    if data.ndim == 4:  # nibabel order (i, j, k, t) -> (t, i, j, k)
        data = np.moveaxis(data, 3, 0)
        notes.append(f"4-D volume: {data.shape[0]} volumes over time/components on the first axis")

    plan = plan_reorientation(direction)
    data, new_spacing, origin, direction = reorient(data, tuple(spacing), origin, direction, plan)
    data = np.ascontiguousarray(data)

    tilt = obliquity_deg(direction)
    extra = {
        "original_affine_ras": affine_ras.tolist(),
        "sform_code": sform_code,
        "qform_code": qform_code,
        "reorientation": {"perm": list(plan.perm), "flip": list(plan.flip)},
        "obliquity_deg": tilt,
    }
    if tilt > OBLIQUE_TOLERANCE_DEG:
        warnings.append(
            f"oblique volume: axes up to {tilt:.1f} deg from the patient axes; shown on the voxel grid "
            "without resampling, so on-screen directions are approximate"
        )

    detected, reason = guess_modality(data)
    chosen_modality = (modality or detected).upper()
    if modality is None:
        notes.append(reason)
    kind = kind_for_modality(chosen_modality)
    image = ImageData(
        array=data,
        spacing=new_spacing,
        modality=chosen_modality,
        tags=StudyTags(),
        origin=tuple(float(v) for v in origin),
        direction=direction,
        label=path.name,
        source_files=(str(path),),
    )
    return Study(kind=kind, images=[image], source=(str(path),), warnings=warnings, notes=notes, extra=extra)
