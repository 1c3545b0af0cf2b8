"""Decoding DICOM pixel data (compressed transfer syntaxes through pylibjpeg) with clear errors."""

from __future__ import annotations

import numpy as np

from napari_radreport.io.dicom_headers import read_dataset
from napari_radreport.io.study import StudyReadError


def decode_pixels(ds, path: str) -> np.ndarray:
    """``ds.pixel_array`` with a one-line error naming the file and transfer syntax on failure."""
    try:
        return np.asarray(ds.pixel_array)
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", None) or str(syntax or "unknown transfer syntax")
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        # pydicom lists each decoder's failure on the following lines: keep the first of them.
        msg = ": ".join([lines[0].rstrip(":")] + lines[1:2]) if lines else type(exc).__name__
        raise StudyReadError(f"{path}: pixel data could not be decoded ({name}): {msg}") from exc


def read_pixels(path: str) -> tuple[np.ndarray, object]:
    """Raw stored values of a DICOM file and its dataset."""
    ds = read_dataset(path, pixels=True)
    return decode_pixels(ds, path), ds


def rescaled_dtype(raw_dtype: np.dtype, slopes: np.ndarray, intercepts: np.ndarray, bits: int) -> np.dtype:
    """Smallest safe dtype for ``raw * slope + intercept`` over all slices (int16 for usual CT)."""
    integral = np.all(slopes == 1.0) and np.all(np.equal(np.mod(intercepts, 1.0), 0.0))
    if raw_dtype.kind not in "iu" or not integral:
        return np.dtype(np.float32)
    signed = raw_dtype.kind == "i"
    lo = -(2 ** (bits - 1)) if signed else 0
    hi = 2 ** (bits - 1) - 1 if signed else 2**bits - 1
    lo, hi = lo + intercepts.min(), hi + intercepts.max()
    for candidate in (np.int16, np.int32):
        info = np.iinfo(candidate)
        if info.min <= lo and hi <= info.max:
            return np.dtype(candidate)
    return np.dtype(np.float32)


def apply_rescale(raw: np.ndarray, slope: float, intercept: float, dtype: np.dtype) -> np.ndarray:
    if slope == 1.0 and intercept == 0.0:
        return raw.astype(dtype, copy=False)
    if dtype.kind == "f":
        return raw.astype(dtype) * dtype.type(slope) + dtype.type(intercept)
    return raw.astype(dtype) + dtype.type(intercept)
