"""The phantom preset's honest figures: present and absent findings apart, sensitivity and specificity,
intervals over studies and the blind baseline, on hand-built outcomes and end to end with the demo model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_radreport.data.phantoms.reports import FINDING_NAMES, read_findings
from napari_radreport.evaluation.bootstrap import bootstrap, bootstrap_ratios
from napari_radreport.evaluation.phantom_figures import format_figures, phantom_figures
from napari_radreport.evaluation.phantoms import DENIED, PARTS, PRESENT, SILENT, PhantomScores, StudyOutcome

N_FINDINGS = len(FINDING_NAMES)


def _truth(n: int = 120, prevalence: float = 0.35, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, N_FINDINGS)) < prevalence


def _scores(truth: np.ndarray, stated: np.ndarray, right: np.ndarray, answers=None) -> PhantomScores:
    """Every part (Findings, Impression, diagnosis) with the same outcomes."""
    scores = PhantomScores()
    for i in range(len(truth)):
        study = StudyOutcome(f"s{i}", answers=list(answers[i]) if answers else [])
        for part in PARTS:
            study.truth[part] = tuple(bool(x) for x in truth[i])
            study.stated[part] = tuple(int(x) for x in stated[i])
            study.right[part] = tuple(bool(x) for x in right[i])
        scores.studies.append(study)
    return scores


def _values(block: dict, system: str) -> dict[str, float | None]:
    """Every figure of a part for one system, flattened: {"accuracy": ..., "nodule/sensitivity": ...}."""
    out = {key: block[key][system] for key in ("accuracy", "present", "absent", "sensitivity")}
    for name, row in block["by_finding"].items():
        out.update({f"{name}/{figure}": entry[system] for figure, entry in row.items()})
    return out


def test_a_model_that_always_says_absent_is_the_blind_baseline():
    truth = _truth()
    stated = np.full(truth.shape, DENIED)
    figures = phantom_figures(_scores(truth, stated, ~truth), resamples=200, seed=3)
    for part in PARTS:
        block = figures[part]
        assert _values(block, "model") == _values(block, "blind")  # values, intervals, counts
        assert block["sensitivity"]["model"]["value"] == 0 and block["present"]["model"]["value"] == 0
        assert block["absent"]["model"]["value"] == 1
        assert block["accuracy"]["model"]["value"] == pytest.approx(1 - truth.mean())
        for name, row in block["by_finding"].items():
            sensitivity, specificity = row["sensitivity"]["model"], row["specificity"]["model"]
            assert (sensitivity["value"], specificity["value"]) == (0, 1), name
    assert figures["blind_states_present"] == {part: [] for part in PARTS}


def test_a_perfect_model_has_sensitivity_and_specificity_one():
    truth = _truth()
    stated = np.where(truth, PRESENT, DENIED)
    figures = phantom_figures(_scores(truth, stated, np.ones_like(truth)), resamples=100)
    block = figures["findings"]
    for key in ("accuracy", "present", "absent", "sensitivity"):
        assert block[key]["model"]["value"] == 1, key
    for row in block["by_finding"].values():
        for figure in ("accuracy", "sensitivity", "specificity", "fully_right_when_present"):
            assert row[figure]["model"]["value"] == 1
            assert row[figure]["model"]["low"] == 1 == row[figure]["model"]["high"]
    # the blind system: right where the truth is its majority answer ("absent" here)
    assert block["accuracy"]["blind"]["value"] == pytest.approx(1 - truth.mean())
    assert block["accuracy"]["blind"]["right"] == int((~truth).sum())


def test_presence_without_the_right_side_counts_for_sensitivity_only():
    truth = _truth()
    stated = np.where(truth, PRESENT, DENIED)
    right = ~truth  # every present finding named, each with the wrong side / lobe / size
    block = phantom_figures(_scores(truth, stated, right), resamples=0)["findings"]
    assert block["sensitivity"]["model"]["value"] == 1 and block["present"]["model"]["value"] == 0
    nodule = block["by_finding"]["nodule"]
    assert nodule["sensitivity"]["model"]["value"] == 1
    assert nodule["fully_right_when_present"]["model"]["value"] == 0
    assert nodule["fully_right_when_present"]["model"]["n"] == int(truth[:, 0].sum())


def test_a_finding_left_unsaid_is_not_denied():
    truth = _truth()
    stated = np.where(truth, PRESENT, SILENT)  # the section never speaks of the absent ones
    block = phantom_figures(_scores(truth, stated, truth.copy()), resamples=0)["findings"]
    assert block["absent"]["model"]["value"] == 0
    assert all(row["specificity"]["model"]["value"] == 0 for row in block["by_finding"].values())
    assert block["present"]["model"]["value"] == 1


def test_the_blind_baseline_states_present_where_most_studies_have_the_finding():
    truth = _truth(prevalence=0.35)
    truth[:, 2] = np.arange(len(truth)) % 4 != 0  # cardiomegaly in 3 of 4 studies
    stated = np.full(truth.shape, DENIED)
    figures = phantom_figures(_scores(truth, stated, ~truth), resamples=0)
    assert figures["blind_states_present"]["findings"] == ["cardiomegaly"]
    cardiomegaly = figures["findings"]["by_finding"]["cardiomegaly"]
    value = {(figure, system): cardiomegaly[figure][system]["value"] for figure in cardiomegaly
             for system in ("model", "blind")}
    assert value["sensitivity", "blind"] == 1 and value["specificity", "blind"] == 0
    assert value["accuracy", "blind"] == 0.75 and value["accuracy", "model"] == 0.25


def test_intervals_contain_the_value_and_follow_the_seed():
    truth = _truth()
    noise = np.random.default_rng(5).random(truth.shape) < 0.2
    stated = np.where(truth ^ noise, PRESENT, DENIED)
    scores = _scores(truth, stated, (stated == PRESENT) == truth)
    first, again = (phantom_figures(scores, resamples=300, seed=7) for _ in range(2))
    other = phantom_figures(scores, resamples=300, seed=8)
    assert first == again
    assert first["findings"]["accuracy"]["model"] != other["findings"]["accuracy"]["model"]
    for part in PARTS:
        for system in ("model", "blind"):
            for name, figure in _values(first[part], system).items():
                if figure["value"] is not None:
                    assert figure["low"] <= figure["value"] <= figure["high"], (part, system, name)
    width = first["findings"]["accuracy"]["model"]
    assert width["high"] - width["low"] > 0.01  # 120 studies: not a point
    none = phantom_figures(scores, resamples=0)
    assert none["findings"]["accuracy"]["model"]["low"] is None
    assert none["findings"]["accuracy"]["model"]["value"] == first["findings"]["accuracy"]["model"]["value"]


class _Ratio:
    """A Metric over (right, n) per item: sum(right) / sum(n), to check bootstrap_ratios against bootstrap."""

    spec = None

    def aggregate(self, stats):
        return {"ratio": sum(r for r, _ in stats) / sum(n for _, n in stats)}


def test_bootstrap_ratios_redo_bootstraps_resamples():
    rng = np.random.default_rng(0)
    asked = rng.integers(1, 8, size=50)
    right = rng.binomial(asked, 0.7)
    stats = list(zip(right, asked, strict=True))
    slow = bootstrap(_Ratio(), stats, resamples=200, seed=4, level=0.9)["ratio"]
    [fast] = bootstrap_ratios(right[:, None], asked[:, None], resamples=200, seed=4, level=0.9)
    assert fast.value == pytest.approx(slow.value) and fast.low == pytest.approx(slow.low)
    assert fast.high == pytest.approx(slow.high)


def test_questions_keep_accuracy_per_kind_and_the_blind_answers_yes_no_only():
    truth = _truth(n=40)
    answers = [[("yes/no nodule", bool(truth[i, 0]), "nodule"), ("multiple choice", i % 2 == 0, None)]
               for i in range(len(truth))]
    stated = np.where(truth, PRESENT, DENIED)
    scores = _scores(truth, stated, np.ones_like(truth), answers)
    questions = phantom_figures(scores, resamples=50)["questions"]
    assert questions["accuracy"]["model"]["value"] == pytest.approx((truth[:, 0].sum() + 20) / 80)
    assert questions["accuracy"]["blind"] is None
    nodule = questions["by_kind"]["yes/no nodule"]["accuracy"]
    assert nodule["model"]["value"] == pytest.approx(truth[:, 0].mean())
    assert nodule["blind"]["value"] == pytest.approx(1 - truth[:, 0].mean())  # always "No"
    assert questions["by_kind"]["multiple choice"]["accuracy"]["blind"] is None
    by_kind = scores.summary()["questions"]["by_kind"]
    assert by_kind["multiple choice"] == {"accuracy": 0.5, "right": 20, "n": 40}


def test_the_plain_summary_keeps_its_keys():
    truth = _truth(n=10)
    stated = np.full(truth.shape, DENIED)
    summary = _scores(truth, stated, ~truth).summary()
    assert set(summary) == {"findings", "impression", "questions", "diagnosis", "conflicts"}  # + the count
    assert summary["conflicts"] == {"reports": 10, "with_conflicts": 0, "total": 0, "per_report": 0.0,
                                    "by_kind": {}}
    assert summary["findings"]["n"] == 10 * N_FINDINGS and summary["findings"]["right"] == int((~truth).sum())
    assert set(summary["findings"]["by_kind"]) == set(FINDING_NAMES)
    assert "Lung nodule" in summary["diagnosis"]["by_kind"]


def test_the_table_puts_the_blind_figure_beside_the_model():
    truth = _truth()
    stated = np.where(truth, PRESENT, DENIED)
    figures = phantom_figures(_scores(truth, stated, np.ones_like(truth)), resamples=100)
    text = format_figures(figures)
    header = next(line for line in text.splitlines() if line.startswith("findings"))
    assert header.split() == ["findings", "model", "blind"]
    accuracy = next(line for line in text.splitlines() if "accuracy, all findings" in line)
    blind = figures["findings"]["accuracy"]["blind"]
    blind_text = f"{100 * blind['value']:.1f} [{100 * blind['low']:.1f}, {100 * blind['high']:.1f}]"
    assert accuracy.split()[3:] == ["100.0", "[100.0,", "100.0]", *blind_text.split()]  # model, then blind
    assert "blind: reads no image" in text and "nodules whose side, lobe and size" in text


class _PositiveOnlyEngine:
    """Writes the true positive findings and nothing else, an empty impression, "No." to every question,
    option A, and P(yes) = 1 for every label."""

    def __init__(self, records):
        self.records, self.record = iter(records), None

    def report(self, study, sections):
        from types import SimpleNamespace

        from napari_radreport.data.phantoms.reports import impression_text

        self.record = next(self.records)
        truth = read_findings(self.record.impression)
        positives = impression_text(truth, np.random.default_rng(0)) if any(_present(truth)) else ""
        return SimpleNamespace(sections=[("Findings", positives), ("Impression", "")], conflicts=[])

    def ask(self, study, question):
        from types import SimpleNamespace

        return SimpleNamespace(text="No.")

    def choose(self, study, question, choices):
        from types import SimpleNamespace

        return SimpleNamespace(letter="A")

    def diagnose(self, study, labels):
        return dict.fromkeys(labels, 1.0)


def _present(findings) -> list[bool]:
    return [bool(getattr(findings, name)) for name in FINDING_NAMES]


def test_evaluate_phantoms_records_silence_denial_and_presence(tmp_path):
    from napari_radreport.data.manifest import read_manifest
    from napari_radreport.data.phantoms.generate import write_phantoms
    from napari_radreport.evaluation.phantoms import evaluate_phantoms

    records = read_manifest(write_phantoms(tmp_path, 3, seed=7, val=0.0, test=0.0))
    scores = evaluate_phantoms(_PositiveOnlyEngine(records), records)
    truth = np.array([_present(read_findings(r.impression)) for r in records])
    assert truth.any() and not truth.all()
    for study, present in zip(scores.studies, truth, strict=True):
        assert study.stated["findings"] == tuple(PRESENT if p else SILENT for p in present)
        assert study.right["findings"] == tuple(present)  # the positives, in the phantoms' own words
        assert study.stated["impression"] == (SILENT,) * N_FINDINGS and not any(study.right["impression"])
        assert study.stated["diagnosis"] == (PRESENT,) * N_FINDINGS
        assert study.right["diagnosis"] == tuple(present)
        assert [(ok, finding) for kind, ok, finding in study.answers if kind.startswith("yes/no")] == [
            (not p, name) for name, p in zip(FINDING_NAMES, present, strict=True)]
    figures = phantom_figures(scores, resamples=0)
    assert figures["findings"]["absent"]["model"]["value"] == 0  # silence is not a denial
    assert figures["findings"]["present"]["model"]["value"] == 1
    assert figures["diagnosis"]["sensitivity"]["model"]["value"] == 1
    assert all(row["specificity"]["model"]["value"] in (0, None)
               for row in figures["diagnosis"]["by_finding"].values())


# -- end to end: radreport eval --preset phantom with the demo model on a few fresh phantoms ----------------


def test_radreport_eval_phantom_writes_the_figures(tmp_path, capsys):
    pytest.importorskip("torch")
    from napari_radreport.cli import main
    from napari_radreport.data.manifest import read_manifest
    from napari_radreport.data.phantoms.generate import write_phantoms
    from napari_radreport.data.phantoms.reports import LABELS
    from napari_radreport.engine import default_model

    if default_model() is None:
        pytest.skip("this checkout has no napari_radreport/demo_model")
    manifest = write_phantoms(tmp_path / "phantoms", 4, seed=20261123, val=0.0, test=0.0)
    out, details = tmp_path / "eval.json", tmp_path / "details.jsonl"
    code = main(["eval", "--preset", "phantom", "--manifest", str(manifest), "--split", "all", "--limit", "3",
                 "--bootstrap", "50", "--seed", "2", "--out", str(out), "--details", str(details),
                 "--device", "cpu"])
    assert code == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    figures = result["figures"]
    assert result["n_studies"] == 3 == figures["n_studies"] and figures["resamples"] == 50
    for part in ("findings", "impression", "diagnosis"):  # the older keys; the new figures agree with them
        assert figures[part]["accuracy"]["model"]["value"] == pytest.approx(result[part]["accuracy"])
        assert figures[part]["accuracy"]["model"]["n"] == result[part]["n"] == 3 * N_FINDINGS
    # the blind baseline, from the labels alone
    records = read_manifest(manifest)[:3]
    truth = np.array([[r.labels[LABELS[name]] for name in FINDING_NAMES] for r in records], dtype=bool)
    majority = truth.mean(0) >= 0.5
    assert figures["diagnosis"]["accuracy"]["blind"]["right"] == int((truth == majority).sum())
    present = figures["findings"]["present"]
    assert present["model"]["n"] == int(truth.sum()) and present["blind"]["n"] == int(truth.sum())
    # what each study's outputs stated, read back from --details on its own
    outputs = [json.loads(line) for line in details.read_text().splitlines()]
    assert [o["id"] for o in outputs] == [r.id for r in records]
    said = np.array([[o["diagnosis"][LABELS[name]] >= 0.5 for name in FINDING_NAMES] for o in outputs])
    assert figures["diagnosis"]["sensitivity"]["model"]["right"] == int((said & truth).sum())
    assert figures["diagnosis"]["absent"]["model"]["right"] == int((~said & ~truth).sum())
    said = np.array([[bool(getattr(read_findings(o["findings"]), name)) for name in FINDING_NAMES]
                     for o in outputs])
    assert figures["findings"]["sensitivity"]["model"]["right"] == int((said & truth).sum())
    assert "accuracy, all findings" in printed and "blind" in printed
    # each report's conflicts, counted as the text's own check finds them again
    from napari_radreport.consistency import find_conflicts

    found = [find_conflicts(f"Findings:\n{o['findings']}\n\nImpression:\n{o['impression']}", o["diagnosis"])
             for o in outputs]
    assert [[c.message for c in f] for f in found] == [o["conflicts"] for o in outputs]
    conflicts = result["conflicts"]
    assert conflicts["reports"] == 3 and conflicts["total"] == sum(map(len, found))
    assert f"the model's diagnosis): {conflicts['total']} in" in printed
