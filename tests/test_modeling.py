"""The composite model with tiny random configs: perceivers, splicing, generation, save/load."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_radreport.modeling import (  # noqa: E402
    PERCEIVER_TYPES,
    ConfigError,
    PerceiverConfig,
    RadReportConfig,
    RadReportForConditionalGeneration,
    ViT3DConfig,
)

IMAGE_TOKEN = 99
TINY_VISION = {"image_size": [8, 64, 64], "patch_size": [4, 16, 16], "hidden_size": 32,
               "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
TINY_TEXT = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 100, "bos_token_id": 1,
             "eos_token_id": 2, "pad_token_id": 0}


def tiny_model(perceiver: dict | None = None, text: dict | None = None, seed: int = 0):
    torch.manual_seed(seed)
    config = RadReportConfig(vision_config=TINY_VISION, text_config={**TINY_TEXT, **(text or {})},
                             perceiver_config=perceiver or {"perceiver_type": "spp"},
                             image_token_id=IMAGE_TOKEN)
    return RadReportForConditionalGeneration(config).eval()


def prompt(model, extra=(5, 6, 7)):
    return torch.tensor([[1] + [IMAGE_TOKEN] * model.num_image_tokens + list(extra)])


EXPECTED_TOKENS = {  # grid (2, 4, 4) = 32 encoder tokens
    "spp": 4, "avg_pool": 4, "max_pool": 4, "conv3d": 4, "mlp2x": 32,
    "qformer_global": 6, "qformer_local": 4, "mlp_mixer": 6, "attn_pool": 6,
}


@pytest.mark.parametrize("kind", PERCEIVER_TYPES)
def test_every_perceiver_gives_the_token_count_it_promises(kind):
    model = tiny_model({"perceiver_type": kind, "num_queries": 6, "num_heads": 4})
    assert model.num_image_tokens == EXPECTED_TOKENS[kind]
    features = model.get_image_features(torch.randn(2, 1, 8, 64, 64))
    assert features.shape == (2, EXPECTED_TOKENS[kind], 32)
    out = model.generate(input_ids=prompt(model), pixel_values=torch.randn(1, 1, 8, 64, 64),
                         max_new_tokens=3, do_sample=False)
    assert out.shape[1] == prompt(model).shape[1] + 3


def test_batch_feature_norm_removes_what_all_images_share(tmp_path):
    """With feature_norm="batch" each pooled feature is standardised over the batch before the projector; the
    running statistics are saved with the weights and used at inference."""
    model = tiny_model({"perceiver_type": "spp", "feature_norm": "batch"}).train()
    perceiver = model.perceiver
    shared = torch.randn(1, 1, 8, 64, 64) * 3
    pixels = shared + 0.3 * torch.randn(6, 1, 8, 64, 64)  # images that differ by 10 % of what they share
    pooled = []
    perceiver.projector.register_forward_hook(lambda _m, args, _out: pooled.append(args[0]))
    model.get_image_features(pixels)
    standardised = pooled[-1]  # (B, tokens, C) after the norm
    assert torch.allclose(standardised.mean(0), torch.zeros_like(standardised[0]), atol=1e-4)
    assert torch.allclose(standardised.std(0, unbiased=False).mean(), torch.tensor(1.0), atol=0.05)
    with pytest.raises(ValueError, match="at least 2 images"):
        model.get_image_features(pixels[:1])
    model.save_pretrained(tmp_path)
    loaded = RadReportForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.perceiver.feature_norm.running_mean, perceiver.feature_norm.running_mean)
    model.eval()
    assert torch.allclose(loaded.get_image_features(pixels[:1]), model.get_image_features(pixels[:1]))


def test_image_token_count_mismatch_is_a_clear_error():
    model = tiny_model()
    ids = torch.tensor([[1] + [IMAGE_TOKEN] * (model.num_image_tokens + 1) + [5]])
    with pytest.raises(ValueError, match=r"5 image tokens .* gives 4 features"):
        model(input_ids=ids, pixel_values=torch.randn(1, 1, 8, 64, 64))


def test_image_features_land_exactly_where_the_image_tokens_stand():
    model = tiny_model()
    ids = prompt(model)
    pixels = torch.randn(1, 1, 8, 64, 64)
    features = model.get_image_features(pixels)
    merged = model.merge_image_features(ids, model.get_input_embeddings()(ids), features)
    positions = (ids[0] == IMAGE_TOKEN).nonzero().flatten()
    torch.testing.assert_close(merged[0, positions], features[0])
    others = (ids[0] != IMAGE_TOKEN).nonzero().flatten()
    torch.testing.assert_close(merged[0, others], model.get_input_embeddings()(ids)[0, others])


def test_pixel_values_are_encoded_once_per_generation():
    model = tiny_model()
    calls = []
    model.vision_tower.register_forward_hook(lambda *args: calls.append(1))
    model.generate(input_ids=prompt(model), pixel_values=torch.randn(1, 1, 8, 64, 64), max_new_tokens=6,
                   do_sample=False)
    assert len(calls) == 1


def test_cached_image_features_give_the_same_tokens_as_pixels():
    model = tiny_model()
    pixels = torch.randn(1, 1, 8, 64, 64)
    a = model.generate(input_ids=prompt(model), pixel_values=pixels, max_new_tokens=6, do_sample=False)
    b = model.generate(input_ids=prompt(model), image_features=model.get_image_features(pixels),
                       max_new_tokens=6, do_sample=False)
    assert torch.equal(a, b)


def test_save_and_load_round_trip_with_safetensors(tmp_path):
    model = tiny_model({"perceiver_type": "qformer_local", "num_heads": 4})
    pixels = torch.randn(1, 1, 8, 64, 64)
    before = model.generate(input_ids=prompt(model), pixel_values=pixels, max_new_tokens=8, do_sample=False)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    loaded = RadReportForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert loaded.config.perceiver_config.perceiver_type == "qformer_local"
    after = loaded.generate(input_ids=prompt(loaded), pixel_values=pixels, max_new_tokens=8, do_sample=False)
    assert torch.equal(before, after)


@pytest.mark.parametrize("text_type", ["llama", "phi3", "qwen2", "mistral"])
def test_any_causal_lm_transformers_knows_can_be_the_text_model(text_type):
    model = tiny_model(text={"model_type": text_type})
    assert model.language_model.config.model_type == text_type
    out = model.generate(input_ids=prompt(model), pixel_values=torch.randn(1, 1, 8, 64, 64), max_new_tokens=2,
                         do_sample=False)
    assert out.shape[1] == prompt(model).shape[1] + 2


@pytest.mark.parametrize(
    ("factory", "field"),
    [
        (lambda: ViT3DConfig(image_size=[30, 256, 256]), "vision_config.image_size"),
        (lambda: ViT3DConfig(hidden_size=50, num_attention_heads=12), "vision_config.hidden_size"),
        (lambda: PerceiverConfig(perceiver_type="transformer"), "perceiver_config.perceiver_type"),
        (lambda: RadReportConfig(vision_config=TINY_VISION, text_config=TINY_TEXT, image_token_id=500),
         "image_token_id"),
        (lambda: tiny_model({"perceiver_type": "spp", "pooling_size": 3}), "perceiver_config.pooling_size"),
        (lambda: PerceiverConfig(feature_norm="layer"), "perceiver_config.feature_norm"),
        (lambda: PerceiverConfig(pooling_size=[2, 4]), "perceiver_config.pooling_size"),
        (lambda: PerceiverConfig(pooling_size=[2, 0, 4]), "perceiver_config.pooling_size"),
        (lambda: PerceiverConfig(perceiver_type="mlp2x", feature_norm="batch"),
         "perceiver_config.feature_norm"),
    ],
)
def test_malformed_configs_fail_naming_the_field(factory, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        factory()


def test_pooling_sizes_can_differ_per_axis():
    from napari_radreport.modeling.perceivers import build_perceiver

    perceiver = build_perceiver(PerceiverConfig(perceiver_type="max_pool", pooling_size=[2, 4, 4]),
                                16, (8, 8, 8), 32)
    assert perceiver.num_tokens == 16  # 4 x 2 x 2 windows
    tokens = torch.randn(2, 512, 16)
    volume = tokens.transpose(1, 2).reshape(2, 16, 4, 2, 2, 4, 2, 4)  # (B, C, D/2, 2, H/4, 4, W/4, 4)
    pooled = volume.amax(dim=(3, 5, 7)).flatten(2).transpose(1, 2)
    with torch.no_grad():
        assert torch.allclose(perceiver(tokens), perceiver.projector(pooled), atol=1e-6)
    reloaded = PerceiverConfig.from_dict(PerceiverConfig(pooling_size=[2, 4, 4]).to_dict())
    assert reloaded.pooling_size == [2, 4, 4]


def _reference_vit3d(encoder, pixels, added=None):
    """M3D-CLIP's ViT written from its equations with explicit softmax attention; ``added`` (B, N, hidden)
    goes onto the patch embeddings."""
    cfg = encoder.config
    sd = dict(encoder.state_dict())
    b, c, s0, s1, s2 = pixels.shape
    p1, p2, p3 = cfg.patch_size
    x = pixels.reshape(b, c, s0 // p1, p1, s1 // p2, p2, s2 // p3, p3)
    x = torch.einsum("bchpwqdr->bhwdpqrc", x).reshape(b, -1, p1 * p2 * p3 * c)
    x = x @ sd["patch_embedding.patch_embeddings.1.weight"].T + sd["patch_embedding.patch_embeddings.1.bias"]
    x = x + sd["patch_embedding.position_embeddings"] + (0 if added is None else added)
    x = torch.cat([sd["cls_token"].expand(b, -1, -1), x], dim=1)
    heads, width = cfg.num_attention_heads, cfg.hidden_size
    ln = torch.nn.functional.layer_norm
    for i in range(cfg.num_hidden_layers):
        p = f"blocks.{i}."
        h = ln(x, (width,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], 1e-5)
        qkv = (h @ sd[p + "attn.qkv.weight"].T).reshape(b, -1, 3, heads, width // heads)
        q, k, v = (qkv[:, :, j].transpose(1, 2) for j in range(3))
        attn = torch.softmax(q @ k.transpose(-1, -2) * (width // heads) ** -0.5, dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(b, -1, width)
        x = x + o @ sd[p + "attn.out_proj.weight"].T + sd[p + "attn.out_proj.bias"]
        h = ln(x, (width,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], 1e-5)
        h = torch.nn.functional.gelu(h @ sd[p + "mlp.linear1.weight"].T + sd[p + "mlp.linear1.bias"])
        x = x + h @ sd[p + "mlp.linear2.weight"].T + sd[p + "mlp.linear2.bias"]
    x = ln(x, (width,), sd["norm.weight"], sd["norm.bias"], 1e-5)
    return x[:, 1:]


@pytest.mark.parametrize("channels", [1, 2])  # two channels make the (p1 p2 p3 c) order observable
def test_vit3d_matches_the_published_equations(channels):
    from napari_radreport.modeling.vit3d import ViT3DEncoder

    torch.manual_seed(1)
    encoder = ViT3DEncoder(ViT3DConfig(**{**TINY_VISION, "in_channels": channels})).eval()
    with torch.no_grad():
        for p in encoder.parameters():  # the zero-initialised embeddings too
            p.normal_(0, 0.2)
        pixels = torch.randn(2, channels, 8, 64, 64)
        torch.testing.assert_close(encoder(pixels), _reference_vit3d(encoder, pixels), atol=1e-5, rtol=1e-5)


def test_conv_stem_feeds_the_patches_the_pixels_and_its_filters():
    from napari_radreport.modeling.vit3d import ViT3DEncoder

    torch.manual_seed(2)
    encoder = ViT3DEncoder(ViT3DConfig(**TINY_VISION, conv_stem_channels=[3, 2])).eval()
    assert encoder.config.embedding_input_dim == 3 * 4 * 16 * 16 and encoder.config.patch_dim == 4 * 16 * 16
    with torch.no_grad():
        for p in encoder.parameters():
            p.normal_(0, 0.2)
        pixels = torch.randn(2, 1, 8, 64, 64)
        sd = encoder.state_dict()
        conv = torch.nn.functional.conv3d
        h = torch.nn.functional.gelu(conv(pixels, sd["patch_embedding.stem.layers.0.weight"],
                                          sd["patch_embedding.stem.layers.0.bias"], padding=1))
        h = torch.nn.functional.gelu(conv(h, sd["patch_embedding.stem.layers.2.weight"],
                                          sd["patch_embedding.stem.layers.2.bias"], padding=1))
        stacked = torch.cat([pixels, h], dim=1)  # (B, 1 + 2, ...): the reference cuts patches of all three
        torch.testing.assert_close(encoder(pixels), _reference_vit3d(encoder, stacked), atol=1e-5, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"vision_config\.conv_stem_channels"):
        ViT3DConfig(**TINY_VISION, conv_stem_channels=[4, 0])


def test_conv_stem_detectors_give_each_patch_its_highest_probability():
    from napari_radreport.modeling.vit3d import ViT3DEncoder

    torch.manual_seed(3)
    encoder = ViT3DEncoder(ViT3DConfig(**TINY_VISION, conv_stem_channels=[3], conv_stem_detectors=2)).eval()
    assert encoder.config.embedding_input_dim == (1 + 3) * 4 * 16 * 16
    with torch.no_grad():
        pixels = torch.randn(2, 1, 8, 64, 64)
        sd = encoder.state_dict()
        conv = torch.nn.functional.conv3d
        h = torch.nn.functional.gelu(conv(pixels, sd["patch_embedding.stem.layers.0.weight"],
                                          sd["patch_embedding.stem.layers.0.bias"], padding=1))
        maps = torch.sigmoid(conv(h, sd["patch_embedding.stem.detector.weight"],
                                  sd["patch_embedding.stem.detector.bias"]))  # (2, 2, 8, 64, 64)
        # peaks: (2, 32, 2)
        peaks = maps.reshape(2, 2, 2, 4, 4, 16, 4, 16).amax(dim=(3, 5, 7)).flatten(2).transpose(1, 2)
        added = (peaks @ sd["patch_embedding.detector_embedding.weight"].T
                 + sd["patch_embedding.detector_embedding.bias"])
        tokens = _reference_vit3d(encoder, torch.cat([pixels, h], dim=1), added)
        out = encoder(pixels)
        assert out.shape == (2, 32, 32 + 2) and encoder.output_dim == 34  # hidden features, then the 2 peaks
        torch.testing.assert_close(out, torch.cat([tokens, peaks], dim=-1), atol=1e-5, rtol=1e-5)
        assert not torch.allclose(_reference_vit3d(encoder, torch.cat([pixels, h], dim=1)), tokens, atol=1e-3)
    for wrong in ({"conv_stem_detectors": 1}, {"conv_stem_channels": [3], "conv_stem_detectors": -1}):
        with pytest.raises(ConfigError, match=r"vision_config\.conv_stem_detectors"):
            ViT3DConfig(**TINY_VISION, **wrong)


def test_each_detector_adds_a_token_from_its_strongest_patch_and_where_it_is(tmp_path):
    from napari_radreport.modeling.detector_tokens import DetectorTokens
    from napari_radreport.modeling.perceivers import build_perceiver

    perceiver = build_perceiver(PerceiverConfig(perceiver_type="spp"), 16 + 2, (2, 4, 4), 24, detectors=2)
    assert isinstance(perceiver, DetectorTokens) and perceiver.num_tokens == perceiver.pool.num_tokens + 2
    tokens = torch.rand(3, 32, 18) * 0.5
    tokens[1, 27, 16] = 0.9  # detector 0 of image 1: strongest at grid (1, 2, 3) of (2, 4, 4)
    peaks = perceiver.peaks(tokens)
    assert peaks.shape == (3, 2, 4)
    torch.testing.assert_close(peaks[1, 0], torch.tensor([0.9, 0.75, 0.625, 0.875]))
    with torch.no_grad():
        out = perceiver(tokens)
        assert out.shape == (3, perceiver.pool.num_tokens + 2, 24)
        torch.testing.assert_close(out[:, :-2], perceiver.pool(tokens))
        torch.testing.assert_close(out[:, -2:], perceiver.summary(peaks) + perceiver.kind)
    config = RadReportConfig(
        vision_config={**TINY_VISION, "conv_stem_channels": [4], "conv_stem_detectors": 1},
        text_config=TINY_TEXT, perceiver_config={"perceiver_type": "spp"}, image_token_id=IMAGE_TOKEN)
    model = RadReportForConditionalGeneration(config).eval()
    assert model.num_image_tokens == model.perceiver.pool.num_tokens + 1
    model.save_pretrained(tmp_path)
    again = RadReportForConditionalGeneration.from_pretrained(tmp_path).eval()
    pixels = torch.rand(1, 1, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.get_image_features(pixels), model.get_image_features(pixels))


def test_conv_stem_survives_save_and_load(tmp_path):
    torch.manual_seed(0)
    config = RadReportConfig(vision_config={**TINY_VISION, "conv_stem_channels": [4]}, text_config=TINY_TEXT,
                             perceiver_config={"perceiver_type": "spp"}, image_token_id=IMAGE_TOKEN)
    model = RadReportForConditionalGeneration(config).eval()
    model.save_pretrained(tmp_path)
    again = RadReportForConditionalGeneration.from_pretrained(tmp_path).eval()
    assert again.config.vision_config.conv_stem_channels == [4]
    pixels = torch.rand(1, 1, 8, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.vision_tower(pixels), model.vision_tower(pixels))
