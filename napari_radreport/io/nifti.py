"""NIfTI-1/2 reader: reoriented to the canonical display, original affine kept."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from napari_radreport.io.geometry import (
    OBLIQUE_TOLERANCE_DEG,
    obliquity_deg,
    plan_reorientation,
    reorient,
)
from napari_radreport.io.limits import (
    DEFLATE_MAX_RATIO,
    MemoryBudget,
    budget_or_default,
    describe,
    megabytes,
    nbytes,
)
from napari_radreport.io.study import (
    ImageData,
    Study,
    StudyReadError,
    StudyTags,
    kind_for_modality,
    nonfinite_warning,
)

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


def _raw_header(img):
    """The header as stored, before nibabel's load-time fixes (which it only logs) and before it moves the
    scale factors into the data proxy; nibabel's header when the file cannot be read again."""
    from nibabel.openers import ImageOpener

    try:
        holder = img.file_map.get("header") or img.file_map["image"]  # a .hdr of a pair, else the .nii
        with ImageOpener(holder.filename) as handle:
            return type(img.header).from_fileobj(handle, check=False)
    except Exception:  # the loaded header is still right, only its fixes go unreported
        return img.header


def _header_fixes(raw) -> list[str]:
    """nibabel's load-time fixes of serious header problems (level 30 and up), as warnings."""
    from nibabel.batteryrunners import BatteryRunner

    try:
        reports = BatteryRunner(raw._get_checks()).check_only(raw)
    except Exception:  # a header class without checks
        return []
    return [f"header: {r.problem_msg}; opened with nibabel's fix" for r in reports if r.problem_level >= 30]


def _scaling(img, raw, warnings: list[str]) -> tuple[float, float]:
    """scl_slope/scl_inter as nibabel applies them. A slope of 0 or NaN means unscaled (the NIfTI-1 rule and
    what nibabel writes); an infinite one is invalid and is warned about; nibabel refuses an invalid inter."""
    raw_slope = float(raw["scl_slope"]) if "scl_slope" in raw else math.nan
    if math.isinf(raw_slope):
        warnings.append(f"scl_slope {raw_slope:g} is not a valid scale factor: voxels shown unscaled")
    proxy = img.dataobj
    slope = float(getattr(proxy, "slope", 1.0) or 1.0)
    inter = float(getattr(proxy, "inter", 0.0) or 0.0)
    if not math.isfinite(slope) or not math.isfinite(inter):  # nibabel never hands these out; be sure
        warnings.append(f"scl_slope/scl_inter {slope:g}/{inter:g} are not finite: voxels shown unscaled")
        slope, inter = 1.0, 0.0
    return slope, inter


def _check_claim(img, path: Path, dtype: np.dtype, budget: MemoryBudget) -> None:
    """The header's voxel count against the bytes the file can hold, then against the memory budget."""
    shape = tuple(int(n) for n in img.shape)
    stored = nbytes(shape, img.get_data_dtype())
    proxy = img.dataobj
    data_file = getattr(proxy, "file_like", None)
    if isinstance(data_file, str) and os.path.isfile(data_file):  # a missing .img is named when read
        size, offset = os.path.getsize(data_file), int(getattr(proxy, "offset", 0) or 0)
        claim = f"the header claims {describe(shape, img.get_data_dtype())} voxels ({megabytes(stored)})"
        if data_file.lower().endswith(".gz"):
            most = size * DEFLATE_MAX_RATIO
            if offset + stored > most:
                raise StudyReadError(
                    f"{path}: {claim} but a gzip file of {megabytes(size)} unpacks to at most "
                    f"{megabytes(most)} ({DEFLATE_MAX_RATIO}x): corrupt or forged header"
                )
        elif offset + stored > size:
            raise StudyReadError(
                f"{path}: {claim} from byte {offset} but {Path(data_file).name} holds "
                f"{max(0, size - offset):,} bytes of voxel data: truncated file or corrupt header"
            )
    budget.claim(path, shape, dtype)


def _voxels(img, path: Path, slope: float, inter: float) -> np.ndarray:
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
    if slope != 1.0 or inter != 0.0:
        scaled = raw.astype(np.float32)  # scaled in place: one float32 copy beside the raw values
        scaled *= np.float32(slope)
        scaled += np.float32(inter)
        return scaled
    if not raw.dtype.isnative:
        raw = raw.astype(raw.dtype.newbyteorder("="))
    return raw


def _affine_problem(affine: np.ndarray) -> str | None:
    """Why a voxel-to-world affine cannot place the volume, or None."""
    if not np.all(np.isfinite(affine[:3, :4])):
        return "holds NaN or infinite values"
    lin = affine[:3, :3]
    if not np.any(lin):
        return "has a zero orientation matrix"
    sizes = np.linalg.norm(lin, axis=0)
    if np.any(sizes <= 0):
        return f"has a zero voxel size {tuple(round(float(v), 4) for v in sizes)}"
    if abs(np.linalg.det(lin / sizes)) < 1e-6:
        return "has axes that are not independent (a singular matrix)"
    return None


def _choose_affine(img, raw, path: Path, sform_code: int, qform_code: int, warnings: list[str]) -> np.ndarray:
    """nibabel's best affine; an invalid sform falls back to a valid qform, invalid voxel sizes without
    either form to 1 mm, each with a warning; anything else is refused."""
    affine = np.asarray(img.affine, dtype=float)
    problem = _affine_problem(affine)
    if problem is None:
        return affine
    header = img.header
    used = "sform" if sform_code else "qform" if qform_code else "pixdim voxel size"
    if sform_code and qform_code:
        try:
            qform = np.asarray(header.get_qform(), dtype=float)
        except Exception:  # a malformed quaternion: fall through to the refusal
            qform = None
        if qform is not None and _affine_problem(qform) is None:
            warnings.append(f"sform (code {sform_code}) {problem}: the qform (code {qform_code}) is used")
            return qform
    if not sform_code and not qform_code:
        from nibabel.volumeutils import shape_zoom_affine

        zooms = ([float(z) for z in header.get_zooms()[:3]] + [1.0, 1.0, 1.0])[:3]
        fixed = [z if math.isfinite(z) and z > 0 else 1.0 for z in zooms]
        stored = tuple(float(z) for z in raw["pixdim"][1:4]) if "pixdim" in raw else tuple(zooms)
        shape = (tuple(int(n) for n in img.shape[:3]) + (1, 1, 1))[:3]
        warnings.append(f"pixdim voxel size {stored} has zero or invalid entries: 1 mm used for those")
        return np.asarray(shape_zoom_affine(shape, fixed, x_flip=True), dtype=float)
    raise StudyReadError(f"{path}: the {used} (code {sform_code or qform_code}) {problem}: "
                         "the volume cannot be placed in patient space")


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


def _description(header) -> str:
    """The header's free-text ``descrip`` field, decoded ("" when absent or unreadable)."""
    try:
        raw = header["descrip"].item() if "descrip" in header else b""
    except (KeyError, ValueError):
        return ""
    return (raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)).strip("\x00 ")


def read_nifti(path: str | Path, modality: str | None = None, *, budget: MemoryBudget | None = None) -> Study:
    """A NIfTI volume, its header checked against the file and the memory budget before any voxel is read."""
    path = Path(path)
    img = _load_image(path)
    header = img.header
    notes: list[str] = []
    warnings: list[str] = []
    raw = _raw_header(img)
    warnings.extend(_header_fixes(raw))
    slope, inter = _scaling(img, raw, warnings)
    built = np.dtype(np.float32) if slope != 1.0 or inter != 0.0 else img.get_data_dtype()
    _check_claim(img, path, built, budget_or_default(budget))
    sform_code = int(header.get("sform_code", 0)) if "sform_code" in header else 0
    qform_code = int(header.get("qform_code", 0)) if "qform_code" in header else 0
    affine_ras = _choose_affine(img, raw, path, sform_code, qform_code, warnings)
    data = _voxels(img, path, slope, inter)
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
    if sform_code == 0 and qform_code == 0:
        warnings.append("header has no sform or qform: orientation unknown, assumed RAS from voxel sizes")

    lin = _RAS_TO_LPS @ affine_ras[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
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
        "description": _description(header),  # the header's descrip text (e.g. the phantoms' mark)
    }
    if tilt > OBLIQUE_TOLERANCE_DEG:
        warnings.append(
            f"oblique volume: axes up to {tilt:.1f} deg from the patient axes; shown on the voxel grid "
            "without resampling, so on-screen directions are approximate"
        )

    nonfinite = nonfinite_warning(data, str(path))
    if nonfinite:
        warnings.append(nonfinite)
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
