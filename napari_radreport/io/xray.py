"""Chest radiographs (PNG, JPEG or DICOM CR/DX), opened as one ordered set of separate images."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_radreport.io.dicom_headers import DicomHeader, looks_like_dicom, read_header
from napari_radreport.io.dicom_pixels import read_pixels
from napari_radreport.io.limits import DEFLATE_MAX_RATIO, MemoryBudget, budget_or_default
from napari_radreport.io.study import ImageData, Study, StudyReadError, nonfinite_warning

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
# The 2-D array each Pillow mode becomes (colour and palette images become 8-bit luminance).
_MODE_DTYPES = {"I;16": np.uint16, "I;16B": np.uint16, "I;16L": np.uint16, "I": np.int32, "F": np.float32}
MAX_REPORT_IMAGES = 4  # the RRG24 seed stitched at most the first four radiographs
_VIEW_NAMES = {"PA": "PA", "AP": "AP", "LL": "LATERAL", "RL": "LATERAL", "LAT": "LATERAL",
               "LATERAL": "LATERAL"}


def is_picture_path(path: str | Path) -> bool:
    return str(path).lower().endswith(PICTURE_SUFFIXES)


def normalise_view(view: str) -> str | None:
    """PA, AP or LATERAL from a ViewPosition value; None when absent or unknown."""
    return _VIEW_NAMES.get(view.strip().upper()) if view else None


def _pixel_limit_error(path, pixels: int, limit: int) -> StudyReadError:
    return StudyReadError(
        f"{path}: {pixels:,} pixels, over the {limit:,}-pixel limit for one picture (Pillow's "
        "decompression-bomb limit, PIL.Image.MAX_IMAGE_PIXELS): refused as a possible decompression bomb"
    )


def _check_png_size(path, image_format: str | None, width: int, height: int) -> None:
    """A PNG's rows are deflate-compressed: at 1 bit per pixel they need at least height x (1 + width / 8)
    bytes, which a file of N bytes can only hold when that is at most DEFLATE_MAX_RATIO x N."""
    if image_format != "PNG":
        return  # JPEG has no such bound: a blank JPEG can be smaller still
    least = height * (1 + (width + 7) // 8)
    size = os.path.getsize(path)
    if least > DEFLATE_MAX_RATIO * size:
        raise StudyReadError(
            f"{path}: the header claims {width} x {height} pixels ({least:,} bytes of rows at least) but "
            f"{size:,} bytes of PNG unpack to at most {DEFLATE_MAX_RATIO * size:,}: corrupt or forged header"
        )


def read_picture(path: str | Path, *, budget: MemoryBudget | None = None
                 ) -> tuple[ImageData, list[str], list[str]]:
    """A PNG/JPEG radiograph as a grayscale array (colour converted, EXIF rotation applied).

    The size in the file's header is checked against Pillow's pixel limit and the memory budget before
    the image is decoded."""
    import re

    from PIL import Image, ImageOps, UnidentifiedImageError

    notes: list[str] = []
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():  # between 1x and 2x the limit Pillow warns; the check below refuses
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            width, height = im.size
            if limit and width * height > limit:
                raise _pixel_limit_error(path, width * height, limit)
            _check_png_size(path, im.format, width, height)
            built = _MODE_DTYPES.get(im.mode, np.uint8)
            budget_or_default(budget).claim(path, (height, width), built, "image")
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L"):
                array = np.asarray(im, dtype=np.uint16)
            elif mode in ("L", "I", "F"):
                array = np.asarray(im)
            else:
                if mode not in ("1", "P", "LA", "PA") and _is_coloured(im):
                    notes.append(f"{Path(path).name}: colour image ({mode}) converted to grayscale")
                array = np.asarray(im.convert("L"))
    except Image.DecompressionBombError as exc:  # over twice the limit: Pillow refuses in Image.open
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _pixel_limit_error(path, int(found.group(1)) if found else 0, limit or 0) from exc
    except UnidentifiedImageError as exc:
        raise StudyReadError(f"{path}: not a readable PNG/JPEG image") from exc
    except OSError as exc:  # truncated or corrupt data
        raise StudyReadError(f"{path}: image data could not be decoded ({exc})") from exc
    if array.ndim != 2 or min(array.shape) < 2:
        raise StudyReadError(f"{path}: image of shape {array.shape} is not a 2-D radiograph")
    nonfinite = nonfinite_warning(array, str(path), "pixels")
    image = ImageData(
        array=array,
        spacing=(None, None),
        modality="",
        label=Path(path).name,
        source_files=(str(path),),
    )
    return image, notes, [nonfinite] if nonfinite else []


def _is_coloured(im) -> bool:
    rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    return bool(np.abs(rgb[..., 0] - rgb[..., 1]).max() > 8 or np.abs(rgb[..., 1] - rgb[..., 2]).max() > 8)


def _to_grayscale(pixels: np.ndarray, photometric: str, path: str, notes: list[str]) -> np.ndarray:
    """Colour DICOM pixels (pydicom has already converted YBR to RGB) to one luminance channel."""
    notes.append(f"{Path(path).name}: colour DICOM ({photometric}) converted to grayscale")
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return pixels[..., :3].astype(np.float32) @ weights


def read_dicom_radiograph(header: DicomHeader, *, budget: MemoryBudget | None = None
                          ) -> tuple[ImageData, list[str], list[str]]:
    """A CR/DX (or other single 2-D) DICOM image; MONOCHROME1 is inverted so bone is bright.

    The pixel data length and the image size are checked against the header and the memory budget
    before decoding. Returns the image, notes and warnings."""
    notes: list[str] = []
    warnings = [f"{Path(header.path).name}: {problem}" for problem in header.rescale_problems]
    if header.n_frames > 1:
        raise StudyReadError(
            f"{header.path}: multi-frame radiograph ({header.n_frames} frames) is not supported"
        )
    problem = header.pixel_data_problem()
    if problem:
        raise StudyReadError(f"{header.path}: {problem}")
    rescaled = (header.rescale_slope, header.rescale_intercept) != (1.0, 0.0) or header.samples_per_pixel > 1
    built = np.float32 if rescaled or header.stored_dtype is None else header.stored_dtype
    budget_or_default(budget).claim(header.path, (header.rows, header.columns), built, "image")
    pixels, ds = read_pixels(header.path)
    if header.samples_per_pixel > 1 or pixels.ndim == 3:
        pixels = _to_grayscale(pixels, header.photometric, header.path, notes)
    if pixels.ndim != 2:
        raise StudyReadError(f"{header.path}: pixel array of shape {pixels.shape} is not a 2-D image")
    slope, intercept = header.rescale_slope, header.rescale_intercept
    if (slope, intercept) != (1.0, 0.0):
        pixels = pixels.astype(np.float32) * slope + intercept
    window = _file_window(ds)
    if header.photometric == "MONOCHROME1":
        bits = header.bits_stored or 16
        top = float((2**bits - 1) * slope + intercept) if pixels.dtype.kind in "iu" else float(pixels.max())
        bottom = float(intercept) if pixels.dtype.kind in "iu" else float(pixels.min())
        pixels = _invert(pixels, bottom, top)
        if window is not None:
            window = (bottom + top - window[0], window[1])
        notes.append(f"{Path(header.path).name}: MONOCHROME1 inverted for display")
    spacing = header.pixel_spacing or header.imager_pixel_spacing
    if spacing is None:
        notes.append(
            f"{Path(header.path).name}: pixel spacing unknown (PixelSpacing/ImagerPixelSpacing absent or 0)"
        )
    image = ImageData(
        array=pixels,
        spacing=spacing if spacing is not None else (None, None),
        modality=header.modality,
        tags=header.tags,
        label=Path(header.path).name,
        view_position=normalise_view(header.view_position),
        source_files=(header.path,),
        file_window=window,
    )
    nonfinite = nonfinite_warning(pixels, header.path, "pixels")
    return image, notes, warnings + ([nonfinite] if nonfinite else [])


def _invert(pixels: np.ndarray, bottom: float, top: float) -> np.ndarray:
    if pixels.dtype.kind == "u" and bottom == 0:
        return (np.asarray(top, dtype=pixels.dtype) - pixels).astype(pixels.dtype)
    return (bottom + top - pixels.astype(np.float32)).astype(np.float32)


def _file_window(ds) -> tuple[float, float] | None:
    try:
        centre, width = ds.get("WindowCenter"), ds.get("WindowWidth")
        if centre is None or width is None:
            return None
        centre = float(centre[0] if hasattr(centre, "__len__") and not isinstance(centre, str) else centre)
        width = float(width[0] if hasattr(width, "__len__") and not isinstance(width, str) else width)
    except (TypeError, ValueError, IndexError):
        return None
    return (centre, width) if width > 0 else None


def make_xray_set(images: list[ImageData], notes: list[str], source: tuple[str, ...],
                  warnings: list[str] | None = None) -> Study:
    """A set of radiographs kept separate and in the given order."""
    if len(images) > MAX_REPORT_IMAGES:
        notes.append(
            f"{len(images)} radiographs: report models use the first {MAX_REPORT_IMAGES} "
            "(as the RRG24 seed did)"
        )
    return Study(kind="xray_set", images=images, source=source, notes=notes, warnings=list(warnings or []))


# -- views of a set ---------------------------------------------------------------------------------------
SET_KINDS = ("xray_set", "image")  # the 2-D studies laid out side by side, one image per file
_KEPT_EXTRA = ("attribution",)  # what a set keeps when its views change (the sample's credit line)


def set_files(study: Study) -> list[str]:
    """The file of each view of a radiograph set, in set order; StudyReadError for a volume, or for a view
    that was not read from one file (nothing to read it again from)."""
    if study.kind not in SET_KINDS:
        raise StudyReadError(f"a {study.kind} study is not a set of radiographs: its views cannot change")
    files = []
    for i, image in enumerate(study.images):
        if len(image.source_files) != 1:
            raise StudyReadError(f"view {i + 1} ({image.label or 'unnamed'}) was not read from one file")
        files.append(str(Path(image.source_files[0])))
    return files


def _reread(study: Study, files: list[str], *, allow_mixed_patients: bool, max_bytes: int | None) -> Study:
    """``files`` read again as one set (``load_study``: same-patient check, notes and warnings anew)."""
    from napari_radreport.io.loader import load_study

    new = load_study(files, allow_mixed_patients=allow_mixed_patients, max_bytes=max_bytes)
    if new.kind not in SET_KINDS:
        raise StudyReadError(f"{files[0]} (+{len(files) - 1} files): read as a {new.kind} study, not "
                             "as a set of radiographs")
    got = {f for im in new.images for f in im.source_files}
    missing = [f for f in files if f not in got]
    if missing:
        raise StudyReadError(f"{missing[0]}: not read as a view of the set (a copy of another view, or "
                             "not an image); a set holds one radiograph per file")
    for key in _KEPT_EXTRA:
        if key in study.extra:
            new.extra[key] = study.extra[key]
    return new


def _check_view_file(path: Path) -> None:
    """StudyReadError unless ``path`` is a file that can be one radiograph (headers only)."""
    if path.is_dir():
        raise StudyReadError(f"{path}: a folder; add radiograph files (PNG, JPEG or DICOM)")
    if not path.is_file():
        raise StudyReadError(f"{path}: no such file")
    if is_picture_path(path):
        return
    if not looks_like_dicom(path):
        raise StudyReadError(f"{path}: not a radiograph file (expected PNG, JPEG or DICOM)")
    header = read_header(path)
    reason = header.non_image_reason()
    if reason is not None:
        raise StudyReadError(f"{path}: {reason}")
    if header.is_volume_slice or (header.n_frames > 1 and not header.is_radiograph):
        raise StudyReadError(f"{path}: a slice of a {header.modality or 'volume'} series, not a radiograph; "
                             "open it as its own study")


def add_views(study: Study, paths: Sequence[str | os.PathLike], *, allow_mixed_patients: bool = False,
              max_bytes: int | None = None) -> Study:
    """A new set: ``study``'s views, then the radiographs in ``paths`` (in that order).

    All files are read again through ``load_study``, so the new files must be of the set's patient
    (``MixedPatients`` otherwise, unless ``allow_mixed_patients`` or the set already mixes patients, which
    the user accepted when opening it). A file already in the set is not added twice; StudyReadError when
    nothing new remains, or when a file is not a 2-D radiograph (a CT slice, a folder, a NIfTI...)."""
    files = set_files(study)
    known = {os.path.realpath(f) for f in files}
    new: list[str] = []
    for p in paths:
        path = Path(p)
        _check_view_file(path)
        real = os.path.realpath(path)
        if real not in known:
            known.add(real)
            new.append(str(path))
    if not new:
        raise StudyReadError("no new view to add: the files chosen are already views of this set")
    allow = allow_mixed_patients or bool(study.extra.get("patients"))
    return _reread(study, files + new, allow_mixed_patients=allow, max_bytes=max_bytes)


def views_left(study: Study, index: int) -> list[str]:
    """The files of a set's views but view ``index`` (0-based); StudyReadError for no such view, or for the
    last view of a set (a set keeps at least one). Reads nothing."""
    files = set_files(study)
    if not 0 <= index < len(files):
        raise StudyReadError(f"no view {index + 1}: the set has {len(files)} view(s)")
    if len(files) == 1:
        raise StudyReadError(f"{Path(files[0]).name} is the only view of the set: it cannot be removed "
                             "(close the study instead)")
    return files[:index] + files[index + 1:]


def remove_view(study: Study, index: int, *, max_bytes: int | None = None) -> Study:
    """A new set without view ``index`` (0-based); the others are read again, so notes, warnings and the
    patients it mixes are those of the views left. StudyReadError for the last view of a set."""
    # Removing a view adds no patient: a set that mixed patients may still, and says so.
    return _reread(study, views_left(study, index), allow_mixed_patients=True, max_bytes=max_bytes)
