"""radreport predict --batch-size: several studies' answers decoded together give the one-at-a-time output.

Batched decoding (engine/batched.py) left-pads the prompts' caches, masks the padding, gives each row its own
positions and stops each row on its own; the tests compare whole prediction files against one study at a time,
with the demo model (real end-of-sequence stops at different lengths) and a tiny random-weight model (prompts
of different lengths, a repetition penalty), a study that cannot be read, and a resumed run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_radreport.batch_predict import (
    RunPlace,
    predict_study,
    read_predictions,
    run_meta,
    run_predictions,
)
from napari_radreport.data.manifest import read_manifest
from napari_radreport.engine import GenerationSettings
from napari_radreport.engine.batched import Batcher, batch_refusal

from tiny_models import loaded_engine

TASKS = ["report", "answers", "diagnosis"]


def _manifest(folder: Path, count: int, seed: int, *, missing: int | None = None) -> Path:
    """``count`` phantom studies; study ``missing`` (if given) points at a file that does not exist."""
    from napari_radreport.data.phantoms.generate import write_phantoms

    path = write_phantoms(folder, count, seed=seed, val=0.0, test=0.0)
    records = read_manifest(path)
    if missing is not None:
        records[missing].images = ["volumes/missing.nii.gz"]
    path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory) -> Path:
    return _manifest(tmp_path_factory.mktemp("batched_phantoms"), 4, seed=5, missing=2)


@pytest.fixture(scope="module")
def demo():
    yield from loaded_engine(None, device="cpu")


@pytest.fixture(scope="module")
def tiny(tiny_ct_model):
    yield from loaded_engine(tiny_ct_model, device="cpu")


def _run(engine, manifest, out, settings, batch_size=1, tasks=TASKS, **kwargs) -> dict[str, int]:
    engine.runner.clear()  # each run starts from the same (empty) caches
    meta = run_meta(engine.info, tasks, settings, manifest, "all")
    return run_predictions(engine, read_manifest(manifest), out, meta, tasks, settings,
                           place=RunPlace(0, 1, 0), batch_size=batch_size, **kwargs)


def _lines(path: Path) -> list[str]:
    """The prediction lines of a file (its first, ``_meta``, line holds the creation time)."""
    return path.read_text().splitlines()[1:]


@pytest.mark.parametrize("batch_size", [2, 3])
def test_demo_model_batched_equals_one_at_a_time(demo, phantoms, tmp_path, batch_size):
    settings = GenerationSettings(max_new_tokens=24)
    _run(demo, phantoms, tmp_path / "one.jsonl", settings)
    counts = _run(demo, phantoms, tmp_path / "many.jsonl", settings, batch_size)
    assert counts == {"predicted": 4, "failed": 1, "skipped": 0}
    assert _lines(tmp_path / "many.jsonl") == _lines(tmp_path / "one.jsonl")  # byte for byte
    one = read_predictions(tmp_path / "one.jsonl")[1]
    answers = [a["answer"] for p in one.values() for a in p.get("answers", []) if "choice_index" not in a]
    lengths = {len(a.split()) for a in answers}
    assert len(lengths) > 3 and min(lengths) < 8  # answers stop at their own end, some long before 24 tokens


def test_the_batch_really_decodes_together_with_padding_and_own_stops(demo, phantoms):
    """The same predictions as one at a time, most answers decoded in the batch (not alone), prompts of
    different lengths and answers that stop at different steps."""
    settings = GenerationSettings(max_new_tokens=24)
    records = [r for r in read_manifest(phantoms) if "missing" not in r.images[0]][:3]
    demo.runner.clear()
    one = [predict_study(demo, r, ["report", "answers"], settings) for r in records]
    demo.runner.clear()
    batcher = Batcher(demo)
    many = batcher.predict(records, lambda r: predict_study(demo, r, ["report", "answers"], settings))
    assert many == one
    stats = batcher.stats
    generations = sum(2 + 3 * bool(r.regions) + sum(not qa.choices for qa in r.qa) for r in records)
    assert stats.batched + stats.alone == generations and stats.alone <= 2, stats
    assert stats.steps == 24 - 1  # the longest rows ran to max_new_tokens (the first token: from the prompt)


def test_tiny_model_with_repetition_penalty_batched_equals_one_at_a_time(tiny, phantoms, tmp_path):
    settings = GenerationSettings(max_new_tokens=7, repetition_penalty=1.3)
    _run(tiny, phantoms, tmp_path / "one.jsonl", settings)
    _run(tiny, phantoms, tmp_path / "many.jsonl", settings, 3)
    assert _lines(tmp_path / "many.jsonl") == _lines(tmp_path / "one.jsonl")


def test_a_study_that_cannot_be_read_fails_alone_in_its_batch(tiny, phantoms, tmp_path):
    settings = GenerationSettings(max_new_tokens=5)
    counts = _run(tiny, phantoms, tmp_path / "many.jsonl", settings, 4, tasks=["report"])
    assert counts == {"predicted": 4, "failed": 1, "skipped": 0}
    studies = list(read_predictions(tmp_path / "many.jsonl")[1].values())
    assert "missing.nii.gz" in studies[2]["error"] and "findings" not in studies[2]
    others = [s for i, s in enumerate(studies) if i != 2]
    assert all(s["findings"] and s["impression"] and "error" not in s for s in others)
    _run(tiny, phantoms, tmp_path / "one.jsonl", settings, tasks=["report"])
    assert _lines(tmp_path / "many.jsonl") == _lines(tmp_path / "one.jsonl")


def test_interrupted_batched_run_resumes_to_the_one_at_a_time_output(tiny, phantoms, tmp_path):
    settings = GenerationSettings(max_new_tokens=5)
    _run(tiny, phantoms, tmp_path / "one.jsonl", settings)

    def interrupt(prediction, index, total):
        if index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(tiny, phantoms, tmp_path / "resumed.jsonl", settings, 2, on_done=interrupt)
    assert len(read_predictions(tmp_path / "resumed.jsonl")[1]) == 2  # the whole first batch was written
    counts = _run(tiny, phantoms, tmp_path / "resumed.jsonl", settings, 2)
    assert counts["skipped"] == 2 and counts["predicted"] == 2
    assert _lines(tmp_path / "resumed.jsonl") == _lines(tmp_path / "one.jsonl")


def test_a_later_prompt_that_reuses_a_deferred_answer_sees_it_decoded(tiny, phantoms):
    """A prompt that starts with a deferred answer's prompt and its first token reuses that token's cache, as
    one at a time does: the deferred answer is decoded alone first, so the numbers are the same."""
    import torch

    from napari_radreport.data.studies import read_record_study
    from napari_radreport.engine.batched import decode_batch, deferring

    runner, settings = tiny.runner, GenerationSettings(max_new_tokens=4)
    study = read_record_study(read_manifest(phantoms)[0])
    first = "Is there a nodule"

    def one_at_a_time():
        runner.clear()
        answer = runner.generate(study, first, settings)
        later = f"{first} {runner.loaded.tokenizer.decode(answer.token_ids[:1])} in the lung"
        assert runner.prompt(study, later)[0][:len(runner.prompt(study, first)[0]) + 1] == \
            runner.prompt(study, first)[0] + answer.token_ids[:1]
        return answer, later, runner.next_token_logprobs(study, [later])

    answer, later, expected = tiny.call(one_at_a_time)

    def deferred():
        runner.clear()
        view = deferring(runner)
        view.generate(study, first, settings)
        logprobs = view.next_token_logprobs(study, [later])
        decode_batch(view, view.deferred)
        return view.deferred[0], logprobs

    item, logprobs = tiny.call(deferred)
    assert item.alone and item.tokens == answer.token_ids
    assert torch.equal(logprobs, expected)


def test_sampling_decodes_one_study_at_a_time(tiny, phantoms, tmp_path):
    settings = GenerationSettings(max_new_tokens=4, do_sample=True, seed=3)
    assert "sampling" in batch_refusal(tiny, settings) and batch_refusal(tiny, GenerationSettings()) == ""
    _run(tiny, phantoms, tmp_path / "one.jsonl", settings, tasks=["report"])
    _run(tiny, phantoms, tmp_path / "many.jsonl", settings, 3, tasks=["report"])
    assert _lines(tmp_path / "many.jsonl") == _lines(tmp_path / "one.jsonl")


def test_command_line_batch_size(tiny_ct_model, phantoms, tmp_path, capsys):
    from napari_radreport.cli import main

    common = ["predict", "--manifest", str(phantoms), "--split", "all", "--model", str(tiny_ct_model),
              "--max-new-tokens", "4", "--device", "cpu", "--tasks", "report", "answers"]
    assert main([*common, "--out", str(tmp_path / "one.jsonl")]) == 0
    assert main([*common, "--out", str(tmp_path / "many.jsonl"), "--batch-size", "3"]) == 0
    assert "4 predicted (1 failed" in capsys.readouterr().err
    assert _lines(tmp_path / "many.jsonl") == _lines(tmp_path / "one.jsonl")
    meta = read_predictions(tmp_path / "many.jsonl")[0]
    assert "batch_size" not in json.dumps(meta)  # not part of what a resumed run must match
    with pytest.raises(SystemExit):
        main([*common, "--out", str(tmp_path / "x.jsonl"), "--batch-size", "0"])
