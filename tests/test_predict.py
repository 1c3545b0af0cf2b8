"""radreport predict: predictions per study, resumed after an interruption, spread over processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from napari_radreport.batch_predict import (
    PredictionsMismatch,
    RunPlace,
    read_predictions,
    run_meta,
    run_predictions,
)
from napari_radreport.data.manifest import read_manifest
from napari_radreport.engine import Engine, GenerationSettings

from cli_runs import run_cli

TASKS = ["report", "answers", "diagnosis"]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    from napari_radreport.data.phantoms.generate import write_phantoms

    path = write_phantoms(tmp_path_factory.mktemp("predict_phantoms"), 4, seed=11, val=0.0, test=0.0)
    records = read_manifest(path)
    records[1].images = ["volumes/missing.nii.gz"]  # one study that cannot be read
    path.write_text("".join(json.dumps(r.to_json()) + "\n" for r in records))
    return path


@pytest.fixture(scope="module")
def engine(tiny_ct_model):
    engine = Engine()
    engine.load(tiny_ct_model, device="cpu")
    yield engine
    engine.shutdown()


def _run(engine, manifest, out, settings=None, **kwargs):
    settings = settings or GenerationSettings(max_new_tokens=6)
    meta = run_meta(engine.info, TASKS, settings, manifest, "all")
    return run_predictions(engine, read_manifest(manifest), out, meta, TASKS, settings,
                           place=RunPlace(0, 1, 0), **kwargs)


def _studies(path) -> dict[str, dict]:
    return read_predictions(path)[1]


def test_predictions_per_study_with_model_and_settings_recorded(engine, manifest, tmp_path):
    counts = _run(engine, manifest, tmp_path / "p.jsonl")
    assert counts == {"predicted": 4, "failed": 1, "skipped": 0}
    meta, studies = read_predictions(tmp_path / "p.jsonl")
    assert meta["weights_sha256"] == engine.info.weights_sha256 and meta["settings"]["max_new_tokens"] == 6
    assert meta["tasks"] == TASKS and len(meta["manifest_sha256"]) == 64
    records = read_manifest(manifest)
    assert list(studies) == [r.id for r in records]
    bad = studies[records[1].id]
    assert "missing.nii.gz" in bad["error"] and "findings" not in bad
    good = studies[records[0].id]
    assert isinstance(good["findings"], str) and isinstance(good["impression"], str)
    assert set(good["regions"]) == {"chest", "abdomen", "pelvis"}
    assert len(good["answers"]) == len(records[0].qa)
    assert set(good["diagnosis"]) == set(records[0].labels)
    choice = next(a for a, q in zip(good["answers"], records[0].qa) if q.choices)
    assert choice["answer"] == "ABCD"[choice["choice_index"]]


def test_interrupted_and_resumed_equals_one_run(engine, manifest, tmp_path):
    _run(engine, manifest, tmp_path / "whole.jsonl")

    def interrupt_after_two(prediction, index, total):
        if index == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(engine, manifest, tmp_path / "resumed.jsonl", on_done=interrupt_after_two)
    assert len(_studies(tmp_path / "resumed.jsonl")) == 2  # what was done is on disk
    with open(tmp_path / "resumed.jsonl", "a") as handle:  # and a kill in the middle of the third line
        handle.write('{"id": "phantom-0000')
    assert len(_studies(tmp_path / "resumed.jsonl")) == 2
    counts = _run(engine, manifest, tmp_path / "resumed.jsonl")
    assert counts["skipped"] == 2 and counts["predicted"] == 2
    assert _studies(tmp_path / "resumed.jsonl") == _studies(tmp_path / "whole.jsonl")
    assert len((tmp_path / "resumed.jsonl").read_text().splitlines()) == 5  # meta + 4, the cut line gone


def test_other_settings_are_refused_unless_overwriting(engine, manifest, tmp_path):
    out = tmp_path / "p.jsonl"
    _run(engine, manifest, out)
    with pytest.raises(PredictionsMismatch, match="another settings.*--overwrite"):
        _run(engine, manifest, out, settings=GenerationSettings(max_new_tokens=7))
    counts = _run(engine, manifest, out, settings=GenerationSettings(max_new_tokens=7), overwrite=True)
    assert counts["predicted"] == 4 and read_predictions(out)[0]["settings"]["max_new_tokens"] == 7


def test_a_broken_line_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"_meta": {}}\n{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="p.jsonl:3: not a JSON line"):
        read_predictions(path)



@pytest.mark.slow
def test_two_processes_under_accelerate_give_the_one_process_predictions(manifest, tiny_ct_model, tmp_path):
    common = ["predict", "--manifest", str(manifest), "--split", "all", "--model", str(tiny_ct_model),
              "--max-new-tokens", "6", "--device", "cpu"]
    one = run_cli(common + ["--out", str(tmp_path / "one.jsonl")])
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_cli(common + ["--out", str(tmp_path / "two.jsonl")], processes=2)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "[process 1/2]" in two.stderr and "[process 0/2]" in two.stderr
    assert two.stderr.count("radreport: 2 predicted") == 2, two.stderr[-2000:]  # each took half of the 4
    assert not list(tmp_path.glob("two.jsonl.part*"))  # merged
    one_ids, two_ids = list(_studies(tmp_path / "one.jsonl")), list(_studies(tmp_path / "two.jsonl"))
    assert one_ids == two_ids  # manifest order after the merge
    assert _studies(tmp_path / "one.jsonl") == _studies(tmp_path / "two.jsonl")


def test_eval_scores_a_predictions_file_from_the_command_line(engine, manifest, tmp_path, capsys):
    from napari_radreport.cli import main

    preds = tmp_path / "p.jsonl"
    _run(engine, manifest, preds)
    scores, plot = tmp_path / "scores.json", tmp_path / "labels.svg"
    code = main(["eval", "--preset", "diagnosis", "--manifest", str(manifest), "--split", "all",
                 "--predictions", str(preds), "--bootstrap", "50", "--out", str(scores), "--plot", str(plot)])
    assert code == 0
    result = json.loads(scores.read_text())
    assert result["predictions_meta"]["weights_sha256"] == engine.info.weights_sha256
    [block] = result["blocks"]
    assert block["n"] == 3 and block["skipped"] == {"prediction failed": 1}
    assert "macro F1" in capsys.readouterr().out and plot.read_text().startswith("<svg")
    # a study missing from the predictions: refused, unless --partial
    lines = preds.read_text().splitlines()
    preds.write_text("\n".join(lines[:-1]) + "\n")
    assert main(["eval", "--preset", "m3d", "--manifest", str(manifest), "--split", "all", "--predictions",
                 str(preds), "--bootstrap", "0"]) == 1
    assert "1 of 4 studies have no prediction" in capsys.readouterr().err
    assert main(["eval", "--preset", "m3d", "--manifest", str(manifest), "--split", "all", "--predictions",
                 str(preds), "--bootstrap", "0", "--partial"]) == 0
    assert "== findings: 3 studies" in capsys.readouterr().out


def test_predictions_of_other_weights_precision_are_refused(tmp_path):
    """8-bit weights write other texts: a file made with them is not resumed with full precision, and a file
    from before the key existed counts as full precision."""
    from napari_radreport.batch_predict import check_meta

    wanted = {"weights_sha256": "w", "quantization": "none", "tasks": ["report"], "settings": {},
              "manifest_sha256": "m", "split": "test"}
    check_meta(tmp_path / "old.jsonl", {k: v for k, v in wanted.items() if k != "quantization"}, wanted)
    with pytest.raises(PredictionsMismatch, match="another quantization \\('int8', now 'none'\\)"):
        check_meta(tmp_path / "p.jsonl", {**wanted, "quantization": "int8"}, wanted)
