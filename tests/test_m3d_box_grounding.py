"""M3D-LaMed's boxes as locations: a box the model writes becomes a patient-space location, a box drawn in
napari becomes the model's region question, and a model that writes boxes can be asked where a finding is."""

from __future__ import annotations

import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_radreport.engine.decoding import GenerationSettings  # noqa: E402
from napari_radreport.modeling.m3d_boxes import Box, boxes_with_spans, format_box, parse_boxes  # noqa: E402

import m3d_reference as ref  # noqa: E402


@pytest.fixture(scope="module")
def m3d_engine(tmp_path_factory, abdomen_nifti):
    from napari_radreport import load_study
    from napari_radreport.engine import Engine
    from napari_radreport.modeling.m3d import convert_m3d

    folder = tmp_path_factory.mktemp("m3d_boxes")
    ref.write_tiny_m3d_checkpoint(folder / "m3d", "phi3", segmentation=False)
    engine = Engine()
    engine.allow_out_of_scope = True  # a tiny random model: the scope check has nothing to say about it
    engine.load(convert_m3d(folder / "m3d", folder / "out"))
    yield types.SimpleNamespace(engine=engine, study=load_study(abdomen_nifti))
    engine.shutdown()


def _grid(m3d_engine):
    from napari_radreport.modeling.processor import model_grid

    return model_grid(m3d_engine.study, m3d_engine.engine.runner.family.preprocess)


def test_boxes_are_read_with_or_without_markers_and_a_non_box_list_stays_text():
    shape = (32, 256, 256)
    text = ("The liver [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]. "
            "A cyst <bx_start>[0.0, 0.25, 0.5, 0.5, 0.75, 1.0]<bx_end>. "
            "Not a box: [0.5, 0.2, 0.3, 0.4, 0.5, 0.6] nor [1, 2, 3, 4, 5, 6].")
    found = boxes_with_spans(text, shape)
    assert [text[a:b] for (a, b), _ in found] == ["[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]",
                                                  "<bx_start>[0.0, 0.25, 0.5, 0.5, 0.75, 1.0]<bx_end>"]
    assert [box for _, box in found] == parse_boxes(text[:found[1][0][1]], shape, markers=False)


def test_a_box_the_model_writes_locates_its_sentence_in_patient_space(m3d_engine):
    grid = _grid(m3d_engine)
    box = Box((2, 10, 15), (5, 30, 40))  # the tiny model's grid is 8 x 64 x 64
    answer = f"Here it is {format_box(box, grid.model_shape)}. Nothing else."
    first, second = m3d_engine.engine.ground_answer(m3d_engine.study, "Where is the liver?", answer)
    assert second.location is None
    location = first.location
    assert location.method == "m3d-box" and first.finding == "region"
    # the location's voxels are the box's on the model grid (inside the study's field of view)
    expected = np.zeros(grid.model_shape, bool)
    expected[2:6, 10:31, 15:41] = True
    np.testing.assert_array_equal(location.model_mask, expected & grid.field_of_view())
    # its peak is the box's centre, put in patient space through the processor's geometry
    centre = np.argwhere(location.model_mask).mean(axis=0)
    np.testing.assert_allclose(location.peak_lps_mm, grid.patient(grid.study_index(centre)), atol=1e-6)
    low, high = np.array(location.box_lps_mm)
    assert np.all(low <= location.peak_lps_mm) and np.all(location.peak_lps_mm <= high)


def test_a_drawn_box_becomes_the_models_region_question_and_reads_back_as_the_same_voxels(m3d_engine):
    from napari_radreport.grounding.locate import location_from_model_box

    engine, study, grid = m3d_engine.engine, m3d_engine.study, _grid(m3d_engine)
    box = Box((1, 12, 20), (6, 50, 44))
    drawn = location_from_model_box(box.start, box.end, grid, "drawn")  # a box a user could draw there
    question = engine.region_question(study, *drawn.box_lps_mm)
    assert question.startswith("What is in the region <bx_start>[") and question.endswith("<bx_end>?")
    (back,) = parse_boxes(question, grid.model_shape)
    np.testing.assert_allclose(back.start, box.start, atol=0.0005 * max(grid.model_shape) + 1e-9)
    np.testing.assert_allclose(back.end, box.end, atol=0.0005 * max(grid.model_shape) + 1e-9)
    tokenizer = engine.runner.family.tokenizer
    ids = tokenizer(question, add_special_tokens=False)["input_ids"]
    assert {tokenizer.convert_tokens_to_ids(m) for m in ("<bx_start>", "<bx_end>")} <= set(ids)
    answer = engine.ask(study, question, settings=GenerationSettings(max_new_tokens=2))
    assert answer.n_tokens >= 1  # the model reads it like any question


def test_a_box_outside_the_study_is_one_clear_error(m3d_engine):
    from napari_radreport.engine import EngineError

    far = _grid(m3d_engine).patient(np.array([-500.0, -500.0, -500.0]))  # far before the first voxel
    with pytest.raises(EngineError, match="outside the part of the study the model sees"):
        m3d_engine.engine.region_question(m3d_engine.study, far - 5, far + 5)


def test_a_model_that_writes_boxes_is_asked_where_each_finding_is(m3d_engine):
    from napari_radreport.engine.grounding import BOX, BOX_ANSWER_TOKENS, NO_BOX, default_method

    engine = m3d_engine.engine
    assert default_method(engine.runner) == BOX  # no SegVol, no grounding head: it is asked for boxes
    (sentence,) = engine.ground_answer(m3d_engine.study, "Any nodule?", "A nodule in the right upper lobe.")
    grid = _grid(m3d_engine)
    # the tiny random model writes no numbers; what it wrote decides the location, read as the engine reads it
    runner = engine.runner
    question = runner.family.prompt_spec.tasks["locate_box"].format(phrase="right upper lobe nodule")
    settings = GenerationSettings(max_new_tokens=BOX_ANSWER_TOKENS)
    written = runner.generate(m3d_engine.study, question, settings)
    text = runner.family.tokenizer.decode(written.token_ids, skip_special_tokens=False)
    if boxes_with_spans(text, grid.model_shape):
        assert sentence.location.method == BOX
    else:
        assert sentence.location is None and sentence.why_none == NO_BOX


def test_a_model_without_box_tokens_is_not_asked_about_regions(abdomen_nifti):
    from napari_radreport import load_study
    from napari_radreport.engine import Engine, EngineError, default_model
    from napari_radreport.engine.grounding import BOX, Grounder, GroundingError

    if default_model() is None:
        pytest.skip("this checkout has no napari_radreport/demo_model")
    engine = Engine()
    engine.load()
    study = load_study(abdomen_nifti)
    with pytest.raises(EngineError, match="not trained to read boxes"):
        engine.region_question(study, (0, 0, 0), (10, 10, 10))
    with pytest.raises(GroundingError, match="does not write boxes"):
        Grounder(engine.runner, BOX)
    engine.shutdown()
