"""Only weights that fit the model load: tensors missing, unexpected or of the wrong shape are refused in one
line (transformers' own loading report, read with ``output_loading_info``), unless ``allow_partial``, which
marks the model; a cut safetensors file or a broken tokenizer is one line naming the file."""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct

import pytest

torch = pytest.importorskip("torch")

from napari_radreport.engine import Engine, EngineError  # noqa: E402
from napari_radreport.modeling.checkpoints import CheckpointError  # noqa: E402
from napari_radreport.modeling.loading import load_model  # noqa: E402

from m3d_reference import write_tiny_m3d_checkpoint  # noqa: E402
from tiny_models import write_tiny_llava  # noqa: E402


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    return write_tiny_llava(tmp_path_factory.mktemp("models") / "tiny-llava")


def _edited(folder, target, edit):
    """A copy of a model folder whose model.safetensors went through ``edit(tensors)``."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(folder, target)
    path = target / "model.safetensors"
    tensors = load_file(str(path))
    edit(tensors)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return target


def _drop_vision_tower(tensors):
    dropped = sorted(k for k in tensors if k.startswith("vision_tower."))
    for key in dropped:
        del tensors[key]
    return dropped


@pytest.mark.parametrize("which", ["ours", "llava"])
def test_a_folder_without_its_vision_tower_is_refused_naming_the_tensors_and_their_count(
        which, request, tmp_path):
    folder = request.getfixturevalue("tiny_ct_model" if which == "ours" else "tiny_llava")
    dropped = []
    broken = _edited(folder, tmp_path / "no-vision", lambda t: dropped.extend(_drop_vision_tower(t)))
    with pytest.raises(CheckpointError) as refused:
        load_model(broken)
    message = str(refused.value)
    assert message.startswith(f"{broken}: the weights do not fit the model") and "\n" not in message
    named = "model.vision_tower.embeddings" if which == "llava" else dropped[0]  # LLaVA's keys are renamed
    assert f"{len(dropped)} missing tensor(s) ({named}" in message
    assert "unexpected" not in message and "allow_partial" in message


def test_a_renamed_tensor_is_both_unexpected_and_missing(tiny_ct_model, tmp_path):
    key = "language_model.model.layers.0.mlp.down_proj.weight"
    broken = _edited(tiny_ct_model, tmp_path / "renamed", lambda t: t.update({key + "_old": t.pop(key)}))
    with pytest.raises(CheckpointError) as refused:
        load_model(broken)
    assert f"1 missing tensor(s) ({key}); 1 unexpected tensor(s) ({key}_old)" in str(refused.value)


@pytest.mark.parametrize("which", ["ours", "llava"])
def test_a_tensor_of_the_wrong_shape_is_refused_naming_both_shapes(which, request, tmp_path):
    folder = request.getfixturevalue("tiny_ct_model" if which == "ours" else "tiny_llava")
    key = "perceiver.projector.0.weight" if which == "ours" else "multi_modal_projector.linear_1.weight"

    def widen(tensors):
        rows, cols = tensors[key].shape
        tensors[key] = torch.zeros(rows + 1, cols)

    broken = _edited(folder, tmp_path / "wide", widen)
    with pytest.raises(CheckpointError) as refused:
        load_model(broken)
    message = str(refused.value)
    assert "1 tensor(s) of the wrong shape (" in message and str(broken) in message
    assert "in the file" in message and "missing" not in message and len(message.splitlines()) == 1


def test_allow_partial_loads_and_marks_the_model_and_its_info(tiny_ct_model, tmp_path):
    dropped = []
    broken = _edited(tiny_ct_model, tmp_path / "no-vision", lambda t: dropped.extend(_drop_vision_tower(t)))
    loaded = load_model(broken, allow_partial=True)
    [note] = loaded.incomplete
    assert note.startswith(f"{len(dropped)} missing tensor(s) ({dropped[0]}, ")
    engine = Engine()
    events = []
    try:
        with pytest.raises(CheckpointError, match="do not fit the model"):
            engine.load(broken)
        assert not engine.loaded
        info = engine.load(broken, allow_partial=True, on_event=events.append)
        assert info.incomplete == loaded.incomplete
        [warning] = [w for w in info.warnings if "do not fit" in w]
        assert f"{len(dropped)} missing tensor(s) ({dropped[0]}" in warning and "unreliable" in warning
        assert any(getattr(e, "message", "") == warning for e in events)  # shown while it loads
        assert engine.load(tiny_ct_model).incomplete == []  # an intact folder carries no note
    finally:
        engine.shutdown()


def test_complete_folders_load_with_no_note(tiny_ct_model, tiny_xray_model, tiny_llava, tmp_path,
                                           monkeypatch):
    from napari_radreport.bench.random_model import TINY_CT, write_random_radreport

    monkeypatch.setenv("RADREPORT_CACHE", str(tmp_path / "cache"))
    # tied embeddings: lm_head.weight is not saved, and must not count as missing
    tied = write_random_radreport(tmp_path / "tied", dataclasses.replace(
        TINY_CT, text={**TINY_CT.text, "num_hidden_layers": 1, "tie_word_embeddings": True}))
    write_tiny_m3d_checkpoint(tmp_path / "m3d", "phi3")  # converted into the cache, then loaded
    for folder in (tiny_ct_model, tiny_xray_model, tiny_llava, tied, tmp_path / "m3d"):
        assert load_model(folder).incomplete == [], folder
    language_model = load_model(tied).model.language_model
    assert language_model.lm_head.weight is language_model.model.embed_tokens.weight


def _cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


@pytest.mark.parametrize("damage, reason", [
    (lambda p: _cut(p, 100), "the header says it is"),
    (lambda p: _cut(p, p.stat().st_size // 2), "cut short"),
    (lambda p: p.write_bytes(struct.pack("<Q", 2 ** 62) + p.read_bytes()[8:]), "the header says it is"),
    (lambda p: p.write_bytes(p.read_bytes()[:8] + b"{garbage" + p.read_bytes()[16:]), "not valid JSON"),
])
def test_a_damaged_safetensors_file_is_named_never_out_of_memory(damage, reason, tiny_ct_model, tmp_path):
    broken = tmp_path / "damaged"
    shutil.copytree(tiny_ct_model, broken)
    damage(broken / "model.safetensors")
    with pytest.raises(CheckpointError, match=reason) as refused:
        load_model(broken)
    assert str(refused.value).startswith(f"{broken / 'model.safetensors'}: not a readable safetensors file")
    engine = Engine()  # the engine reads the headers first (memory check): the same line, not "out of memory"
    try:
        with pytest.raises(CheckpointError) as again:
            engine.load(broken)
        assert str(again.value) == str(refused.value) and not isinstance(again.value, EngineError)
    finally:
        engine.shutdown()


@pytest.mark.parametrize("which", ["ours", "llava"])
def test_a_tokenizer_that_cannot_be_read_is_named(which, request, tmp_path):
    folder = request.getfixturevalue("tiny_ct_model" if which == "ours" else "tiny_llava")
    broken = tmp_path / "bad-tokenizer"
    shutil.copytree(folder, broken)
    (broken / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    with pytest.raises(CheckpointError, match="tokenizer.json: the tokenizer") as refused:
        load_model(broken)
    assert str(refused.value).startswith(str(broken / "tokenizer.json"))
    valid_but_wrong = json.dumps({"version": "1.0", "model": {"type": "Nonsense"}})
    (broken / "tokenizer.json").write_text(valid_but_wrong)
    with pytest.raises(CheckpointError, match="tokenizer.json: the tokenizer"):
        load_model(broken)


def test_the_command_line_refuses_a_partial_model_and_marks_the_report_of_one_it_was_allowed(
        tiny_ct_model, abdomen_nifti, tmp_path, capsys):
    from napari_radreport.cli import main

    partial = _edited(tiny_ct_model, tmp_path / "partial", _drop_vision_tower)
    args = ["report", str(abdomen_nifti), "--model", str(partial), "--max-new-tokens", "3",
            "--task", "impression"]
    assert main(args) == 1 and "missing tensor(s)" in capsys.readouterr().err
    out = tmp_path / "r.txt"
    assert main([*args, "--allow-partial", "--out", str(out)]) == 0
    assert "written by a model with incomplete weights (unreliable)" in out.read_text()
