"""MedGemma grounding: attribution at its image tokens, mapped back through where each token lies (which
sampled slice or radiograph, which cell of it), checked against transformers' own Gemma 3 projector and the
processor's own pixels, then through the engine on a real CT and a real radiograph."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_radreport import load_study  # noqa: E402
from napari_radreport.grounding.support import grounding_refusal  # noqa: E402
from napari_radreport.io.study import ImageData, Study  # noqa: E402
from napari_radreport.modeling.medgemma import sample_slices, with_prior  # noqa: E402

from tiny_models import loaded_engine, write_tiny_gemma3  # noqa: E402


@pytest.fixture(scope="module")
def gemma(tmp_path_factory):
    """A tiny Gemma 3 (32 x 32 pictures, 4 x 4 patches pooled to 2 x 2 tokens) reading at most five slices,
    each as PNG (lossless, so that the processor's pixels can be read back)."""
    folder = write_tiny_gemma3(tmp_path_factory.mktemp("models") / "tiny-gemma3")
    config = json.loads((folder / "config.json").read_text())
    config["preprocess"] = {"max_slices": 5, "slice_format": "png"}
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def engine(gemma):
    yield from loaded_engine(gemma, device="cpu")


def _ramp_ct(axis: int, shape=(112, 48, 40)) -> Study:
    """A CT whose every voxel holds 30 HU times its index along ``axis``, minus 1000 (inside the recipe's
    wide window, -1024..1024, for every index used here)."""
    hu = np.indices(shape)[axis].astype(np.float32) * (1500.0 / shape[axis]) - 1000.0
    image = ImageData(array=hu, spacing=(2.0, 0.8, 0.8), modality="CT", origin=(0.0, 0.0, 0.0),
                      direction=np.array([[0.0, 0.0, -1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]))
    return Study(kind="ct", images=[image])


def test_each_image_token_is_the_mean_of_its_cell_of_the_picture(engine):
    """transformers' Gemma 3 pools the vision tower's patches into tokens row by row: token k = (i, j) is
    cell (k // side, k % side) of the picture, what ``token_grid`` assumes."""
    model, family = engine.runner.model, engine.runner.family
    pixels = family.pixel_values(_ramp_ct(1))
    with torch.no_grad():
        patches = model.model.vision_tower(pixel_values=pixels).last_hidden_state
        tokens = model.get_image_features(pixels)
        tokens = getattr(tokens, "pooler_output", tokens)
    images, count, width = patches.shape
    per_side, side = int(count ** 0.5), int(tokens.shape[1] ** 0.5)
    cells = patches.reshape(images, per_side, per_side, width)
    step = per_side // side
    projector = model.model.multi_modal_projector
    for k in range(side * side):
        i, j = divmod(k, side)
        mean = cells[:, i * step:(i + 1) * step, j * step:(j + 1) * step].mean(dim=(1, 2))
        expected = projector.mm_soft_emb_norm(mean) @ projector.mm_input_projection_weight
        torch.testing.assert_close(tokens[:, k], expected.to(tokens.dtype), atol=1e-5, rtol=1e-4)


def test_the_token_grid_is_where_the_processor_puts_each_slice_and_cell(engine):
    family = engine.runner.family
    recovered = {}
    for axis in (0, 1, 2):
        study = _ramp_ct(axis)
        pixels = family.pixel_values(study)[:, 0].numpy()  # red: the wide window, -1024..1024 HU
        size = study.array.shape[axis]
        hu = (pixels * 0.5 + 0.5) * 2048.0 - 1024.0  # undo the processor's scaling and the window
        recovered[axis] = (hu + 1000.0) * size / 1500.0  # the index the ramp wrote
    grid = family.token_grid(_ramp_ct(0))
    assert grid.slices == tuple(sample_slices(112, 5)) == (22, 44, 67, 89, 111)  # unevenly kept
    images, rows, columns = grid.model_shape
    cell = recovered[0].shape[-1] // rows  # processor pixels per token cell
    for n in range(images):
        for i in range(rows):
            for j in range(columns):
                where = grid.study_index((n, i, j))
                block = (n, slice(i * cell, (i + 1) * cell), slice(j * cell, (j + 1) * cell))
                got = [recovered[axis][block].mean() for axis in (0, 1, 2)]
                np.testing.assert_allclose(got, where, atol=0.35)  # 8-bit pictures: 8 HU a step
    # a map on the tokens back on the study: each kept slice's image on it, blended between kept slices
    one = np.zeros(grid.model_shape, np.float32)
    one[1, 1, 0] = 1.0  # kept slice 44, lower rows, left columns
    profile = grid.to_study(one)[:, -1, 0]
    assert profile[44] == pytest.approx(1.0) and profile[22] == 0 and profile[67] == 0
    assert profile[33] == pytest.approx(0.5)  # halfway between kept slices 22 and 44


def test_a_ct_sentence_is_located_on_a_slice_the_model_saw(engine, chest_study):
    study = chest_study
    (sentence,) = engine.ground_answer(study, "Is there a nodule?", "There is a left lower lobe nodule.",
                                       method="saliency")
    where = sentence.location
    assert where is not None and where.method == "attribution:saliency:image-tokens"
    kept = sample_slices(study.array.shape[0], 5)
    assert round(where.peak_index[0]) in kept  # the peak is on a token of a kept slice
    low, high = (np.asarray(c) for c in where.box_lps_mm)
    assert np.all(low <= where.peak_lps_mm) and np.all(where.peak_lps_mm <= high)
    assert where.mask.shape == study.array.shape and where.mask[round(where.peak_index[0])].any()
    assert where.heatmap.shape == study.array.shape


def test_a_radiographs_tokens_come_after_its_priors_and_locate_it(engine, shared_data):
    folder = shared_data / "xray"
    current = load_study([folder / "nih_00000001_000_cardiomegaly.png"])
    prior = load_study([folder / "nih_00000001_000_cardiomegaly.png",
                        folder / "nih_00027426_000_no_finding.png"])
    family = engine.runner.family
    (alone,) = family.token_grid(current)
    (paired,) = family.token_grid(with_prior(current, prior))
    assert alone.model_image == 0 and paired.model_image == 2  # after the prior's two radiographs
    np.testing.assert_allclose(alone.study_index((0, 0)), [127.5, 127.5])  # a 512 x 512 radiograph's 2 x 2
    tall = Study(kind="xray_set", images=[ImageData(array=np.zeros((60, 40), np.float32), spacing=(0.2, 0.2),
                                                    modality="DX")])
    kept = family.preprocess
    family.preprocess = dataclasses.replace(kept, pad_to_square=True)  # 10 black columns each side first
    try:
        (padded,) = family.token_grid(tall)
    finally:
        family.preprocess = kept
    np.testing.assert_allclose(padded.study_index((0, 0)), [14.5, 4.5])  # a 30-pixel cell, 10 of them padding
    (sentence,) = engine.ground_answer(current, "Is the heart enlarged?", "The heart is enlarged.",
                                       method="saliency")
    assert sentence.location is not None and sentence.location.image_index == 0
    assert sentence.location.as_dict()["method"] == "attribution:saliency:image-tokens"


def test_only_families_that_say_where_their_pixels_are_ground():
    ct = _ramp_ct(0)
    assert grounding_refusal("medgemma", "ct+xray", ct) == ""
    assert "its own processor" in grounding_refusal("image-text-to-text", "xray", ct)
    assert "cannot locate findings in a ct study" in grounding_refusal("medgemma", "xray", ct)


def test_a_medgemma_location_is_drawn_on_the_ct_in_napari(docked, engine, chest_study):
    from napari_radreport.viewer import add_study, study_image_layers
    from napari_radreport.widgets.location_layers import show_sentence

    viewer, session = docked["viewer"], docked["session"]
    add_study(viewer, chest_study)
    (sentence,) = engine.ground_answer(chest_study, "Is there a nodule?", "There is a lung nodule.",
                                       method="saliency")
    said = show_sentence(session, sentence.as_dict(), sentence.location)
    assert "Showing where" in said
    (layer,) = study_image_layers(viewer, chest_study)
    heat = viewer.layers["nodule (heatmap)"]
    assert heat.data.shape == chest_study.array.shape  # slices kept unevenly: the map is on the study's grid
    peak = np.asarray(sentence.location.peak_index)
    at_peak = np.round(heat.world_to_data(layer.data_to_world(peak))).astype(int)
    assert heat.data[tuple(at_peak)] >= 0.99 * heat.data.max()  # the peak, in the world, is the brightest
    step = viewer.dims.range[0].step
    assert abs(viewer.dims.point[0] - layer.data_to_world(peak)[0]) <= step / 2 + 1e-6  # on its slice
