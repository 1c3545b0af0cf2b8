"""Grounding on radiographs: each radiograph's place in the model's input against the processor's own
pixels, a heatmap peak back in the pixels it came from, and the engine locating an answer's sentence on the
radiograph whose pixels it depends on."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from napari_radreport.grounding.location import Location, peak_words
from napari_radreport.grounding.radiographs import location_from_radiograph_heatmap
from napari_radreport.io.study import ImageData, Study
from napari_radreport.modeling.processor import (
    CLIP_MEAN,
    CLIP_STD,
    Preprocess,
    radiograph_grids,
    radiographs_to_pixels,
)

SHAPES = [(60, 44), (36, 50), (48, 20)]  # three radiographs of different sizes and aspect ratios


def _ramp_set(axis: int, shapes=SHAPES) -> Study:
    """Radiographs whose every pixel holds its own row (axis 0) or column (axis 1) index, shown through a
    window wide enough that the processor's intensity step is linear."""
    images = []
    for n, shape in enumerate(shapes):
        ramp = np.indices(shape)[axis].astype(np.float32)
        images.append(ImageData(array=ramp, spacing=(0.2, 0.2), modality="DX", label=f"view{n}",
                                file_window=(100.0, 400.0)))
    return Study(kind="xray_set", images=images)


@pytest.mark.parametrize("stitch", ["horizontal", "separate"])
def test_each_radiographs_grid_is_where_the_processor_puts_its_pixels(stitch):
    spec = Preprocess(target_shape=(3, 64, 64), intensity="clip_normalize", stitch=stitch)
    recovered = []
    for axis in (0, 1):
        pixels = radiographs_to_pixels(_ramp_set(axis), spec)[:, 0].numpy()
        recovered.append((pixels * CLIP_STD[0] + CLIP_MEAN[0]) * 400.0 - 100.0)  # back to the ramp's value
    grids = radiograph_grids(_ramp_set(0), spec)
    assert [g.model_image for g in grids] == ([0, 0, 0] if stitch == "horizontal" else [0, 1, 2])
    checked = 0
    for grid in grids:
        inside = grid.field_of_view()
        # away from the edges, where the resampling mixes in padding or the next radiograph
        interior = binary_erosion(inside, iterations=2)
        for row, column in np.argwhere(interior):
            expected = grid.study_index((row, column))
            got = [recovered[axis][grid.model_image, row, column] for axis in (0, 1)]
            np.testing.assert_allclose(got, expected, atol=0.05)
            checked += 1
        assert inside.sum() > 0
    assert checked > 300


def test_a_heatmap_peak_lands_in_the_radiograph_and_pixel_it_came_from():
    spec = Preprocess(target_shape=(3, 64, 64), intensity="clip_normalize", stitch="horizontal")
    study = _ramp_set(0)
    grids = radiograph_grids(study, spec)
    target = (30.0, 7.0)  # row, column of the third radiograph
    at = np.round(grids[2].matrix @ np.asarray(target) + grids[2].offset).astype(int)
    heat = np.zeros((1, 64, 64), np.float32)
    heat[0, at[0], at[1]] = 3.0
    location = location_from_radiograph_heatmap(heat, grids, "test")
    assert location.on_radiograph and location.image_index == 2
    assert np.linalg.norm(np.asarray(location.peak_index) - target) < 1.5  # within a model pixel (~1.3 px)
    (r0, c0), (r1, c1) = location.box_pixel
    assert r0 <= location.peak_index[0] <= r1 and c0 <= location.peak_index[1] <= c1
    assert location.mask.shape == SHAPES[2] and location.mask.any()
    assert location.heatmap.shape == SHAPES[2]
    # outside every radiograph (the square's padding) there is nothing to point at
    padding = ~np.logical_or.reduce([g.field_of_view() for g in grids])
    assert padding.any()
    heat = np.where(padding, 1.0, 0.0)[None].astype(np.float32)
    assert location_from_radiograph_heatmap(heat, grids, "test", smoothing=0) is None


def test_a_radiograph_location_goes_to_json_and_back():
    location = Location("attribution:gradient_x_input", None, None, (12.25, 40.5), image_index=1,
                        box_pixel=((3.0, 30.0), (20.0, 51.0)))
    data = location.as_dict()
    assert data == {"method": "attribution:gradient_x_input", "image_index": 1, "peak_pixel_rc": [12.2, 40.5],
                    "box_pixel_rc": [[3.0, 30.0], [20.0, 51.0]]}
    back = Location.from_dict(data)
    assert back.on_radiograph and back.image_index == 1 and back.box_pixel == ((3.0, 30.0), (20.0, 51.0))
    assert back.peak_lps_mm is None
    assert peak_words(data) == "row 12, column 40 of radiograph 2"


# -- the engine, on a tiny radiograph model ---------------------------------------------------------------
def _dark_pair_with_a_patch() -> tuple[Study, tuple[slice, slice]]:
    """Two radiographs: the first black, the second black but for one bright patch (the only pixels that
    differ from black, so the only ones gradient x input can credit)."""
    first = np.zeros((60, 40), np.float32)
    second = np.zeros((50, 44), np.float32)
    patch = (slice(12, 24), slice(26, 38))
    second[patch] = 100.0
    images = [ImageData(array=a, spacing=(0.2, 0.2), modality="DX", label=f"view{n}",
                        file_window=(50.0, 100.0)) for n, a in enumerate((first, second))]
    return Study(kind="xray_set", images=images), patch


@pytest.fixture(scope="module")
def xray_engine(tiny_xray_model):
    from tiny_models import loaded_engine

    yield from loaded_engine(tiny_xray_model)


def test_an_answer_is_located_on_the_radiograph_and_the_pixels_it_depends_on(xray_engine):
    study, (rows, columns) = _dark_pair_with_a_patch()
    sentences = xray_engine.ground_answer(study, "Is there an effusion?", "There is a left pleural effusion.")
    (sentence,) = sentences
    where = sentence.location
    assert sentence.finding == "pleural effusion" and where is not None and where.on_radiograph
    assert where.image_index == 1 and where.method == "attribution:gradient_x_input"
    margin = 2 * 50 / 32 * 2  # two model pixels of smoothing, in the radiograph's pixels
    row, column = where.peak_index
    assert rows.start - margin <= row <= rows.stop - 1 + margin
    assert columns.start - margin <= column <= columns.stop - 1 + margin
    (r0, c0), (r1, c1) = where.box_pixel
    assert r0 < rows.stop and r1 >= rows.start and c0 < columns.stop and c1 >= columns.start
    assert sentence.as_dict()["location"]["image_index"] == 1


def test_a_radiograph_model_grounds_with_attribution_only(xray_engine):
    study, _ = _dark_pair_with_a_patch()
    with pytest.raises(ValueError, match="no grounding head"):
        xray_engine.ground_answer(study, "Is there an effusion?", "There is an effusion.", method="head")
    black = Study(kind="xray_set", images=[ImageData(array=np.zeros((40, 40), np.float32), spacing=(0.2, 0.2),
                                                     modality="DX", file_window=(50.0, 100.0))])
    (sentence,) = xray_engine.ground_answer(black, "Is there an effusion?", "There is an effusion.")
    assert sentence.location is None and "does not depend on the image" in sentence.why_none


def test_a_sentence_about_a_real_radiograph_is_located_in_its_pixels(xray_engine, shared_data):
    from napari_radreport import load_study

    study = load_study(shared_data / "xray" / "nih_00000001_000_cardiomegaly.png")
    (sentence,) = xray_engine.ground_answer(study, "Is the heart enlarged?", "The heart is enlarged.")
    where = sentence.location
    assert sentence.finding == "cardiomegaly" and where is not None and where.image_index == 0
    height, width = study.images[0].array.shape
    (r0, c0), (r1, c1) = where.box_pixel
    assert 0 <= r0 <= where.peak_index[0] <= r1 < height and 0 <= c0 <= where.peak_index[1] <= c1 < width
    assert where.heatmap.shape == (height, width)


def test_the_sr_carries_a_radiograph_location_as_scoord_on_its_instance(cr_monochrome1, shared_data,
                                                                         tmp_path):
    import pydicom

    from napari_radreport import load_study
    from napari_radreport.export import ReportRecord, StudyReference, export_report

    source = cr_monochrome1
    study = load_study(source)
    height, width = study.images[0].array.shape
    sentence = "Small right pleural effusion."
    location = {"method": "test", "image_index": 0, "peak_pixel_rc": [height - 40.0, 30.0],
                "box_pixel_rc": [[height - 60.0, 10.0], [height - 21.0, 55.0]]}
    text = f"Findings:\n{sentence} Heart size is normal.\n\nImpression:\nSmall right pleural effusion."
    record = ReportRecord(final_text=text, ai_draft=text, study=StudyReference.from_study(study),
                          grounding=[{"section": "findings", "text": sentence, "finding": "pleural effusion",
                                      "location": location}])
    ds = pydicom.dcmread(export_report(record, tmp_path / "report.dcm"))
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR: SCOORD needs no 3D IOD
    header = pydicom.dcmread(source, stop_before_pixels=True)
    findings = next(i for i in ds.ContentSequence if i.ConceptNameCodeSequence[0].CodeMeaning == "Findings")
    (located,) = [i for i in findings.ContentSequence if i.ValueType == "TEXT" and i.TextValue == sentence]
    coordinates = {i.GraphicType: np.asarray(i.GraphicData, float).reshape(-1, 2)
                   for i in located.ContentSequence}
    for item in located.ContentSequence:
        assert item.ValueType == "SCOORD" and item.RelationshipType == "INFERRED FROM"
        (image,) = item.ContentSequence
        assert image.ValueType == "IMAGE" and image.RelationshipType == "SELECTED FROM"
        reference = image.ReferencedSOPSequence[0]
        assert reference.ReferencedSOPInstanceUID == header.SOPInstanceUID
        assert reference.ReferencedSOPClassUID == header.SOPClassUID
    np.testing.assert_allclose(coordinates["POINT"], [[30.5, height - 39.5]])  # (column, row), pixel centre
    outline = coordinates["POLYLINE"]
    assert outline[0].tolist() == outline[-1].tolist()  # closed
    np.testing.assert_allclose(outline.min(axis=0), [10.0, height - 60.0])
    np.testing.assert_allclose(outline.max(axis=0), [56.0, height - 20.0])
    # a picture (PNG) has no instance to point at: its locations stay in the JSON
    png = load_study(shared_data / "xray" / "nih_00000001_000_cardiomegaly.png")
    assert StudyReference.from_study(png).radiograph_files == [""]


def test_a_peak_at_a_radiographs_edge_is_inside_its_box():
    spec = Preprocess(target_shape=(3, 32, 32), intensity="clip_normalize", stitch="horizontal")
    # taller than wide: no padding above, so the first model row's centre lies 30 pixels into the radiograph,
    # and the mask resampled onto the radiograph stops there (nothing of the model lies above row 0)
    study = Study(kind="xray_set", images=[ImageData(array=np.zeros((1955, 1841), np.float32),
                                                     spacing=(0.15, 0.15), modality="CR")])
    (grid,) = radiograph_grids(study, spec)
    heat = np.zeros((1, 32, 32), np.float32)
    heat[0, 0, 16] = 1.0
    location = location_from_radiograph_heatmap(heat, [grid], "test", smoothing=0)
    (r0, c0), (r1, c1) = location.box_pixel
    assert r0 <= location.peak_index[0] <= r1 and c0 <= location.peak_index[1] <= c1
