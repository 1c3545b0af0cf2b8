"""Step 1: a DICOM series into a HU volume: our reader vs a plain pydicom loop vs
SimpleITK's series reader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_radreport.bench.measure import ratio, timed


def pydicom_loop(folder: Path) -> np.ndarray:
    """What a script would write: read every file, sort along the slice normal, rescale, stack."""
    import pydicom

    slices = [pydicom.dcmread(path) for path in sorted(folder.glob("*.dcm"))]
    row, col = (np.array(slices[0].ImageOrientationPatient[:3], float),
                np.array(slices[0].ImageOrientationPatient[3:], float))
    normal = np.cross(row, col)
    slices.sort(key=lambda ds: float(np.dot(np.array(ds.ImagePositionPatient, float), normal)))
    hu = [ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept) for ds in slices]
    return np.stack(hu).astype(np.int16)


def simpleitk_series(folder: Path) -> np.ndarray:
    """SimpleITK's GDCM series reader (sorts by position, applies the rescale), as a (z, y, x) array."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    return sitk.GetArrayFromImage(reader.Execute())


def ours(folder: Path) -> np.ndarray:
    from napari_radreport.io import load_study

    return load_study(folder).array


def _same_voxels(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal HU after bringing both to the patient's foot-to-head order (readers may stack either way)."""
    if a.shape != b.shape:
        return False
    return bool(np.array_equal(a, b) or np.array_equal(a, b[::-1]))


def run(series: Path, repeats: int) -> dict[str, Any]:
    """Median seconds and peak memory of each reader on ``series``; the volumes must hold the same voxels."""
    readers = {"ours": ours, "pydicom_loop": pydicom_loop}
    try:
        import SimpleITK  # noqa: F401

        readers["simpleitk"] = simpleitk_series
    except ImportError:
        pass
    results = {name: timed(lambda r=reader: r(series), repeats) for name, reader in readers.items()}
    volume = results["ours"].result
    out: dict[str, Any] = {
        "series": series.name,
        "files": len(list(series.glob("*.dcm"))),
        "shape": list(volume.shape),
        "volume_mib": round(volume.nbytes / 2**20, 1),
        **{name: t.as_dict() for name, t in results.items()},
        "same_voxels": {name: _same_voxels(volume, t.result)
                        for name, t in results.items() if name != "ours"},
        "ratios": {f"{name}_over_ours": ratio(t.seconds, results["ours"].seconds)
                   for name, t in results.items() if name != "ours"},
    }
    if "simpleitk" not in results:
        out["simpleitk"] = "skipped: SimpleITK is not installed (pip install SimpleITK)"
    return out
