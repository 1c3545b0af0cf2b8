"""Study -> model input: resampling, intensity, size, radiograph stitching, prompts; then
a tiny model runs it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_radreport import load_study  # noqa: E402
from napari_radreport.io.study import ImageData, Study  # noqa: E402
from napari_radreport.modeling.processor import (  # noqa: E402
    InputError,
    Preprocess,
    prompt_ids,
    radiographs_to_pixels,
    volume_to_pixels,
)
from napari_radreport.modeling.recipes import load_recipe  # noqa: E402


def _ramp_study(shape=(20, 8, 8), spacing=(2.0, 1.0, 1.0)):
    """Values equal the z position (mm) of each voxel centre: a linear ramp along the first axis."""
    z = np.arange(shape[0], dtype=np.float32) * spacing[0]
    array = np.broadcast_to(z[:, None, None], shape).copy()
    image = ImageData(array=array, spacing=spacing, modality="CT", origin=(0.0, 0.0, 0.0),
                      direction=np.eye(3))
    return Study(kind="ct", images=[image])


def test_resampling_keeps_voxel_centres_on_a_linear_ramp():
    study = _ramp_study()
    spec = Preprocess(target_shape=(40, 8, 8), spacing_mm=(1.0, 1.0, 1.0), intensity="hu_window",
                      hu_window=(0.0, 100.0), resize="crop_or_pad")
    out = volume_to_pixels(study, spec)[0, 0, :, 4, 4] * 100.0
    # new centre k sits at (k + 0.5) * 1 mm - 0.5 * 2 mm from the first old centre, inside the ramp
    expected = np.clip((np.arange(40) + 0.5) * 1.0 - 1.0, 0.0, 38.0)
    np.testing.assert_allclose(out[2:-2].numpy(), expected[2:-2], atol=1e-4)


@pytest.mark.parametrize("intensity", ["hu_window", "minmax"])
def test_preprocessing_works_on_its_own_copy_and_leaves_a_float32_study_untouched(intensity):
    study = _ramp_study()
    before = study.array.copy()
    spec = Preprocess(target_shape=(20, 8, 8), intensity=intensity, hu_window=(0.0, 100.0),
                      resize="crop_or_pad")
    out = volume_to_pixels(study, spec)[0, 0]
    np.testing.assert_array_equal(study.array, before)
    expected = before / 100.0 if intensity == "hu_window" else before / before.max()
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-6)


@pytest.mark.parametrize("intensity", ["hu_window", "minmax"])
def test_nan_and_inf_voxels_never_reach_the_model(intensity):
    study = _ramp_study()
    study.images[0].array[3, 2, 2], study.images[0].array[5, 1, 1] = np.nan, np.inf
    spec = Preprocess(target_shape=(40, 8, 8), spacing_mm=(1.0, 1.0, 1.0), intensity=intensity,
                      hu_window=(0.0, 100.0), resize="crop_or_pad")
    out = volume_to_pixels(study, spec)
    assert bool(out.isfinite().all()) and np.isnan(study.array[3, 2, 2])  # the study keeps its values


def test_hu_window_and_minmax_map_to_unit_range(chest_study):
    e3d = Preprocess.from_recipe(load_recipe("e3d-gpt-vicuna-7b").preprocess)
    pixels = volume_to_pixels(chest_study, e3d)
    assert pixels.shape == (1, 1, 112, 224, 224)
    assert float(pixels.min()) == 0.0 and float(pixels.max()) <= 1.0
    # 64 slices x 5 mm = 107 slices at 3 mm, padded to 112 with zeros (two above, three below)
    assert float(pixels[0, 0, 0].abs().max()) == 0.0 and float(pixels[0, 0, -1].abs().max()) == 0.0
    assert float(pixels[0, 0, 56].max()) > 0.5  # bone inside the HU window's upper half
    m3d = Preprocess.from_recipe(load_recipe("m3d-lamed-phi3-4b").preprocess)
    pixels = volume_to_pixels(chest_study, m3d)
    assert pixels.shape == (1, 1, 32, 256, 256)
    assert (float(pixels.min()) == pytest.approx(0.0, abs=1e-6)
            and float(pixels.max()) == pytest.approx(1.0, abs=1e-3))


def test_radiographs_are_stitched_left_to_right(shared_data):
    bright = ImageData(array=np.full((100, 50), 255, np.uint8), spacing=(None, None), modality="")
    dark = ImageData(array=np.zeros((50, 50), np.uint8), spacing=(None, None), modality="")
    bright.file_window = dark.file_window = (127.5, 255.0)
    study = Study(kind="xray_set", images=[bright, dark])
    spec = Preprocess.from_recipe(load_recipe("rrg24-clip-vicuna-7b").preprocess)
    pixels = radiographs_to_pixels(study, spec)
    assert pixels.shape == (1, 3, 336, 336)
    raw = pixels[0, 0] * 0.26862954 + 0.48145466  # undo CLIP normalisation
    # 50 + 100 px wide after scaling to a common height: the bright third on the left
    assert float(raw[168, 5:105].mean()) > 0.95 and float(raw[168, 120:330].mean()) < 0.05
    separate = radiographs_to_pixels(study, Preprocess(target_shape=(336, 336), stitch="separate"))
    assert separate.shape == (2, 3, 336, 336)
    folder = sorted((shared_data / "xray" / "open_access_cc_by").iterdir())
    real = radiographs_to_pixels(load_study(folder[:4]), spec)
    assert real.shape == (1, 3, 336, 336)
    with pytest.raises(InputError, match="at most 4 radiographs; the study has 5"):
        radiographs_to_pixels(load_study(folder), spec)


def test_a_model_says_what_it_cannot_take(chest_study, shared_data):
    spec = Preprocess(target_shape=(32, 256, 256))
    with pytest.raises(InputError, match="reads CT volumes; the study is a xray_set"):
        volume_to_pixels(load_study(shared_data / "xray" / "nih_00000001_000_cardiomegaly.png"), spec)
    with pytest.raises(InputError, match="reads chest radiographs; the study is a ct"):
        radiographs_to_pixels(chest_study, Preprocess(target_shape=(336, 336)))


def test_prompt_expands_the_image_token_and_a_tiny_model_runs_a_real_study(tmp_path, abdomen_nifti):
    from transformers import AutoTokenizer

    from m3d_reference import write_tiny_tokenizer

    recipe = load_recipe("m3d-lamed-phi3-4b")
    write_tiny_tokenizer(tmp_path, 100)  # <im_patch> = 100, as the tiny recipe expects
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    torch.manual_seed(0)
    model = recipe.build(tiny=True).eval()
    ids = prompt_ids(tokenizer, "w5 w6 w7", image_token=recipe.image_token,
                     num_image_tokens=model.num_image_tokens)
    assert ids[0, 0] == tokenizer.bos_token_id
    assert int((ids == 100).sum()) == model.num_image_tokens
    vision = model.config.vision_config
    spec = Preprocess(target_shape=tuple(vision.image_size))
    pixels = volume_to_pixels(load_study(abdomen_nifti), spec)
    out = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=4, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 4


def test_separately_encoded_radiographs_concatenate_their_tokens_with_a_chat_template(tmp_path, shared_data):
    """The seed paper's open question: each radiograph encoded alone, tokens concatenated in one prompt."""
    from transformers import AutoTokenizer

    from m3d_reference import write_tiny_tokenizer

    recipe = load_recipe("rrg24-clip-vicuna-7b")
    write_tiny_tokenizer(tmp_path, 96)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    tokenizer.add_tokens(["<image>"], special_tokens=True)  # id 100 after the four M3D tokens
    # a template whose words the tiny vocabulary knows: w90 = "user", w91 = "assistant"
    tokenizer.chat_template = "{% for m in messages %}w90 {{ m['content'] }} w91{% endfor %}"
    torch.manual_seed(0)
    model = recipe.build(tiny=True).eval()
    assert tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_id
    study = load_study([shared_data / "xray" / "nih_00000001_000_cardiomegaly.png",
                        shared_data / "xray" / "nih_00027426_000_no_finding.png"])
    spec = Preprocess(target_shape=(32, 32), stitch="separate")
    pixels = radiographs_to_pixels(study, spec)
    ids = prompt_ids(tokenizer, "w5 w6", image_token="<image>", num_image_tokens=model.num_image_tokens,
                     n_images=pixels.shape[0], chat_template=True)
    assert (ids[0, 0] == tokenizer.convert_tokens_to_ids("w90")
            and ids[0, -1] == tokenizer.convert_tokens_to_ids("w91"))
    assert int((ids == 100).sum()) == 2 * model.num_image_tokens
    out = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 2


def test_more_radiographs_than_the_model_takes_is_a_clear_error():
    images = [ImageData(array=np.zeros((20, 20), np.uint8), spacing=(None, None), modality="")
              for _ in range(5)]
    study = Study(kind="xray_set", images=images)
    with pytest.raises(InputError, match="at most 4 radiographs; the study has 5"):
        radiographs_to_pixels(study, Preprocess(target_shape=(32, 32), max_images=4))
    assert (radiographs_to_pixels(study, Preprocess(target_shape=(32, 32), max_images=5)).shape
            == (1, 3, 32, 32))


def test_a_follow_up_prompt_starts_with_the_previous_turns(tmp_path):
    from transformers import AutoTokenizer

    from m3d_reference import write_tiny_tokenizer

    write_tiny_tokenizer(tmp_path, 50)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    first = prompt_ids(tokenizer, "w5 w6", image_token="<im_patch>", num_image_tokens=3)[0].tolist()
    follow = prompt_ids(tokenizer, "w9", image_token="<im_patch>", num_image_tokens=3,
                        history=[("w5 w6", "w7 w8")])[0].tolist()
    assert follow[:len(first)] == first and follow[len(first):] == [7, 8, 9]


@pytest.mark.parametrize("target, resize", [((40, 12, 20), "crop_or_pad"), ((16, 6, 9), "crop_or_pad"),
                                            ((16, 12, 9), "resize")])
def test_a_patient_position_lands_where_preprocessing_puts_its_voxels(target, resize):
    from scipy.ndimage import map_coordinates

    from napari_radreport.modeling.processor import patient_to_pixel_index

    shape, spacing = (18, 10, 14), (2.5, 1.0, 1.5)
    direction = np.array([[0.0, 0.0, 1.0], [0.0, -1.0, 0.0], [1.0, 0.0, 0.0]])  # axis 0 -> S, 1 -> -P, 2 -> L
    origin = (-10.0, 25.0, -30.0)
    gradient = np.array([1.0, 2.0, 3.0])  # HU per mm along L, P, S: linear, so resampling keeps it exactly

    def hu(position):
        return 500.0 + np.asarray(position) @ gradient

    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(float)
    positions = np.asarray(origin) + (index * np.asarray(spacing)) @ direction
    image = ImageData(array=hu(positions).astype(np.float32), spacing=spacing, modality="CT", origin=origin,
                      direction=direction)
    study = Study(kind="ct", images=[image])
    np.testing.assert_allclose(image.patient_to_index(image.index_to_patient((3.2, 4.0, 7.5))),
                               (3.2, 4.0, 7.5))
    spec = Preprocess(target_shape=target, spacing_mm=(2.0, 1.25, 1.25), intensity="hu_window",
                      hu_window=(-1000.0, 2000.0), resize=resize)
    pixels = volume_to_pixels(study, spec)[0, 0].numpy()
    inner = positions[5:13, 3:7, 4:10].reshape(-1, 3)  # well inside: interpolation near the edges clamps
    found = []
    for position in inner:
        where = patient_to_pixel_index(study, spec, position)
        if np.all(where >= 0) and np.all(where <= np.asarray(target) - 1):
            found.append((map_coordinates(pixels, where[:, None], order=1)[0],
                          (hu(position) + 1000.0) / 3000.0))
    assert len(found) > 20
    got, expected = np.array(found).T
    np.testing.assert_allclose(got, expected, atol=2e-5)  # half a voxel off would be 2.5e-4 here


def test_centre_crop_and_pad_keep_the_middle_and_pad_evenly():
    from napari_radreport.modeling.processor import _crop_or_pad

    ramp = torch.arange(7, dtype=torch.float32)[:, None, None].expand(7, 2, 2)
    cropped = _crop_or_pad(ramp, (4, 2, 2), fill=-1.0)[:, 0, 0].tolist()
    padded = _crop_or_pad(ramp, (10, 2, 2), fill=-1.0)[:, 0, 0].tolist()
    assert cropped == [1.0, 2.0, 3.0, 4.0]  # (7 - 4) // 2 = 1 voxel dropped before
    assert padded == [-1.0] + list(range(7)) + [-1.0, -1.0]  # (10 - 7) // 2 = 1 voxel padded before
