"""M3D-LaMed's grounding: its SegVol segmentation head (converted, run by ``segment``) and its box text.

Checked against M3D's equations restated in tests/m3d_reference.py, and against M3D's own code where a
checkout is at hand (RADREPORT_M3D_CODE, with monai==1.3.0 and einops importable).
"""

from __future__ import annotations

import json
import types

import pytest

torch = pytest.importorskip("torch")

from napari_radreport.modeling import RadReportForConditionalGeneration  # noqa: E402
from napari_radreport.modeling.checkpoints import CheckpointError  # noqa: E402
from napari_radreport.modeling.m3d import SEGMENTATION_PREFIXES, convert_m3d  # noqa: E402
from napari_radreport.modeling.m3d_boxes import (  # noqa: E402
    Box,
    BoxFormatError,
    format_box,
    parse_boxes,
)
from napari_radreport.modeling.m3d_segmentation import segment  # noqa: E402

import m3d_reference as ref  # noqa: E402

PHI3_VOCAB = 32011  # Phi-3's tokenizer; M3D adds <im_patch>, <bx_start>, <bx_end>, then [SEG]
IMAGE, SEG = PHI3_VOCAB, PHI3_VOCAB + 3
M3D_SIZE = (32, 256, 256)


def _ours(key: str) -> str:
    for prefix, mapped in SEGMENTATION_PREFIXES.items():
        if key.startswith(prefix):
            return mapped + key[len(prefix):]
    raise KeyError(key)


def _shard(folder):
    return folder / "model-00001-of-00002.safetensors"


def _drop(folder, name: str) -> None:
    """Removes one tensor from a tiny M3D folder (its shard and the index)."""
    from safetensors.torch import load_file, save_file

    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    shard = folder / index["weight_map"].pop(name)
    tensors = load_file(str(shard))
    del tensors[name]
    save_file(tensors, str(shard))
    index_path.write_text(json.dumps(index))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("m3d_seg")
    state = ref.write_tiny_m3d_checkpoint(folder / "m3d", "phi3", segmentation=True)
    out = convert_m3d(folder / "m3d", folder / "out")
    model = RadReportForConditionalGeneration.from_pretrained(out).eval()
    return types.SimpleNamespace(state=state, src=folder / "m3d", out=out, model=model)


def _pixels(seed: int = 3, batch: int = 1):
    torch.manual_seed(seed)
    return torch.rand(batch, 1, 8, 64, 64)


def _ids(*answer: int):
    return torch.tensor([[1] + [IMAGE] * 4 + [17, 301, 4242, 9] + list(answer)])


# -- the converter ---------------------------------------------------------------------------------------
def test_the_converter_keeps_every_segmentation_tensor_under_its_mapped_name(tiny, tmp_path, monkeypatch):
    from safetensors import safe_open

    from napari_radreport.modeling.loading import load_model

    seg_keys = [k for k in tiny.state if k.startswith(tuple(SEGMENTATION_PREFIXES))]
    assert len(seg_keys) > 100
    ours = tiny.model.state_dict()
    for key in seg_keys:
        assert torch.equal(ours[_ours(key)], tiny.state[key]), key
    assert sorted(k for k in ours if k.startswith("segmentation.")) == sorted(_ours(k) for k in seg_keys)
    written = set()
    for shard in tiny.out.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as handle:
            written |= set(handle.keys())
    assert {_ours(k) for k in seg_keys} <= written
    config = tiny.model.config
    assert (config.seg_token, config.seg_token_id) == ("[SEG]", SEG)
    assert config.segmentation["hidden_size"] == 48 and config.segmentation["image_size"] == [8, 64, 64]
    monkeypatch.setenv("RADREPORT_CACHE", str(tmp_path / "cache"))
    assert load_model(tiny.src).incomplete == []  # converted into the cache: intact, no note


def test_our_head_holds_m3ds_tensors_at_the_released_sizes():
    """At M3D-LaMed's sizes (SegVol ViT-B on 32 x 256 x 256, Phi-3's 3072-wide hidden state), our head's
    tensors are M3D's (names mapped, shapes equal), built on the meta device."""
    from napari_radreport.modeling.configuration import SegVolSpec
    from napari_radreport.modeling.m3d_segmentation import SegmentationHead

    with torch.device("meta"):
        head = SegmentationHead(SegVolSpec(), text_hidden=3072)
    ours = {f"segmentation.{k}": tuple(v.shape) for k, v in head.state_dict().items()}
    theirs = ref.segvol_shapes(M3D_SIZE, (4, 16, 16), 768, 12, 3072, 2, 2048, 2, 4, 3, 256, 16, 3072)
    assert ours == {_ours(k): shape for k, shape in theirs.items()}


def test_a_checkpoint_without_segmentation_tensors_converts_and_loads_as_before(tmp_path, monkeypatch):
    from napari_radreport.modeling.loading import load_model

    ref.write_tiny_m3d_checkpoint(tmp_path / "m3d", "llama")  # config names segvol, the weights hold none
    model = RadReportForConditionalGeneration.from_pretrained(convert_m3d(tmp_path / "m3d", tmp_path / "out"))
    assert model.config.segmentation is None and model.segmentation is None
    assert not any(k.startswith("segmentation.") for k in model.state_dict())
    with pytest.raises(ValueError, match="no segmentation head"):
        segment(model, _ids(32003), _pixels())
    monkeypatch.setenv("RADREPORT_CACHE", str(tmp_path / "cache"))
    assert load_model(tmp_path / "m3d").incomplete == []


def test_segmentation_tensors_are_dropped_when_config_builds_no_head(tmp_path):
    """M3D builds no head when ``segmentation_module`` is unset (its loading then ignores the tensors)."""
    ref.write_tiny_m3d_checkpoint(tmp_path / "m3d", "phi3", segmentation=True, segmentation_module=None)
    model = RadReportForConditionalGeneration.from_pretrained(convert_m3d(tmp_path / "m3d", tmp_path / "out"))
    assert model.segmentation is None and not any("seg" in k for k in model.state_dict())


def test_a_broken_segmentation_head_is_refused_naming_what_is_wrong(tmp_path):
    ref.write_tiny_m3d_checkpoint(tmp_path / "a", "phi3", segmentation=True)
    _drop(tmp_path / "a", "model.seg_module.mask_decoder.iou_token.weight")
    with pytest.raises(CheckpointError, match=r"missing: segmentation\.segvol\.mask_decoder\.iou_token\."):
        convert_m3d(tmp_path / "a", tmp_path / "out")
    ref.write_tiny_m3d_checkpoint(tmp_path / "b", "phi3", segmentation=True)
    _drop(tmp_path / "b", "model.seg_module.image_encoder.patch_embedding.position_embeddings")
    with pytest.raises(CheckpointError, match="no model.seg_module.image_encoder.patch_embedding.position_"):
        convert_m3d(tmp_path / "b", tmp_path / "out")
    ref.write_tiny_m3d_checkpoint(tmp_path / "c", "phi3", segmentation=True)
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    (tmp_path / "c" / "config.json").write_text(json.dumps({**config, "seg_token_id": 5}))
    with pytest.raises(CheckpointError, match=r"seg_token_id=5 but the tokenizer's \[SEG\] is 32014"):
        convert_m3d(tmp_path / "c", tmp_path / "out")
    (tmp_path / "c" / "config.json").write_text(json.dumps({**config, "segmentation_module": "sam2"}))
    with pytest.raises(CheckpointError, match="segmentation_module='sam2' is not supported"):
        convert_m3d(tmp_path / "c", tmp_path / "out")
    assert not (tmp_path / "out").exists()


TINY_SEG = {"image_size": [8, 64, 64], "hidden_size": 48, "num_hidden_layers": 1, "intermediate_size": 96,
            "decoder_depth": 1, "decoder_mlp_dim": 64, "iou_head_hidden_dim": 16, "prompt_dim": 48}


@pytest.mark.parametrize(("change", "field"), [
    ({"prompt_dim": 32}, "segmentation.prompt_dim"),
    ({"patch_size": [4, 16, 15]}, r"segmentation.image_size\[2\]"),
    ({"decoder_heads": 5}, "decoder_heads"),
    ({"depth": 2}, "unknown field.*depth"),
    ({"type": "sam2"}, "segmentation.type"),
    ({"seg_token_id": None}, "seg_token_id"),
    ({"seg_token_id": 500}, "seg_token_id=500"),
])
def test_a_malformed_segmentation_config_fails_naming_the_field(change, field):
    from napari_radreport.modeling.configuration import ConfigError, RadReportConfig

    vision = {"image_size": [8, 64, 64], "hidden_size": 48, "num_hidden_layers": 1, "intermediate_size": 96}
    text = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
            "intermediate_size": 64, "vocab_size": 100}
    good = RadReportConfig(vision_config=vision, text_config=text, image_token_id=98, segmentation=TINY_SEG,
                           seg_token_id=99)
    assert good.segmentation_spec.grid == (2, 4, 4)
    change = dict(change)
    token = change.pop("seg_token_id", 99)
    with pytest.raises(ConfigError, match=field):
        RadReportConfig(vision_config=vision, text_config=text, image_token_id=98,
                        segmentation={**TINY_SEG, **change}, seg_token_id=token)


# -- segment ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("answer", [(55, SEG, 2), (SEG, 60, 61, SEG, 2)], ids=["one [SEG]", "two [SEG]"])
def test_segment_equals_m3ds_equations(tiny, answer):
    ids, pixels = _ids(*answer), _pixels()
    logits = segment(tiny.model, ids, pixels)
    assert logits.shape == (1, 1, 8, 64, 64) and logits.dtype == torch.float32
    with torch.no_grad():
        expected = ref.reference_segment(tiny.state, "phi3", ids, pixels, SEG)
    assert expected.abs().max() > 0.5  # logits large enough that a wrong step shows
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    # the same from a cached encoding, or from hidden states at hand
    features = tiny.model.get_image_features(pixels)
    torch.testing.assert_close(segment(tiny.model, ids[0].tolist(), pixels, image_features=features), logits)
    with torch.no_grad():
        hidden = tiny.model(input_ids=ids, pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
    torch.testing.assert_close(segment(tiny.model, ids, pixels, hidden_states=hidden), logits)


def test_segment_reads_the_hidden_state_before_seg_and_each_row_of_a_batch(tiny):
    pixels = _pixels(batch=2)
    rows = torch.cat([_ids(55, SEG, 2, 3), _ids(SEG, 60, 61, SEG)])
    both = segment(tiny.model, rows, pixels)
    for i in range(2):
        torch.testing.assert_close(both[i:i + 1], segment(tiny.model, rows[i:i + 1], pixels[i:i + 1]),
                                   atol=1e-5, rtol=1e-5)
    moved = _ids(55, 56, SEG, 3)  # one position later: another hidden state, other logits
    assert not torch.allclose(segment(tiny.model, moved, pixels[:1]), both[:1], atol=1e-3)


def test_segment_without_seg_is_a_clear_error(tiny):
    with pytest.raises(ValueError, match=r"no \[SEG\] token in row\(s\) \[0\]"):
        segment(tiny.model, _ids(55, 56, 2), _pixels())


# -- box text ---------------------------------------------------------------------------------------------
def test_format_box_writes_m3ds_text():
    """Voxels 3..10 (D), 100..180 (H), 20..250 (W) of 32 x 256 x 256: each first and last index / size,
    rounded to 3 decimals as Python rounds (10 / 32 = 0.3125 -> 0.312), written as str(list)."""
    box = Box((3, 100, 20), (10, 180, 250))
    text = "<bx_start>[0.094, 0.391, 0.078, 0.312, 0.703, 0.977]<bx_end>"
    assert format_box(box, M3D_SIZE) == text
    [back] = parse_boxes(text, M3D_SIZE)
    assert back == Box((3.008, 100.096, 19.968), (9.984, 179.968, 250.112))
    origin = "<bx_start>[0.0, 0.0, 0.0, 0.0, 0.0, 0.0]<bx_end>"
    assert format_box(Box((0, 0, 0), (0, 0, 0)), M3D_SIZE) == origin


@pytest.mark.parametrize("shape", [M3D_SIZE, (8, 64, 64)])
def test_boxes_round_trip_within_m3ds_rounding(shape):
    import random

    rng = random.Random(0)
    for _ in range(200):
        first = [rng.uniform(0, n - 1) for n in shape]
        box = Box(tuple(first), tuple(rng.uniform(a, n - 1) for a, n in zip(first, shape)))
        text = format_box(box, shape)
        [back] = parse_boxes(f"The box is {text}.", shape)
        for corner, other in ((box.start, back.start), (box.end, back.end)):
            assert all(abs(a - b) <= 0.0005 * n + 1e-9 for a, b, n in zip(corner, other, shape))
        assert format_box(back, shape) == text  # M3D's text survives a parse and a format unchanged


def test_parse_reads_every_box_in_order_and_bare_lists_without_markers():
    text = ("It is the liver <bx_start>[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]<bx_end> and a cyst "
            "<bx_start>[ 0.0,0.25 , 0.5, 0.5, 0.75,1.0 ]<bx_end>.")
    first, second = parse_boxes(text, (10, 100, 1000))
    assert first == Box((1, 20, 300), (4, 50, 600))
    assert second == Box((0, 25, 500), (5, 75, 1000))
    assert parse_boxes("No box here [1, 2, 3].", M3D_SIZE) == []
    # decoded with skip_special_tokens=True the markers are gone: M3D's benchmark reads the bare list
    bare = "Sure, the bounding box is [0.125, 0.5, 0.25, 0.5, 0.75, 0.5]."
    assert parse_boxes(bare, (8, 4, 4), markers=False) == [Box((1, 2, 1), (4, 3, 2))]
    assert parse_boxes(bare, (8, 4, 4)) == []


@pytest.mark.parametrize(("text", "reason"), [
    ("<bx_start>[0.1, 0.2, 0.3, 0.4, 0.5]<bx_end>", "has six numbers, got 5"),
    ("<bx_start>[0.1, 0.2, x, 0.4, 0.5, 0.6]<bx_end>", "a bracketed list of six numbers"),
    ("<bx_start>0.1, 0.2, 0.3, 0.4, 0.5, 0.6<bx_end>", "a bracketed list of six numbers"),
    ("the box <bx_start>[0.1, 0.2, 0.3, 0.4, 0.5, 0.6] and", "<bx_start> without its <bx_end>"),
    ("[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]<bx_end>", "<bx_end> without its <bx_start>"),
    ("<bx_start>[0.1, 0.2, 0.3, 0.4, 1.5, 0.6]<bx_end>", "lie in 0..1"),
    ("<bx_start>[0.5, 0.2, 0.3, 0.4, 0.5, 0.6]<bx_end>", "a start passes its end"),
])
def test_malformed_box_text_is_one_clear_error(text, reason):
    with pytest.raises(BoxFormatError, match=reason) as refused:
        parse_boxes(f"The liver is here: {text}", M3D_SIZE)
    assert len(str(refused.value).splitlines()) == 1
    assert isinstance(refused.value, ValueError)


def test_format_refuses_a_box_off_the_grid_and_a_bad_shape():
    with pytest.raises(ValueError, match="outside the model's grid"):
        format_box(Box((0, 0, 0), (31.6, 10, 10)), M3D_SIZE)
    assert format_box(Box((-0.5, 0, 0), (31.5, 255.5, 255.5)), M3D_SIZE) == (
        "<bx_start>[0.0, 0.0, 0.0, 0.984, 0.998, 0.998]<bx_end>")  # the grid's outer edges
    with pytest.raises(ValueError, match="start must not pass its end"):
        Box((5, 0, 0), (4, 1, 1))
    with pytest.raises(ValueError, match="three input sizes"):
        format_box(Box((0, 0, 0), (1, 1, 1)), (256, 256))


# -- against M3D's own code (RADREPORT_M3D_CODE) ---------------------------------------------------------
@pytest.fixture(scope="module")
def code():
    found = ref.real_code()
    if found is None:
        pytest.skip("M3D's code not at hand: set RADREPORT_M3D_CODE to a checkout of BAAI-DCAI/M3D, with "
                    "monai==1.3.0 (its pin; MONAI 1.4 dropped the pos_embed argument its ViTs pass) and "
                    "einops importable")
    return found


TINY_TEXT = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4,
             "num_hidden_layers": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "bos_token_id": 1,
             "eos_token_id": 2, "pad_token_id": 0, "hidden_act": "silu", "tie_word_embeddings": False}


def _their_model(code, text_type: str, base_vocab: int):
    """M3D's own LamedLlama/LamedPhi3ForCausalLM: a tiny language model, M3D-CLIP's ViT-B and SegVol at
    their code's fixed sizes on 8 x 64 x 64, the segmentation weights drawn wide (``random_segvol_state``)."""
    config_class, model_class = code.models[text_type]
    config = config_class(**TINY_TEXT, vocab_size=base_vocab + 4, image_channel=1, image_size=[8, 64, 64],
                          patch_size=[4, 16, 16], vision_tower="vit3d", vision_select_layer=-1,
                          vision_select_feature="patch", mm_projector_type="spp", proj_layer_type="mlp",
                          proj_layer_num=2, proj_pooling_type="spatial", proj_pooling_size=2,
                          mm_hidden_size=768, segmentation_module="segvol", seg_token_id=base_vocab + 3)
    torch.manual_seed(0)
    model = model_class(config).eval()
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if ".seg_" in name:
                tensor.copy_(ref.random_segvol_state({name: tuple(tensor.shape)})[name] * 0.3)
    return model


class _ForceAt:
    """A logits processor writing ``token`` at the given steps of the answer (greedy elsewhere)."""

    def __init__(self, steps: set[int], token: int, prompt_length: int):
        self.steps, self.token, self.prompt_length = steps, token, prompt_length

    def __call__(self, input_ids, scores):
        if input_ids.shape[1] - self.prompt_length in self.steps:
            scores = torch.full_like(scores, -torch.inf)
            scores[:, self.token] = 0
        return scores


def test_their_segvol_state_dict_is_the_reference_table(code):
    segvol = code.build_segmentation_module(types.SimpleNamespace(
        segmentation_module="segvol", image_size=list(M3D_SIZE), patch_size=[4, 16, 16]))
    theirs = {"model.seg_module." + k: tuple(v.shape) for k, v in segvol.state_dict().items()}
    table = ref.segvol_shapes(M3D_SIZE, (4, 16, 16), 768, 12, 3072, 2, 2048, 2, 4, 3, 256, 16, 3072)
    assert theirs == {k: v for k, v in table.items() if k.startswith("model.seg_module.")}


@pytest.mark.parametrize(("text_type", "base_vocab"), [("phi3", 32011), ("llama", 32000)])
def test_their_generate_with_seg_equals_our_segment(code, tmp_path, text_type, base_vocab):
    """M3D's own ``generate(images, ids, seg_enable=True)`` (two [SEG] forced into a greedy answer: their
    hidden states averaged) gives the mask logits ``segment`` gives on the model our converter makes of the
    folder M3D's own ``save_pretrained`` wrote; the answers are the same tokens."""
    from transformers import LogitsProcessorList

    theirs_model = _their_model(code, text_type, base_vocab)
    seg_names = {k: tuple(v.shape) for k, v in theirs_model.state_dict().items() if ".seg_" in k}
    assert seg_names == ref.segvol_shapes((8, 64, 64), (4, 16, 16), 768, 12, 3072, 2, 2048, 2, 4, 3, 256, 16,
                                          TINY_TEXT["hidden_size"])
    theirs_model.save_pretrained(str(tmp_path / "m3d"))
    ref.write_tiny_tokenizer(tmp_path / "m3d", base_vocab)
    model = RadReportForConditionalGeneration.from_pretrained(convert_m3d(tmp_path / "m3d", tmp_path / "out"))
    model.eval()
    seg = base_vocab + 3
    assert model.config.seg_token_id == seg and model.num_image_tokens == 4
    ids = torch.tensor([[1] + [base_vocab] * 4 + [17, 301, 4242, 9]])
    pixels = _pixels(7)
    force = LogitsProcessorList([_ForceAt({1, 3}, seg, 0)])  # their generate sees only the answer's ids
    with torch.no_grad():
        their_ids, their_logits = theirs_model.generate(pixels, ids, seg_enable=True, max_new_tokens=6,
                                                        do_sample=False, logits_processor=force,
                                                        eos_token_id=None, pad_token_id=0)
        ours_ids = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=6, do_sample=False,
                                  logits_processor=LogitsProcessorList([_ForceAt({1, 3}, seg, ids.shape[1])]),
                                  eos_token_id=None, pad_token_id=0)
    assert ours_ids[0, ids.shape[1]:].tolist() == their_ids[0].tolist()
    assert their_ids[0].tolist().count(seg) == 2
    logits = segment(model, ours_ids, pixels)
    assert their_logits.abs().max() > 0.5
    difference = (logits - their_logits).abs().max().item()
    print(f"{text_type}: max |ours - M3D's| = {difference:.3g} (their logits up to "
          f"{their_logits.abs().max().item():.3g})")
    assert difference <= 1e-4


def test_their_mask2box_text_is_our_box_text(code):
    """A mask's box as M3D's data builds it (``mask2box``, then the list's text between the markers) is what
    ``format_box`` writes for the mask's first and last voxels; parsed back, it lies within M3D's rounding of
    them; M3D's benchmark reads our text as the same six numbers."""
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        low = [int(torch.randint(0, n - 1, (1,), generator=generator)) for n in M3D_SIZE]
        high = [int(torch.randint(a, n, (1,), generator=generator)) for a, n in zip(low, M3D_SIZE)]
        mask = torch.zeros(M3D_SIZE, dtype=torch.int8)
        mask[low[0]:high[0] + 1, low[1]:high[1] + 1, low[2]:high[2] + 1] = 1
        numbers = code.mask2box(mask)
        their_text = "<bx_start>" + str(numbers) + "<bx_end>"
        assert format_box(Box(tuple(low), tuple(high)), M3D_SIZE) == their_text
        [box] = parse_boxes(their_text, M3D_SIZE)
        assert all(abs(a - b) <= 0.0005 * n + 1e-9
                   for a, b, n in zip((*box.start, *box.end), (*low, *high), M3D_SIZE * 2))
        assert code.extract_box_from_text(format_box(box, M3D_SIZE)) == numbers


# -- the engine grounds with it ---------------------------------------------------------------------------
def test_the_engine_grounds_a_sentence_with_m3ds_own_segmentation(tiny, abdomen_nifti):
    from napari_radreport import load_study
    from napari_radreport.engine import Engine
    from napari_radreport.engine.grounding import finding_phrase
    from napari_radreport.modeling.m3d_segmentation import segment

    engine = Engine()
    engine.allow_out_of_scope = True
    engine.load(tiny.out)
    study = load_study(abdomen_nifti)
    answer = "There is a 12 mm nodule in the right upper lobe."
    (sentence,) = engine.ground_answer(study, "Any nodule?", answer)
    grounder = engine._grounder
    assert grounder.method == "m3d-segmentation"  # the default for a model with SegVol
    assert finding_phrase(answer) == "right upper lobe nodule"
    runner = engine.runner
    prompt, _ = runner.prompt(study, "Can you segment the right upper lobe nodule in this image?")
    ids = list(prompt) + runner.family.tokenizer("It is [SEG].", add_special_tokens=False)["input_ids"]
    expected = torch.sigmoid(segment(runner.model, ids, runner.family.pixel_values(study))[0, 0]).numpy()
    (probabilities,) = grounder.heatmaps(study, "Any nodule?", answer, [(0, len(answer))])
    torch.testing.assert_close(torch.as_tensor(probabilities), torch.as_tensor(expected), atol=1e-6, rtol=0)
    if (expected >= 0.5).any():
        assert sentence.location.method == "m3d-segmentation"
    else:
        assert sentence.location is None and sentence.why_none == "no voxel reaches probability 0.5"
    engine.shutdown()
