"""``load_study``: one entry point that decides what the input is and calls the right reader."""

from __future__ import annotations

import bisect
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from napari_radreport.common import one_line
from napari_radreport.io.dicom_headers import (
    RADIOGRAPH_MODALITIES,
    DicomHeader,
    check_one_patient,
    looks_like_dicom,
    read_header,
    unique_instances,
)
from napari_radreport.io.limits import MemoryBudget, megabytes
from napari_radreport.io.nifti import is_nifti_path, read_nifti
from napari_radreport.io.study import ImageData, Study, StudyReadError
from napari_radreport.io.xray import is_picture_path, make_xray_set, read_dicom_radiograph, read_picture

MAX_FOLDER_FILES = 20000
# Opening one DICOM file reads the headers of at most this many files beside it (the nearest by name),
# enough for a thin-slice whole-body series; a larger folder is opened as a folder.
MAX_SIBLING_HEADERS = 5000
PathLike = str | os.PathLike
# Errors a library raises on a malformed file; anything else (TypeError, AttributeError...) is a bug and
# propagates as it is.
_DATA_ERRORS = (ValueError, KeyError, IndexError, EOFError, OSError, OverflowError, struct.error, zlib.error)
_READER_LIBRARIES = {"pydicom", "nibabel", "PIL", "pylibjpeg", "openjpeg", "libjpeg", "rle"}


def _normalise(source: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(source, (str, os.PathLike)):
        paths = [Path(source)]
    else:
        paths = [Path(p) for p in source]
    if not paths:
        raise StudyReadError("no input: give a file, a folder or a list of files")
    for p in paths:
        if not p.exists():
            raise StudyReadError(f"{p}: no such file or folder")
    return paths


def _folder_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith("."):
                files.append(Path(root) / name)
                if len(files) > MAX_FOLDER_FILES:
                    raise StudyReadError(
                        f"{folder}: more than {MAX_FOLDER_FILES} files; open a series folder instead"
                    )
    return files


def _dicom_headers(paths: list[Path]) -> tuple[list[DicomHeader], list[str]]:
    """Headers of the readable DICOM files; unreadable ones become notes, not failures."""
    headers, skipped = [], []
    for p in paths:
        try:
            headers.append(read_header(p))
        except StudyReadError as exc:
            skipped.append(str(exc))
    return headers, skipped


def _from_dicom(headers: list[DicomHeader], pictures: list[Path], origin: str, series,
                order: Sequence[Path] | None = None, budget: MemoryBudget | None = None,
                allow_mixed_patients: bool = False) -> Study:
    """Decide between a volume and a radiograph set among DICOM objects (and pictures)."""
    from napari_radreport.io.dicom_multiframe import read_enhanced
    from napari_radreport.io.dicom_series import read_slice_series

    headers, duplicates = unique_instances(headers)
    refused = [(h, h.non_image_reason()) for h in headers]
    images = [h for h, reason in refused if reason is None]
    slices = [h for h in images if h.is_volume_slice]
    enhanced = [h for h in images if h.n_frames > 1 and not h.is_radiograph]
    # Slices whose position or orientation is present but unusable (text, NaN, a zero orientation)
    # are never placed, nor shown as flat pictures.
    misplaced = [h for h in images if h.geometry_problem and h.n_frames <= 1 and not h.is_radiograph]
    taken = {id(h) for h in slices} | {id(h) for h in enhanced} | {id(h) for h in misplaced}
    radiographs = [h for h in images if id(h) not in taken]
    if misplaced and not (slices or enhanced or radiographs or pictures):
        first = misplaced[0]
        others = f" (and {len(misplaced) - 1} more image(s) like it)" if len(misplaced) > 1 else ""
        raise StudyReadError(f"{first.path}: {first.geometry_problem}; the image cannot be placed{others}")
    left_out = (f"{len(misplaced)} image(s) with an invalid position or orientation not opened (e.g. "
                f"{Path(misplaced[0].path).name}: {misplaced[0].geometry_problem})") if misplaced else None

    if slices or enhanced:
        if pictures:
            raise StudyReadError(f"{origin}: mixes CT/MR slices with PNG/JPEG pictures; open them separately")
        if slices:
            study = read_slice_series(slices, series=series, budget=budget,
                                      allow_mixed_patients=allow_mixed_patients)
        elif len(enhanced) == 1:
            study = read_enhanced(enhanced[0], budget=budget)
        else:
            raise StudyReadError(f"{origin}: {len(enhanced)} multi-frame objects; open one file at a time")
        if enhanced and slices:
            study.notes.append(f"{len(enhanced)} multi-frame object(s) beside the slices were not opened")
        skipped_other = len(radiographs) + len(headers) - len(images)
        if skipped_other:
            study.notes.append(f"{skipped_other} non-volume DICOM object(s) in the input were not opened")
        if duplicates:
            study.notes.append(f"{duplicates} duplicate file(s) of the same SOP instance ignored")
        if left_out:
            study.warnings.append(left_out)
        return study
    if radiographs or pictures:
        study = _xray_set(radiographs, pictures, order, budget, origin=origin,
                          allow_mixed_patients=allow_mixed_patients)
        if left_out:
            study.warnings.append(left_out)
        return study
    reasons = sorted({f"{Path(h.path).name}: {reason}" for h, reason in refused if reason})
    if len(headers) == 1:
        raise StudyReadError(
            f"{headers[0].path}: {refused[0][1]}; napari-radreport opens CT series and radiographs"
        )
    raise StudyReadError(f"{origin}: no image to open ({len(headers)} DICOM objects, e.g. {reasons[0]})")


def _xray_set(radiographs: list[DicomHeader], pictures: list[Path],
              order: Sequence[Path] | None = None, budget: MemoryBudget | None = None, *, origin: str = "",
              allow_mixed_patients: bool = False) -> Study:
    """A radiograph set in the order of ``order`` (the files as given), else in path order (folders).

    Its files must be of one patient (``check_one_patient``), checked on the headers before any pixel is
    read."""
    rank = {str(p): i for i, p in enumerate(order or [])}

    def position(item: DicomHeader | Path) -> tuple[int, str]:
        path = str(item) if isinstance(item, Path) else item.path
        return (rank.get(path, -1), path)

    items: list[DicomHeader | Path] = sorted([*radiographs, *pictures], key=position)
    who = [(str(item), None) if isinstance(item, Path) else (item.path, item.patient) for item in items]
    patients, patient_warnings = check_one_patient(who, origin or who[0][0], allow=allow_mixed_patients)
    images: list[ImageData] = []
    notes: list[str] = []
    warnings: list[str] = []
    budget = budget if budget is not None else MemoryBudget.resolve()
    for item in items:
        image, image_notes, image_warnings = (read_picture(item, budget=budget) if isinstance(item, Path)
                                              else read_dicom_radiograph(item, budget=budget))
        images.append(image)
        notes.extend(image_notes)
        warnings.extend(image_warnings)
    source = tuple(im.source_files[0] for im in images)
    non_xray = {im.modality for im in images if im.modality and im.modality not in RADIOGRAPH_MODALITIES}
    study = make_xray_set(images, notes, source, patient_warnings + warnings)
    if patients:
        study.extra["patients"] = patients
    if non_xray:
        study.kind = "image"
        study.notes.append(
            f"{'/'.join(sorted(non_xray))} image(s), not radiographs: opened as plain 2-D images"
        )
    return study


def _load_folder(folder: Path, series, budget: MemoryBudget, allow_mixed_patients: bool = False) -> Study:
    files = _folder_files(folder)
    niftis = [p for p in files if is_nifti_path(p)]
    pictures = [p for p in files if is_picture_path(p)]
    known = set(niftis) | set(pictures)
    candidates = [p for p in files if p not in known and looks_like_dicom(p)]
    if candidates:
        headers, skipped = _dicom_headers(candidates)
        headers = [h for h in headers if not h.is_dicomdir]
        if headers:
            study = _from_dicom(headers, pictures, str(folder), series, budget=budget,
                                allow_mixed_patients=allow_mixed_patients)
            if skipped:
                study.notes.append(f"{len(skipped)} unreadable file(s) skipped, e.g. {skipped[0]}")
            return study
    if pictures:
        return _xray_set([], pictures, budget=budget)
    if len(niftis) == 1:
        return read_nifti(niftis[0], budget=budget)
    if niftis:
        raise StudyReadError(f"{folder}: holds {len(niftis)} NIfTI files; open one of them")
    raise StudyReadError(f"{folder}: no DICOM, NIfTI, PNG or JPEG images found ({len(files)} files)")


def _siblings(path: Path) -> tuple[list[Path], int]:
    """DICOM files beside ``path``: of the other files in its folder, the MAX_SIBLING_HEADERS nearest to it in
    name order (a series is usually named in order); and how many other files the folder holds."""
    names = []
    with os.scandir(path.parent) as entries:
        for entry in entries:
            try:
                if entry.name != path.name and entry.is_file():
                    names.append(entry.name)
            except OSError:
                continue
    names.sort()
    start = max(0, min(bisect.bisect_left(names, path.name) - MAX_SIBLING_HEADERS // 2,
                       len(names) - MAX_SIBLING_HEADERS))
    nearest = [path.parent / name for name in names[start:start + MAX_SIBLING_HEADERS]]
    return [p for p in nearest if looks_like_dicom(p)], len(names)


def _load_single_dicom(path: Path, series, budget: MemoryBudget, allow_mixed_patients: bool = False) -> Study:
    header = read_header(path)
    if header.is_dicomdir:
        return _load_folder(path.parent, series, budget, allow_mixed_patients)
    reason = header.non_image_reason()
    if reason is not None:
        raise StudyReadError(f"{path}: {reason}; napari-radreport opens CT series and radiographs")
    if header.is_volume_slice:
        # One file of a series: read its siblings (a bounded number) and keep the series it belongs to.
        from napari_radreport.io.dicom_series import group_slices

        siblings, in_folder = _siblings(path)
        headers, _ = _dicom_headers(siblings)
        # The opened file first, so that it wins over other copies of the same instance.
        slices, _ = unique_instances([header] + [h for h in headers if h.is_volume_slice])
        groups = group_slices(slices)
        mine = next(i for i, g in enumerate(groups) if any(h.path == header.path for h in g.headers))
        study = _from_dicom(slices, [], str(path), series if series is not None else mine, budget=budget,
                            allow_mixed_patients=allow_mixed_patients)
        if in_folder > MAX_SIBLING_HEADERS:
            study.notes.append(
                f"the folder holds {in_folder + 1:,} files: only the {MAX_SIBLING_HEADERS:,} nearest to "
                f"{path.name} by name were read; open the folder to read them all"
            )
        return study
    return _from_dicom([header], [], str(path), series, budget=budget)


def load_study(source: PathLike | Sequence[PathLike], *, series: str | int | None = None,
               modality: str | None = None, max_bytes: int | None = None,
               allow_mixed_patients: bool = False) -> Study:
    """Open a NIfTI file, a DICOM series (folder, files or one file of it) or a radiograph set.

    ``series`` picks another series than the main one (index or SeriesInstanceUID); ``modality`` overrides
    the NIfTI modality guess; ``max_bytes`` caps the pixel arrays built (default $RADREPORT_MAX_VOLUME_MB,
    else half of the available memory). Raises StudyReadError with a one-line reason naming the file;
    a library's error on a malformed file becomes one too (the original as its ``__cause__``).
    A radiograph set or series whose DICOM files are of more than one patient raises ``MixedPatients`` (a
    StudyReadError) unless ``allow_mixed_patients``, which opens it with a warning and the patients' IDs and
    files in ``study.extra["patients"]`` (docs/inputs.md, One patient).
    """
    paths = _normalise(source)
    budget = MemoryBudget.resolve(max_bytes)
    origin = str(paths[0]) if len(paths) == 1 else f"{paths[0]} (+{len(paths) - 1} files)"
    try:
        study = _load(paths, series, modality, budget, allow_mixed_patients)
    except StudyReadError:
        raise
    except MemoryError as exc:
        raise StudyReadError(
            f"{origin}: out of memory while reading it (memory budget {megabytes(budget.limit)}, "
            f"{budget.source}); free memory or lower the budget"
        ) from exc
    except Exception as exc:
        if not (isinstance(exc, _DATA_ERRORS) or type(exc).__module__.split(".")[0] in _READER_LIBRARIES):
            raise
        raise StudyReadError(f"{origin}: could not be read ({type(exc).__name__}: {one_line(exc)})") from exc
    study.extra["input"] = [str(p) for p in paths]
    return study


def _load(paths: list[Path], series: str | int | None, modality: str | None, budget: MemoryBudget,
          allow_mixed_patients: bool = False) -> Study:
    if len(paths) == 1:
        path = paths[0]
        if path.is_dir():
            return _load_folder(path, series, budget, allow_mixed_patients)
        if is_nifti_path(path):
            return read_nifti(path, modality=modality, budget=budget)
        if is_picture_path(path):
            return _xray_set([], [path], budget=budget)
        if looks_like_dicom(path):
            return _load_single_dicom(path, series, budget, allow_mixed_patients)
        raise StudyReadError(
            f"{path}: unsupported file type (expected DICOM, NIfTI .nii/.nii.gz, PNG or JPEG)"
        )
    if any(p.is_dir() for p in paths):
        raise StudyReadError(f"{next(p for p in paths if p.is_dir())}: give one folder, or a list of files")
    if any(is_nifti_path(p) for p in paths):
        raise StudyReadError(f"{next(p for p in paths if is_nifti_path(p))}: open one NIfTI file at a time")
    pictures = [p for p in paths if is_picture_path(p)]
    others = [p for p in paths if p not in pictures]
    unknown = [p for p in others if not looks_like_dicom(p)]
    if unknown:
        raise StudyReadError(f"{unknown[0]}: unsupported file type (expected DICOM, PNG or JPEG)")
    headers = [read_header(p) for p in others]
    return _from_dicom(headers, pictures, f"{paths[0]} (+{len(paths) - 1} files)", series, order=paths,
                       budget=budget, allow_mixed_patients=allow_mixed_patients)
