"""Self-consistency: a report that contradicts itself or the model's diagnosis is flagged on its sentences."""

from __future__ import annotations

import numpy as np
import pytest

from napari_radreport.consistency import DISAGREE_ABOVE, DISAGREE_BELOW, find_conflicts, read_statements

# What the demo model wrote about the real chest CT (Lung-PET-CT-Dx A0001), 2026-12-05.
REAL_CT_REPORT = """Findings:
There is a 30 mm nodule in the right lower lobe. Consolidation in the right middle lobe. No emphysematous \
changes. There is no pleural effusion. No cardiomegaly. There is a pericardial effusion.

Impression:
12 mm right lower lobe nodule. Right middle lobe consolidation. Pericardial effusion."""


def _only(conflicts, kind):
    assert [c.kind for c in conflicts] == [kind], [c.message for c in conflicts]
    return conflicts[0]


def test_a_nodule_with_two_sizes_is_one_conflict_on_both_sentences():
    conflict = _only(find_conflicts(REAL_CT_REPORT), "size")
    assert conflict.finding == "nodule"
    assert conflict.message == "nodule: size 30 mm in Findings, 12 mm in the Impression"
    assert conflict.sentences == ("There is a 30 mm nodule in the right lower lobe.",
                                  "12 mm right lower lobe nodule.")
    assert [REAL_CT_REPORT[a:b] for a, b in conflict.spans] == list(conflict.sentences)


@pytest.mark.parametrize(("findings", "impression", "kind"), [
    ("A 14 mm nodule in the left upper lobe.", "14 mm right upper lobe nodule.", "side"),
    ("A 14 mm nodule in the left upper lobe.", "14 mm left lower lobe nodule.", "lobe"),
    ("Right pleural effusion.", "Left pleural effusion.", "side"),
    ("Consolidation in the right middle lobe.", "Right lower lobe consolidation.", "lobe"),
    ("Nodule measuring 1.2 x 0.8 cm in the right upper lobe.", "25 mm right upper lobe nodule.", "size"),
])
def test_findings_and_impression_that_disagree_on_a_finding_conflict(findings, impression, kind):
    text = f"Findings:\n{findings}\n\nImpression:\n{impression}"
    assert _only(find_conflicts(text), kind).spans[0][0] == text.index(findings)


@pytest.mark.parametrize("text", [
    "Findings:\nA 12 mm nodule in the right upper lobe.\n\nImpression:\n1.2 cm right upper lobe nodule.",
    "Findings:\nA 5 mm nodule in the right upper lobe. A 9 mm nodule in the left lower lobe.\n\n"
    "Impression:\n9 mm left lower lobe nodule.",  # two nodules: the impression names one of them
    "Findings:\nNo right pleural effusion. Small left pleural effusion.\n\n"
    "Impression:\nLeft pleural effusion.",
    "Findings:\nNo change in the 6 mm right upper lobe nodule.\n\nImpression:\nStable 6 mm nodule.",
    "Findings:\nNo pleural effusion. Possible small pleural effusion on the left cannot be excluded.",
    "Findings:\nThe heart is normal in size. No pericardial effusion.\n\nImpression:\nNo acute abnormality.",
])
def test_consistent_reports_have_no_conflict(text):
    assert find_conflicts(text) == [], [c.message for c in find_conflicts(text)]


def test_a_finding_stated_and_denied_is_a_presence_conflict():
    text = "Findings:\nNo pleural effusion. Small left pleural effusion."
    conflict = _only(find_conflicts(text), "presence")
    assert conflict.sentences == ("Small left pleural effusion.", "No pleural effusion.")


def test_statements_read_presence_side_lobe_size_and_hedges():
    statements = read_statements("Findings:\nThere is a 2.5 cm mass-like nodule in the left lower lobe, with "
                                 "a right pleural effusion. No pneumothorax. The heart is normal in size. "
                                 "Atelectasis cannot be excluded.")
    seen = [(s.finding, s.stance, s.section, s.side, s.lobe, s.size_mm) for s in statements]
    assert seen == [("nodule", "present", "findings", "left", "lower", 25.0),
                    ("pleural effusion", "present", "findings", "right", None, None),
                    ("pneumothorax", "absent", "findings", None, None, None),
                    ("cardiomegaly", "absent", "findings", None, None, None),
                    ("atelectasis", "uncertain", "findings", None, None, None)]


def test_sentences_the_diagnosis_clearly_disagrees_with_are_conflicts():
    text = ("Findings:\nThere is a pericardial effusion. No cardiomegaly. Possible consolidation. "
            "No emphysema.")
    diagnosis = {"Pericardial effusion": DISAGREE_BELOW - 0.01, "Cardiomegaly": DISAGREE_ABOVE + 0.01,
                 "Consolidation": 0.01, "Emphysema": 0.5}  # hedged, and undecided: no conflict
    conflicts = find_conflicts(text, diagnosis)
    assert [(c.kind, c.finding) for c in conflicts] == [("diagnosis", "pericardial effusion"),
                                                       ("diagnosis", "cardiomegaly")]
    assert "24%" in conflicts[0].message and "Cardiomegaly 76%" in conflicts[1].message
    near = {"Pericardial effusion": DISAGREE_BELOW + 0.01, "Cardiomegaly": DISAGREE_ABOVE - 0.01}
    assert find_conflicts(text, near) == []
    assert find_conflicts(text.lower(), {"pericardial effusion": 0.0})[0].finding == "pericardial effusion"


def test_every_phantom_report_is_consistent_with_its_own_labels():
    """The phantoms' own reports (every wording) agree with themselves and with their labels as P = 0 / 1."""
    from napari_radreport.data.phantoms import reports
    from napari_radreport.data.phantoms.anatomy import sample_findings

    rng = np.random.default_rng(5)
    for _ in range(300):
        truth = sample_findings(rng)
        text = (f"Findings:\n{reports.findings_text(truth, rng)}\n\n"
                f"Impression:\n{reports.impression_text(truth, rng)}")
        conflicts = find_conflicts(text, {k: float(v) for k, v in reports.labels(truth).items()})
        assert conflicts == [], (text, [c.message for c in conflicts])


def test_the_draft_editor_shows_conflicts_on_their_sentences_and_drops_them_when_mended(qtbot):
    from napari_radreport.drafts import Draft
    from napari_radreport.widgets.draft_editor import DraftEditor

    editor = DraftEditor(lambda: None)
    qtbot.addWidget(editor)
    editor.show_draft(Draft(study_key="k", ai_draft=REAL_CT_REPORT, text=REAL_CT_REPORT,
                            diagnosis={"Pericardial effusion": 0.05}))
    box = editor.editor
    shown = [(s.cursor.selectionStart(), s.cursor.selectionEnd()) for s in box.extraSelections()]
    assert [REAL_CT_REPORT[a:b] for a, b in shown] == [
        "There is a 30 mm nodule in the right lower lobe.", "12 mm right lower lobe nodule.",
        "There is a pericardial effusion.", "Pericardial effusion."]
    assert "3 conflicts" in editor.conflict_line.text() and not editor.conflict_line.isHidden()
    at = REAL_CT_REPORT.index("12 mm")
    assert [c.message for c in box.conflicts_at(at)] == [
        "nodule: size 30 mm in Findings, 12 mm in the Impression"]
    box.setPlainText(REAL_CT_REPORT.replace("12 mm", "30 mm").replace("There is a pericardial effusion.", "")
                     .replace("Pericardial effusion.", ""))  # the reader mends both: an edit, autosaved
    assert box.extraSelections() == [] and editor.conflict_line.isHidden()
    assert editor.draft.text == box.toPlainText()


def test_the_engine_checks_each_report_against_the_models_diagnosis(tiny_ct_model, abdomen_nifti):
    pytest.importorskip("torch")
    import threading

    from napari_radreport import load_study
    from napari_radreport.engine import Engine, GenerationSettings, Progress

    engine = Engine()
    engine.allow_out_of_scope = True
    try:
        engine.load(tiny_ct_model)
        study, events = load_study(abdomen_nifti), []
        result = engine.report(study, settings=GenerationSettings(max_new_tokens=4), on_event=events.append)
        assert set(result.diagnosis) == set(engine.info.labels) and len(result.diagnosis) > 0
        assert result.diagnosis == pytest.approx(engine.diagnose(study))
        assert result.conflicts == find_conflicts(result.text, result.diagnosis)
        assert any(isinstance(e, Progress) and e.stage == "check" for e in events)
        stop = threading.Event()
        stop.set()
        stopped = engine.report(study, settings=GenerationSettings(max_new_tokens=4), stop=stop)
        assert stopped.stop_reason == "stopped" and stopped.diagnosis == {} and stopped.conflicts == []
    finally:
        engine.shutdown()


def test_exports_list_the_final_texts_conflicts(tmp_path):
    import json

    from napari_radreport.export import ReportRecord, export_report

    record = ReportRecord(final_text=REAL_CT_REPORT, ai_draft=REAL_CT_REPORT,
                          diagnosis={"Pericardial effusion": 0.1, "Lung nodule": 0.7})
    data = json.loads(export_report(record, tmp_path / "r.json").read_text())
    assert [(c["kind"], c["finding"]) for c in data["conflicts"]] == [
        ("size", "nodule"), ("diagnosis", "pericardial effusion"), ("diagnosis", "pericardial effusion")]
    assert data["conflicts"][0]["sentences"] == ["There is a 30 mm nodule in the right lower lobe.",
                                                 "12 mm right lower lobe nodule."]
    assert data["diagnosis"] == {"Pericardial effusion": 0.1, "Lung nodule": 0.7}
    text = export_report(record, tmp_path / "r.txt").read_text()
    assert "3 conflicts in the text: nodule: size 30 mm in Findings, 12 mm in the Impression" in text
    mended = ReportRecord(final_text=REAL_CT_REPORT.replace("12 mm", "30 mm"), diagnosis={})
    assert json.loads(export_report(mended, tmp_path / "m.json").read_text())["conflicts"] == []
    assert "conflict" not in export_report(mended, tmp_path / "m.txt").read_text()
