"""The reviewer's sign-off (name and time, into every export; an edit clears it) and the draft's history
(every version kept, restored exactly; generating over an edited draft asks first).

The UI tests run in a real napari viewer with the tiny CT model (test_docks.py's ``docks`` fixture)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pydicom
import pytest

from napari_radreport.export import ReportRecord, StudyReference, export_report
from napari_radreport.export.dicom_sr import person_name

pytest.importorskip("torch")

import test_docks
from test_export import pdf_text

docks, WAIT_MS = test_docks.docks, test_docks.WAIT_MS  # the viewer with the tiny CT model, and its wait

NAME, WHEN = "Smith, Jane", "2025-05-01T10:00:00+02:00"


def _dt(iso: str) -> str:
    """ISO 8601 with offset as DICOM DT, written out by hand ("20250501100000+0200")."""
    when = datetime.fromisoformat(iso)
    offset = int(when.utcoffset().total_seconds() // 60)
    sign = "-" if offset < 0 else "+"
    return f"{when:%Y%m%d%H%M%S}{sign}{abs(offset) // 60:02d}{abs(offset) % 60:02d}"


def _generated(report, session, qtbot) -> None:
    report.generate()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)


def _saved(session) -> dict:
    return json.loads(session.drafts.path_for(session.study.key).read_text(encoding="utf-8"))


# -- sign-off ------------------------------------------------------------------------------------

@pytest.mark.viewer
def test_the_sign_off_records_name_and_time_and_reaches_the_sr_pdf_and_json(docks, qtbot, tmp_path):
    from napari_radreport.user_settings import UserSettings

    report, session = docks["Report"], docks["session"]
    _generated(report, session, qtbot)
    draft = report.draft_for(session.study)
    asked: list[int] = []
    report.editor.ask_reviewer = lambda: asked.append(1) and None  # cancelled
    report.editor.reviewed.setChecked(True)
    assert not report.editor.reviewed.isChecked() and not draft.reviewed
    assert session.settings.reviewer_name == ""

    report.editor.ask_reviewer = lambda: asked.append(1) or f"  {NAME} "
    before = datetime.now().astimezone().replace(microsecond=0)
    report.editor.reviewed.setChecked(True)
    signed = datetime.fromisoformat(draft.reviewed_at)
    assert (draft.reviewed, draft.reviewer, len(asked)) == (True, NAME, 2)
    assert signed.utcoffset() is not None and before <= signed <= datetime.now().astimezone()
    assert report.editor.state.text() == f"Reviewed by {NAME}, {draft.reviewed_at}"
    assert UserSettings.load().reviewer_name == NAME  # saved: asked once
    assert (_saved(session)["reviewer"], _saved(session)["reviewed_at"]) == (NAME, draft.reviewed_at)
    report.editor.reviewed.setChecked(False)
    assert not draft.reviewer and not draft.reviewed_at
    report.editor.reviewed.setChecked(True)
    assert len(asked) == 2 and draft.reviewer == NAME

    record = report.record()
    assert record.complete and not record.out_of_scope_reason  # so the SR may say VERIFIED
    paths = {suffix: report.export_to(str(tmp_path / f"r.{suffix}")) for suffix in ("dcm", "pdf", "json")}
    assert all(paths.values()), report.status.text()
    sr = pydicom.dcmread(paths["dcm"])
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "VERIFIED")
    (observer,) = sr.VerifyingObserverSequence
    name = observer.VerifyingObserverName
    assert str(name) == "Smith^Jane" and (name.family_name, name.given_name) == ("Smith", "Jane")
    assert str(observer.VerificationDateTime) == _dt(draft.reviewed_at)
    assert observer.VerifyingOrganization == ""  # type 2: none known
    assert len(observer.VerifyingObserverIdentificationCodeSequence) == 0  # type 2
    text = pdf_text(Path(paths["pdf"]).read_bytes())
    assert f"Status: Reviewed by {NAME}, {draft.reviewed_at}" in text
    assert f"Reviewed by {NAME}, {draft.reviewed_at} Provenance" in text  # the sign-off line under the text
    data = json.loads(Path(paths["json"]).read_text(encoding="utf-8"))
    assert (data["reviewed"], data["reviewer"], data["reviewed_at"]) == (True, NAME, draft.reviewed_at)
    assert data["status"] == f"Reviewed by {NAME}, {draft.reviewed_at}"


@pytest.mark.viewer
def test_an_edit_after_the_sign_off_clears_it_and_says_so(docks, qtbot, tmp_path):
    report, session = docks["Report"], docks["session"]
    session.update_settings(reviewer_name=NAME)
    report.editor.ask_reviewer = lambda: pytest.fail("the Reviewer setting has a name: nothing to ask")
    _generated(report, session, qtbot)
    draft = report.draft_for(session.study)
    report.editor.reviewed.setChecked(True)
    assert draft.reviewer == NAME
    report.editor.editor.setFocus()
    report.editor.editor.moveCursor(report.editor.editor.textCursor().MoveOperation.End)
    qtbot.keyClicks(report.editor.editor, " Mild.")
    assert draft.text.endswith(" Mild.")
    assert (draft.reviewed, draft.reviewer, draft.reviewed_at) == (False, "", "")
    assert not report.editor.reviewed.isChecked()
    assert report.editor.state.text() == ("AI draft, not reviewed (edited); sign-off by Smith, Jane cleared: "
                                          "the text changed after review")
    qtbot.waitUntil(lambda: _saved(session)["text"].endswith(" Mild."), timeout=5000)
    assert (_saved(session)["reviewed"], _saved(session)["reviewer"]) == (False, "")
    sr = pydicom.dcmread(report.export_to(str(tmp_path / "r.dcm")))
    assert sr.VerificationFlag == "UNVERIFIED" and "VerifyingObserverSequence" not in sr


def test_a_report_is_verified_only_when_signed_off_by_name_and_complete(tmp_path, abdomen_nifti):
    from napari_radreport import load_study

    study = StudyReference.from_study(load_study(abdomen_nifti))

    def sr(name: str, **fields) -> pydicom.Dataset:
        record = ReportRecord(final_text="Findings: Normal.", study=study, **fields)
        return pydicom.dcmread(export_report(record, tmp_path / f"{name}.dcm"))

    signed = {"reviewed": True, "reviewer": NAME, "reviewed_at": WHEN}
    verified = sr("signed", **signed)
    assert (verified.CompletionFlag, verified.VerificationFlag) == ("COMPLETE", "VERIFIED")
    assert verified.VerifyingObserverSequence[0].VerificationDateTime == "20250501100000+0200"
    for name, fields, completion in (("draft", {}, "PARTIAL"),
                                     ("unnamed", {"reviewed": True}, "COMPLETE"),  # reviewed before names
                                     ("stopped", {**signed, "stop_reason": "stopped"}, "PARTIAL")):
        ds = sr(name, **fields)
        assert (ds.CompletionFlag, ds.VerificationFlag) == (completion, "UNVERIFIED"), name
        assert "VerifyingObserverSequence" not in ds, name
    stopped = sr("stopped-again", **signed, stop_reason="stopped")  # PARTIAL: the sign-off is in the status
    comments = [item.TextValue for item in stopped.ContentSequence if item.ValueType == "TEXT"]
    assert any(f"Reviewed by {NAME}, {WHEN}; incomplete" in c for c in comments)


@pytest.mark.parametrize(("typed", "pn"), [("Smith, Jane", "Smith^Jane"), ("Jane Smith", "Jane Smith"),
                                           ("Smith^Jane^^Dr", "Smith^Jane^^Dr"), ("a\\b=c", "a b c")])
def test_a_typed_name_becomes_a_person_name(typed, pn):
    assert person_name(typed) == pn


# -- history -------------------------------------------------------------------------------------

@pytest.mark.viewer
def test_every_version_is_kept_and_a_restore_brings_the_saved_one_back_exactly(docks, qtbot):
    from napari_radreport.drafts import DraftStore

    report, session = docks["Report"], docks["session"]
    session.update_settings(reviewer_name=NAME)
    editor = report.editor
    _generated(report, session, qtbot)
    assert not editor.history.isEnabled()  # nothing earlier yet
    editor.editor.setPlainText(editor.editor.toPlainText() + "\nEdited by the reader.")
    editor.reviewed.setChecked(True)
    first = _saved(session)
    assert first["text"].endswith("Edited by the reader.") and first["reviewer"] == NAME
    report.ask_replace_draft = lambda _draft: True
    _generated(report, session, qtbot)
    draft = report.draft_for(session.study)
    second = (draft.text, draft.ai_draft)
    assert draft.ai_draft and not draft.reviewed and editor.history.isEnabled()

    editor.history.click()
    dialog = editor.history_dialog
    assert dialog.isVisible() and dialog.table.rowCount() == 1
    cells = [dialog.table.item(0, c).text() for c in range(4)]
    assert cells[1:] == ["tiny-ct", NAME, next(line for line in first["text"].splitlines() if line.strip())]
    assert datetime.fromisoformat(cells[0].replace(" ", "T")).utcoffset() is not None
    assert not dialog.restore_button.isEnabled()
    dialog.select(0)
    assert dialog.preview.isReadOnly() and dialog.preview.toPlainText() == first["text"]
    dialog.restore_button.click()
    assert not dialog.isVisible() and editor.history_dialog is None

    assert (draft.text, draft.ai_draft) == (first["text"], first["ai_draft"])
    assert editor.editor.toPlainText() == first["text"] and draft.provenance == first["provenance"]
    assert not draft.reviewed and editor.state.text().startswith("AI draft, not reviewed (edited); restored")
    assert [(v.text, v.ai_draft) for v in draft.previous] == [(first["text"], first["ai_draft"]), second]
    again = DraftStore(session.drafts.folder).load(session.study.key)  # saved at once
    assert (again.text, again.ai_draft) == (first["text"], first["ai_draft"]) and len(again.previous) == 2

    editor.history.click()  # the restore is undone by restoring the version it replaced
    editor.history_dialog.select(1)
    editor.history_dialog.restore_button.click()
    assert (draft.text, draft.ai_draft) == second and len(draft.previous) == 3


@pytest.mark.viewer
def test_generating_over_an_edited_draft_asks_and_no_keeps_it(docks, qtbot):
    from qtpy.QtWidgets import QMessageBox

    report, session = docks["Report"], docks["session"]
    _generated(report, session, qtbot)
    draft = report.draft_for(session.study)
    asked = []
    report.ask_replace_draft = lambda d: asked.append(d) or False  # No
    _generated(report, session, qtbot)  # unedited: no question, the earlier text goes to the history
    assert asked == [] and len(draft.previous) == 1
    report.editor.editor.setPlainText("Findings: edited by the reader.")
    _generated(report, session, qtbot)
    assert asked == [draft] and not session.busy
    assert draft.text == report.editor.editor.toPlainText() == "Findings: edited by the reader."
    assert len(draft.previous) == 1 and "Not generated" in report.status.text()
    box = report.replace_draft_box(draft)
    assert box.text() == "Replace your edited draft? It is kept in History."
    assert box.defaultButton() is box.button(QMessageBox.StandardButton.No)

    report.ask_replace_draft = lambda d: asked.append(d) or True  # Yes
    _generated(report, session, qtbot)
    assert len(asked) == 2 and draft.text != "Findings: edited by the reader."
    assert draft.previous[-1].text == "Findings: edited by the reader."
    session.update_settings(reviewer_name=NAME)
    report.editor.reviewed.setChecked(True)  # signed off, not edited: asked too
    report.ask_replace_draft = lambda d: asked.append(d) or False
    _generated(report, session, qtbot)
    assert len(asked) == 3 and draft.reviewer == NAME
    assert report.replace_draft_box(draft).text() == "Replace your reviewed draft? It is kept in History."


@pytest.mark.viewer
def test_the_settings_reviewer_field_is_the_name_a_sign_off_uses(docks, qtbot):
    report, session, settings = docks["Report"], docks["session"], docks["Settings"]
    assert settings.reviewer.value == ""
    report.editor.ask_reviewer = lambda: NAME  # asked once, when the setting is empty
    _generated(report, session, qtbot)
    report.editor.reviewed.setChecked(True)
    assert settings.reviewer.value == NAME  # the name given at the prompt shows in Settings
    settings.reviewer.value = "  Doe, John "
    settings.reviewer.native.editingFinished.emit()  # as leaving the field does
    assert session.settings.reviewer_name == "Doe, John"
    report.editor.reviewed.setChecked(False)
    report.editor.ask_reviewer = lambda: pytest.fail("the Reviewer setting has a name: nothing to ask")
    report.editor.reviewed.setChecked(True)
    assert report.draft_for(session.study).reviewer == "Doe, John"
