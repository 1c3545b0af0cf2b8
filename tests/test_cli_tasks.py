"""radreport report / ask / diagnose with a tiny random-weight model on real studies; --out refused before
the model loads; Ctrl-C while loading or generating."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")

from napari_radreport.cli import main
from napari_radreport.modeling.prompt_spec import CT_RATE_LABELS


def test_report_streams_to_stdout_and_writes_the_file(tiny_ct_model, abdomen_nifti, tmp_path, capsys):
    out = tmp_path / "report.json"
    args = ["report", str(abdomen_nifti), "--model", str(tiny_ct_model), "--max-new-tokens", "6",
            "--region", "chest,pelvis", "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr()
    record = json.loads(out.read_text())
    assert printed.out.startswith("Findings (chest):\n") and "Findings (pelvis):" in printed.out
    assert record["ai_draft"].split() == printed.out.split()  # what streamed is what was written
    assert record["provenance"]["task"] == "report:findings+impression;regions=chest,pelvis"
    assert record["provenance"]["generation"]["max_new_tokens"] == 6
    assert f"wrote {out}" in printed.err
    assert "source" not in record["study"] and str(abdomen_nifti) not in out.read_text()
    assert main(args) == 1  # never overwrite without being told
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--include-paths"]) == 0
    assert json.loads(out.read_text())["study"]["source"] == [str(abdomen_nifti)]


def test_ask_and_multiple_choice(tiny_ct_model, abdomen_nifti, capsys):
    assert main(["ask", str(abdomen_nifti), "Is there a pleural effusion?", "--model", str(tiny_ct_model),
                 "--max-new-tokens", "5"]) == 0
    assert len(capsys.readouterr().out.split()) >= 1
    assert main(["ask", str(abdomen_nifti), "Which side?", "--choices", "left", "right", "both",
                 "--model", str(tiny_ct_model)]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() in ("A", "B", "C") and "A " in printed.err


def test_ask_json_is_one_object_with_the_answer_its_token_ids_and_provenance(tiny_ct_model, abdomen_nifti,
                                                                             capsys):
    from transformers import AutoTokenizer

    question = ["ask", str(abdomen_nifti), "Is there a pleural effusion?", "--model", str(tiny_ct_model)]
    assert main([*question, "--max-new-tokens", "6", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert 1 <= len(answer["token_ids"]) <= 6 and answer["stop_reason"] in ("eos", "length")
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_ct_model))
    assert tokenizer.decode(answer["token_ids"], skip_special_tokens=True).strip() == answer["answer"]
    assert answer["model"] == tiny_ct_model.name and answer["provenance"]["task"] == "ask"
    assert answer["provenance"]["generation"]["max_new_tokens"] == 6 and "in_scope" in answer["scope"]
    assert main([*question[:2], "Which side?", *question[3:], "--choices", "left", "right", "--json"]) == 0
    choice = json.loads(capsys.readouterr().out)
    assert choice["letter"] in ("A", "B") and sum(choice["probabilities"].values()) == pytest.approx(1)


def test_diagnose_prints_eighteen_probabilities_as_json(tiny_ct_model, abdomen_nifti, capsys):
    assert main(["diagnose", str(abdomen_nifti), "--model", str(tiny_ct_model), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result["probabilities"]) == list(CT_RATE_LABELS)
    assert all(0 < p < 1 for p in result["probabilities"].values())


@pytest.mark.parametrize("args, message", [
    (["report", "{xray}", "--model", "{model}"], "the model reads CT volumes; this study is radiographs"),
    (["report", "{ct}", "--model", "{missing}"], "no-such-model"),
    (["report", "{ct}", "--model", "{model}", "--region", "head"], "unknown region(s) head"),
    (["ask", "Is there a nodule?", "--model", "{model}"], "give the study's path(s) then the question"),
])
def test_errors_exit_non_zero_with_one_line(args, message, tiny_ct_model, abdomen_nifti, shared_data,
                                            tmp_path, capsys):
    values = {"xray": shared_data / "xray" / "nih_00000001_000_cardiomegaly.png", "model": tiny_ct_model,
              "ct": abdomen_nifti, "missing": tmp_path / "no-such-model"}
    assert main([a.format(**values) for a in args]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("radreport: error:") and message in err[-1]


def test_ctrl_c_stops_the_report_and_still_writes_the_partial_draft(tiny_ct_model, abdomen_nifti, tmp_path):
    out = tmp_path / "partial.txt"
    script = ("import time, sys; from napari_radreport.cli import main\n"
              "from transformers import LlamaForCausalLM  # slowed down below so that the run lasts\n"
              "orig = LlamaForCausalLM.forward\n"
              "def slow(self, *a, **k):\n    time.sleep(0.05)\n    return orig(self, *a, **k)\n"
              "LlamaForCausalLM.forward = slow\n"
              "sys.exit(main(sys.argv[1:]))\n")
    child = subprocess.Popen([sys.executable, "-c", script, "report", str(abdomen_nifti), "--model",
                              str(tiny_ct_model), "--max-new-tokens", "3000", "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = child.stdout.readline()  # "Findings:" once generation runs
    time.sleep(0.5)
    child.send_signal(signal.SIGINT)
    stdout, stderr = child.communicate(timeout=60)
    assert first.startswith("Findings") and child.returncode == 130, stderr
    assert "stopping" in stderr and "(stopped early)" in stderr
    text = out.read_text()
    assert "Findings" in text and "Impression" not in text
    assert "Status: AI draft, not reviewed; incomplete: generation was stopped" in text
    assert os.path.getsize(out) > 0


def _unwritable_folder(tmp_path: Path) -> Path:
    """A 0555 folder, or /sys for root (who ignores the mode bits)."""
    from napari_radreport.export.writers import _cannot_create_in

    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    for candidate in (folder, Path("/sys")):
        if candidate.is_dir() and _cannot_create_in(candidate):
            return candidate
    pytest.skip("no folder that this user cannot write to")


@pytest.mark.parametrize("case, message", [
    ("missing", "missing/r.txt: folder {tmp}/missing does not exist"),
    ("read-only", "is not writable ("),
    ("folder", "{tmp} is a folder, not a file"),
    ("exists", "exists; pass --overwrite to replace it"),
    ("sr-into-txt", "x.txt: the suffix .txt does not match the format sr (sr files end in .dcm"),
])
def test_out_is_refused_before_the_study_is_read_or_the_model_loaded(case, message, tiny_ct_model,
                                                                      abdomen_nifti, tmp_path, capsys,
                                                                      monkeypatch):
    import napari_radreport.io
    from napari_radreport.engine.engine import Engine

    started = []

    def refuse(*args, **kwargs):
        started.append(args)
        raise RuntimeError("started")

    monkeypatch.setattr(napari_radreport.io, "load_study", refuse)
    monkeypatch.setattr(Engine, "start", refuse)
    (tmp_path / "exists.txt").write_text("kept")
    out, fmt = {"missing": (tmp_path / "missing" / "r.txt", []), "folder": (tmp_path, ["--format", "txt"]),
                "exists": (tmp_path / "exists.txt", []),
                "sr-into-txt": (tmp_path / "x.txt", ["--format", "sr"])}.get(case, (None, []))
    if case == "read-only":
        out = _unwritable_folder(tmp_path) / "r.txt"
    assert main(["report", str(abdomen_nifti), "--model", str(tiny_ct_model), "--out", str(out), *fmt]) == 1
    err = capsys.readouterr().err
    assert started == [] and err.count("\n") == 1 and err.startswith("radreport: error: ")
    assert message.format(tmp=tmp_path) in err
    assert (tmp_path / "exists.txt").read_text() == "kept"


def test_ctrl_c_while_the_model_loads_exits_at_once_with_one_line(tiny_ct_model, abdomen_nifti, tmp_path):
    script = ("import sys, time\nimport napari_radreport.modeling.loading as loading\n"
              "real = loading.load_model\n"
              "def slow(*a, **k):  # a large model: minutes; a load does not stop midway\n"
              "    time.sleep(120)\n    return real(*a, **k)\n"
              "loading.load_model = slow\n"
              "from napari_radreport.cli.parser import main\nsys.exit(main(sys.argv[1:]))\n")
    child = subprocess.Popen([sys.executable, "-c", script, "report", str(abdomen_nifti), "--model",
                              str(tiny_ct_model), "--out", str(tmp_path / "r.txt")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
    before = child.stderr.readline()
    assert before.startswith("radreport: Loading tiny-ct (53 tensors, "), before  # what loads, its size
    time.sleep(0.3)  # inside load_model
    start = time.monotonic()
    child.send_signal(signal.SIGINT)
    stdout, after = child.communicate(timeout=60)
    assert child.returncode == 130 and time.monotonic() - start < 30  # the load was not waited for
    assert after.splitlines() == ["radreport: interrupted"]  # one line, no traceback
    assert stdout == "" and list(tmp_path.iterdir()) == []
