"""Chest radiographs (PNG, JPEG or DICOM CR/DX), opened as one ordered set of separate images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_radreport.io.dicom_headers import DicomHeader
from napari_radreport.io.dicom_pixels import read_pixels
from napari_radreport.io.study import ImageData, Study, StudyReadError

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg")
MAX_REPORT_IMAGES = 4  # the RRG24 seed stitched at most the first four radiographs
_VIEW_NAMES = {"PA": "PA", "AP": "AP", "LL": "LATERAL", "RL": "LATERAL", "LAT": "LATERAL",
               "LATERAL": "LATERAL"}


def is_picture_path(path: str | Path) -> bool:
    return str(path).lower().endswith(PICTURE_SUFFIXES)


def normalise_view(view: str) -> str | None:
    """PA, AP or LATERAL from a ViewPosition value; None when absent or unknown."""
    return _VIEW_NAMES.get(view.strip().upper()) if view else None


def read_picture(path: str | Path) -> tuple[ImageData, list[str]]:
    """A PNG/JPEG radiograph as a grayscale array (colour converted, EXIF rotation applied)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    notes: list[str] = []
    try:
        with Image.open(path) as im:
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
    except UnidentifiedImageError as exc:
        raise StudyReadError(f"{path}: not a readable PNG/JPEG image") from exc
    except OSError as exc:  # truncated or corrupt data
        raise StudyReadError(f"{path}: image data could not be decoded ({exc})") from exc
    if array.ndim != 2 or min(array.shape) < 2:
        raise StudyReadError(f"{path}: image of shape {array.shape} is not a 2-D radiograph")
    image = ImageData(
        array=array,
        spacing=(None, None),
        modality="",
        label=Path(path).name,
        source_files=(str(path),),
    )
    return image, notes


def _is_coloured(im) -> bool:
    rgb = np.asarray(im.convert("RGB"), dtype=np.int16)
    return bool(np.abs(rgb[..., 0] - rgb[..., 1]).max() > 8 or np.abs(rgb[..., 1] - rgb[..., 2]).max() > 8)


def _to_grayscale(pixels: np.ndarray, photometric: str, path: str, notes: list[str]) -> np.ndarray:
    """Colour DICOM pixels (pydicom has already converted YBR to RGB) to one luminance channel."""
    notes.append(f"{Path(path).name}: colour DICOM ({photometric}) converted to grayscale")
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return pixels[..., :3].astype(np.float32) @ weights


def read_dicom_radiograph(header: DicomHeader) -> tuple[ImageData, list[str]]:
    """A CR/DX (or other single 2-D) DICOM image; MONOCHROME1 is inverted so bone is bright."""
    notes: list[str] = []
    if header.n_frames > 1:
        raise StudyReadError(
            f"{header.path}: multi-frame radiograph ({header.n_frames} frames) is not supported"
        )
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
    return image, notes


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


def make_xray_set(images: list[ImageData], notes: list[str], source: tuple[str, ...]) -> Study:
    """A set of radiographs kept separate and in the given order."""
    if len(images) > MAX_REPORT_IMAGES:
        notes.append(
            f"{len(images)} radiographs: report models use the first {MAX_REPORT_IMAGES} "
            "(as the RRG24 seed did)"
        )
    return Study(kind="xray_set", images=images, source=source, notes=notes)
