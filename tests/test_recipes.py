"""Every recipe in models/ builds at tiny size and generates; at full size it builds on the meta device."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_radreport.modeling.configuration import ConfigError  # noqa: E402
from napari_radreport.modeling.recipes import MODELS_DIR, RecipeError, available_recipes, load_recipe  # noqa: E402

EXPECTED = {"m3d-lamed-phi3-4b", "m3d-lamed-llama2-7b", "amosmm-vit3d-llama3-8b", "rrg24-clip-vicuna-7b",
            "e3d-gpt-vicuna-7b", "ct-chat"}
# parameters at full size (vision + perceiver + language model), in billions, and image tokens
FULL_SIZE = {
    "m3d-lamed-phi3-4b": (3.9, 4.1, 256),
    "m3d-lamed-llama2-7b": (6.8, 7.0, 256),
    "amosmm-vit3d-llama3-8b": (8.1, 8.2, 256),
    "rrg24-clip-vicuna-7b": (6.9, 7.1, 576),
    "e3d-gpt-vicuna-7b": (7.0, 7.3, 343),
    "ct-chat": (8.05, 8.1, 256),
}


DEMO = "radreport-demo-phantom"  # trained here from scratch; no tiny section (it is small already)


def test_all_seed_recipes_are_present_with_a_model_card():
    assert set(available_recipes()) == EXPECTED | {DEMO}
    for name in EXPECTED | {DEMO}:
        card = (MODELS_DIR / name / "README.md").read_text()
        assert name in card and "Source" in card


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_builds_tiny_and_generates(name):
    recipe = load_recipe(name)
    torch.manual_seed(0)
    model = recipe.build(tiny=True).eval()
    config = model.config
    n = model.num_image_tokens
    ids = torch.tensor([[1] + [config.image_token_id] * n + [5, 6]])
    vision = config.vision_config
    if recipe.modality == "ct":
        pixels = torch.randn(1, vision.in_channels, *vision.image_size)
    else:
        pixels = torch.randn(1, 3, vision.image_size, vision.image_size)
    out = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=3, do_sample=False)
    assert out.shape == (1, ids.shape[1] + 3)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recipe_builds_at_full_size_on_the_meta_device(name):
    model = load_recipe(name).build(device="meta")
    billions = sum(p.numel() for p in model.parameters()) / 1e9
    low, high, tokens = FULL_SIZE[name]
    assert low <= billions <= high, billions
    assert model.num_image_tokens == tokens


def test_bad_recipes_fail_naming_what_is_wrong(tmp_path):
    with pytest.raises(RecipeError, match="no recipe 'nope'; available: amosmm"):
        load_recipe("nope")
    (tmp_path / "recipe.json").write_text('{"name": "x"}')
    with pytest.raises(RecipeError, match="missing field"):
        load_recipe(tmp_path)
    recipe = load_recipe("m3d-lamed-phi3-4b")
    recipe.perceiver = {"perceiver_type": "resampler"}
    with pytest.raises(ConfigError, match="perceiver_config.perceiver_type"):
        recipe.config()


def test_a_folder_of_a_model_loaded_as_released_is_not_a_recipe():
    assert (MODELS_DIR / "medgemma-1.5-4b" / "recipe.json").is_file()
    assert "medgemma-1.5-4b" not in available_recipes()
    with pytest.raises(RecipeError, match="describes a medgemma model, loaded as released"):
        load_recipe("medgemma-1.5-4b")
