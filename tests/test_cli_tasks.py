"""radreport report / ask / diagnose with a tiny random-weight model on real studies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

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
    assert main(args) == 1  # never overwrite without being told
    assert "exists; pass --overwrite" in capsys.readouterr().err
    assert main(args + ["--overwrite", "--format", "txt"]) == 0


def test_ask_and_multiple_choice(tiny_ct_model, abdomen_nifti, capsys):
    assert main(["ask", str(abdomen_nifti), "Is there a pleural effusion?", "--model", str(tiny_ct_model),
                 "--max-new-tokens", "5"]) == 0
    assert len(capsys.readouterr().out.split()) >= 1
    assert main(["ask", str(abdomen_nifti), "Which side?", "--choices", "left", "right", "both",
                 "--model", str(tiny_ct_model)]) == 0
    printed = capsys.readouterr()
    assert printed.out.strip() in ("A", "B", "C") and "A " in printed.err


def test_diagnose_prints_eighteen_probabilities_as_json(tiny_ct_model, abdomen_nifti, capsys):
    assert main(["diagnose", str(abdomen_nifti), "--model", str(tiny_ct_model), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert list(result["probabilities"]) == list(CT_RATE_LABELS)
    assert all(0 < p < 1 for p in result["probabilities"].values())


@pytest.mark.parametrize("args, message", [
    (["report", "{xray}", "--model", "{model}"], "reads CT volumes; the study is a xray_set"),
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
    assert os.path.getsize(out) > 0
