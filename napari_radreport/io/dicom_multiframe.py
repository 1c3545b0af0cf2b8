"""Enhanced (multi-frame) CT/MR objects: one file whose frames carry their own geometry."""

from __future__ import annotations

import numpy as np

from napari_radreport.io.dicom_headers import DicomHeader
from napari_radreport.io.dicom_pixels import read_pixels
from napari_radreport.io.dicom_volume import Frame, VolumeGeometry, assemble_volume
from napari_radreport.io.study import SeriesInfo, Study, StudyReadError, kind_for_modality


def _item(groups, name: str):
    """First item of a functional group macro, or None."""
    seq = groups.get(name) if groups is not None else None
    return seq[0] if seq else None


def _group_value(per_frame, shared, macro: str, keyword: str):
    for source in (per_frame, shared):
        item = _item(source, macro)
        if item is not None and keyword in item:
            return item.get(keyword)
    return None


def read_enhanced(header: DicomHeader) -> Study:
    """Read an enhanced multi-frame object, or refuse it clearly when its frames have no positions."""
    path = header.path
    if not header.has_per_frame_groups:
        raise StudyReadError(
            f"{path}: multi-frame {header.modality or 'DICOM'} object ({header.n_frames} frames) "
            "without per-frame positions (cine, secondary capture or dose grid): "
            "not a volume napari-radreport can place"
        )
    pixels, ds = read_pixels(path)
    shared = ds.SharedFunctionalGroupsSequence[0] if ds.get("SharedFunctionalGroupsSequence") else None
    per_frame = ds.PerFrameFunctionalGroupsSequence
    if pixels.ndim == 2:
        pixels = pixels[None]
    if pixels.ndim != 3 or pixels.shape[0] != len(per_frame):
        raise StudyReadError(f"{path}: {len(per_frame)} frame descriptions for pixel data "
                             f"of shape {pixels.shape}")

    frames: list[Frame] = []
    orientation = None
    pixel_spacing = None
    for i, item in enumerate(per_frame):
        position = _group_value(item, shared, "PlanePositionSequence", "ImagePositionPatient")
        ori = _group_value(item, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        if position is None or ori is None:
            raise StudyReadError(f"{path}: frame {i + 1} has no plane position or orientation")
        ori = tuple(float(v) for v in ori)
        if orientation is None:
            orientation = ori
        elif not np.allclose(orientation, ori, atol=1e-3):
            raise StudyReadError(f"{path}: frames have different orientations (a multi-planar object)")
        spacing = _group_value(item, shared, "PixelMeasuresSequence", "PixelSpacing")
        if spacing is not None and pixel_spacing is None and all(float(v) > 0 for v in spacing):
            pixel_spacing = (float(spacing[0]), float(spacing[1]))
        slope = _group_value(item, shared, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _group_value(item, shared, "PixelValueTransformationSequence", "RescaleIntercept")
        frames.append(
            Frame(
                position=np.asarray([float(v) for v in position]),
                order_key=(float(i),),
                slope=float(slope if slope is not None else header.rescale_slope),
                intercept=float(intercept if intercept is not None else header.rescale_intercept),
                load=lambda i=i: pixels[i],
                source=f"{path} frame {i + 1}",
            )
        )
    thickness = _group_value(per_frame[0], shared, "PixelMeasuresSequence", "SliceThickness")
    geometry = VolumeGeometry(
        orientation=orientation,  # type: ignore[arg-type]
        pixel_spacing=pixel_spacing,
        rows=header.rows,
        columns=header.columns,
        bits_stored=header.bits_stored,
        slice_thickness=float(thickness) if thickness not in (None, "") else None,
    )
    label = header.series_description or path
    image, warnings, notes = assemble_volume(frames, geometry, modality=header.modality, tags=header.tags,
                                             label=label)
    notes.insert(0, f"enhanced multi-frame object: {len(frames)} frames in one file")
    info = SeriesInfo(
        index=0,
        uid=header.series_uid,
        description=header.series_description,
        modality=header.modality,
        n_images=len(frames),
        shape=tuple(image.array.shape),
        role="volume",
        chosen=True,
    )
    kind = kind_for_modality(header.modality)
    return Study(kind=kind, images=[image], source=(path,), warnings=warnings, notes=notes, series=[info])
