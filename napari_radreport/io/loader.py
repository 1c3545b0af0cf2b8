"""``load_study``: one entry point that decides what the input is and calls the right reader."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from napari_radreport.io.dicom_headers import (
    RADIOGRAPH_MODALITIES,
    DicomHeader,
    looks_like_dicom,
    read_header,
    unique_instances,
)
from napari_radreport.io.nifti import is_nifti_path, read_nifti
from napari_radreport.io.study import ImageData, Study, StudyReadError
from napari_radreport.io.xray import is_picture_path, make_xray_set, read_dicom_radiograph, read_picture

MAX_FOLDER_FILES = 20000
PathLike = str | os.PathLike


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


def _from_dicom(
    headers: list[DicomHeader], pictures: list[Path], origin: str, series, order: Sequence[Path] | None = None
) -> Study:
    """Decide between a volume and a radiograph set among DICOM objects (and pictures)."""
    from napari_radreport.io.dicom_multiframe import read_enhanced
    from napari_radreport.io.dicom_series import read_slice_series

    headers, duplicates = unique_instances(headers)
    refused = [(h, h.non_image_reason()) for h in headers]
    images = [h for h, reason in refused if reason is None]
    slices = [h for h in images if h.is_volume_slice]
    enhanced = [h for h in images if h.n_frames > 1 and not h.is_radiograph]
    taken = {id(h) for h in slices} | {id(h) for h in enhanced}
    radiographs = [h for h in images if id(h) not in taken]

    if slices or enhanced:
        if pictures:
            raise StudyReadError(f"{origin}: mixes CT/MR slices with PNG/JPEG pictures; open them separately")
        if slices:
            study = read_slice_series(slices, series=series)
        elif len(enhanced) == 1:
            study = read_enhanced(enhanced[0])
        else:
            raise StudyReadError(f"{origin}: {len(enhanced)} multi-frame objects; open one file at a time")
        if enhanced and slices:
            study.notes.append(f"{len(enhanced)} multi-frame object(s) beside the slices were not opened")
        skipped_other = len(radiographs) + len(headers) - len(images)
        if skipped_other:
            study.notes.append(f"{skipped_other} non-volume DICOM object(s) in the input were not opened")
        if duplicates:
            study.notes.append(f"{duplicates} duplicate file(s) of the same SOP instance ignored")
        return study
    if radiographs or pictures:
        return _xray_set(radiographs, pictures, order)
    reasons = sorted({f"{Path(h.path).name}: {reason}" for h, reason in refused if reason})
    if len(headers) == 1:
        raise StudyReadError(
            f"{headers[0].path}: {refused[0][1]}; napari-radreport opens CT series and radiographs"
        )
    raise StudyReadError(f"{origin}: no image to open ({len(headers)} DICOM objects, e.g. {reasons[0]})")


def _xray_set(radiographs: list[DicomHeader], pictures: list[Path],
              order: Sequence[Path] | None = None) -> Study:
    """A radiograph set in the order of ``order`` (the files as given), else in path order (folders)."""
    rank = {str(p): i for i, p in enumerate(order or [])}

    def position(item: DicomHeader | Path) -> tuple[int, str]:
        path = str(item) if isinstance(item, Path) else item.path
        return (rank.get(path, -1), path)

    items: list[DicomHeader | Path] = sorted([*radiographs, *pictures], key=position)
    images: list[ImageData] = []
    notes: list[str] = []
    for item in items:
        image, image_notes = read_picture(item) if isinstance(item, Path) else read_dicom_radiograph(item)
        images.append(image)
        notes.extend(image_notes)
    source = tuple(im.source_files[0] for im in images)
    non_xray = {im.modality for im in images if im.modality and im.modality not in RADIOGRAPH_MODALITIES}
    study = make_xray_set(images, notes, source)
    if non_xray:
        study.kind = "image"
        study.notes.append(
            f"{'/'.join(sorted(non_xray))} image(s), not radiographs: opened as plain 2-D images"
        )
    return study


def _load_folder(folder: Path, series) -> Study:
    files = _folder_files(folder)
    niftis = [p for p in files if is_nifti_path(p)]
    pictures = [p for p in files if is_picture_path(p)]
    known = set(niftis) | set(pictures)
    candidates = [p for p in files if p not in known and looks_like_dicom(p)]
    if candidates:
        headers, skipped = _dicom_headers(candidates)
        headers = [h for h in headers if not h.is_dicomdir]
        if headers:
            study = _from_dicom(headers, pictures, str(folder), series)
            if skipped:
                study.notes.append(f"{len(skipped)} unreadable file(s) skipped, e.g. {skipped[0]}")
            return study
    if pictures:
        return _xray_set([], pictures)
    if len(niftis) == 1:
        return read_nifti(niftis[0])
    if niftis:
        raise StudyReadError(f"{folder}: holds {len(niftis)} NIfTI files; open one of them")
    raise StudyReadError(f"{folder}: no DICOM, NIfTI, PNG or JPEG images found ({len(files)} files)")


def _load_single_dicom(path: Path, series) -> Study:
    header = read_header(path)
    if header.is_dicomdir:
        return _load_folder(path.parent, series)
    reason = header.non_image_reason()
    if reason is not None:
        raise StudyReadError(f"{path}: {reason}; napari-radreport opens CT series and radiographs")
    if header.is_volume_slice:
        # One file of a series: read its siblings and keep the series this file belongs to.
        from napari_radreport.io.dicom_series import group_slices

        siblings = [p for p in sorted(path.parent.iterdir())
                    if p != path and p.is_file() and looks_like_dicom(p)]
        headers, _ = _dicom_headers(siblings)
        # The opened file first, so that it wins over other copies of the same instance.
        slices, _ = unique_instances([header] + [h for h in headers if h.is_volume_slice])
        groups = group_slices(slices)
        mine = next(i for i, g in enumerate(groups) if any(h.path == header.path for h in g.headers))
        return _from_dicom(slices, [], str(path), series if series is not None else mine)
    return _from_dicom([header], [], str(path), series)


def load_study(
    source: PathLike | Sequence[PathLike], *, series: str | int | None = None, modality: str | None = None
) -> Study:
    """Open a NIfTI file, a DICOM series (folder, files or one file of it) or a radiograph set.

    ``series`` picks another series than the main one (index or SeriesInstanceUID);
    ``modality`` overrides the NIfTI modality guess. Raises StudyReadError with a one-line reason.
    """
    paths = _normalise(source)
    study = _load(paths, series, modality)
    study.extra["input"] = [str(p) for p in paths]
    return study


def _load(paths: list[Path], series: str | int | None, modality: str | None) -> Study:
    if len(paths) == 1:
        path = paths[0]
        if path.is_dir():
            return _load_folder(path, series)
        if is_nifti_path(path):
            return read_nifti(path, modality=modality)
        if is_picture_path(path):
            return _xray_set([], [path])
        if looks_like_dicom(path):
            return _load_single_dicom(path, series)
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
    return _from_dicom(headers, pictures, f"{paths[0]} (+{len(paths) - 1} files)", series, order=paths)
