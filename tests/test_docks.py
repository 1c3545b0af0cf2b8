"""The Report, Chat and Findings docks in a real napari viewer (Xvfb), driving a tiny model.

The Settings dock and the job plumbing without a model: test_dock_plumbing.py.
"""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from napari_radreport import load_study  # noqa: E402

pytestmark = pytest.mark.viewer
WAIT_MS = 60_000


@pytest.fixture()
def docks(make_napari_viewer, qtbot, tiny_ct_model, abdomen_nifti, tmp_path, monkeypatch):
    """A viewer with the docks, the abdomen CT open and the tiny CT model loaded; drafts in tmp_path."""
    from napari_radreport.viewer import add_docks, add_study
    from napari_radreport.widgets.session import session_for

    monkeypatch.setenv("RADREPORT_DRAFTS", str(tmp_path / "drafts"))
    monkeypatch.setenv("RADREPORT_CONFIG", str(tmp_path / "settings.json"))
    viewer = make_napari_viewer(show=True)
    session = session_for(viewer)
    session.update_settings(model_folder=str(tiny_ct_model), max_new_tokens=40)
    found = add_docks(viewer)
    add_study(viewer, load_study(abdomen_nifti))
    found["Report"].load_model()
    qtbot.waitUntil(lambda: session.engine.loaded and not session.busy, timeout=WAIT_MS)
    found["viewer"], found["session"] = viewer, session
    yield found
    session.stop()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)


def _slow(session, seconds=0.02):
    import time

    model = session.engine.runner.model.language_model
    return model.register_forward_pre_hook(lambda *a: time.sleep(seconds))


def test_generate_streams_tokens_into_the_editor_over_time_and_stop_stops(docks, qtbot):
    report, session = docks["Report"], docks["session"]
    session.update_settings(max_new_tokens=2000)
    hook = _slow(session)
    lengths = []
    report.generate()
    assert report.editor.editor.isReadOnly() and report.stop_button.isEnabled()
    for _ in range(4):  # the editor grows while the job still runs
        qtbot.waitUntil(lambda: len(report.editor.editor.toPlainText()) > (lengths[-1] if lengths else 0),
                        timeout=WAIT_MS)
        lengths.append(len(report.editor.editor.toPlainText()))
        assert session.busy
    report.stop_button.click()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    hook.remove()
    draft = report.draft_for(session.study)
    assert "(stopped)" in report.status.text()
    assert draft.ai_draft == draft.text == report.editor.editor.toPlainText()
    assert draft.ai_draft.startswith("INDICATION:\n") and "\n\nFINDINGS:\n" in draft.ai_draft
    assert len(draft.ai_draft.split()) < 500
    assert not report.editor.editor.isReadOnly() and report.generate_button.isEnabled()
    assert "tokens/s" in report.speed.text() and report.speed.text().endswith("tokens in Findings")
    assert report.editor.state.text() == "AI draft, not reviewed"
    report.editor.ask_reviewer = lambda: "Smith, Jane"  # the Reviewer setting is empty: asked once
    report.editor.reviewed.setChecked(True)
    assert report.editor.state.text() == f"Reviewed by Smith, Jane, {draft.reviewed_at}"


def test_the_draft_is_saved_while_it_streams_and_a_stopped_one_says_so(docks, qtbot):
    report, session = docks["Report"], docks["session"]
    session.update_settings(max_new_tokens=2000)
    path = session.drafts.path_for(session.study.key)
    hook = _slow(session)
    report.generate()

    def saved() -> dict:
        return json.loads(path.read_text()) if path.is_file() else {}

    # what a kill now would leave on disk: the text streamed so far, marked as unfinished
    qtbot.waitUntil(lambda: len(saved().get("ai_draft", "")) > 40, timeout=WAIT_MS)
    on_disk = saved()
    assert session.busy and on_disk["stop_reason"] == "generating"
    assert report.draft_for(session.study).ai_draft.startswith(on_disk["ai_draft"])
    assert "\n\nFINDINGS:\n" in on_disk["ai_draft"] and on_disk["text"] == on_disk["ai_draft"]
    report.stop_button.click()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    hook.remove()
    assert saved()["stop_reason"] == "stopped"
    assert report.record().stop_reason == "stopped" and not report.record().complete


def test_the_draft_keeps_exactly_the_text_that_streamed(docks, qtbot):
    from napari_radreport import report_templates
    from napari_radreport.engine.events import SectionStarted, Token

    report, session = docks["Report"], docks["session"]
    report.sections.setCurrentText("Findings and impression")
    assert report.template.currentData() == "abdomen_pelvis_ct"  # the template that suits the study
    template = report_templates.load("abdomen_pelvis_ct")
    report.generate()
    streamed, mapped, results = [], [], []

    def keep(events):
        for e in events:
            if isinstance(e, SectionStarted | Token):
                piece = e.heading if isinstance(e, SectionStarted) else e.text
                streamed.append(piece)
                mapped.append(report_templates.map_heading(template, piece) if isinstance(e, SectionStarted)
                              else piece)

    session.watcher.events.connect(keep)
    session.watcher.finished.connect(lambda result, error: results.append((result, error)))
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    (result, error), = results
    assert error is None and [title for title, _ in result.sections] == ["Findings", "Impression"]
    draft = report.draft_for(session.study)
    assert "".join(streamed) == result.text
    # the template's own sections first, then exactly what streamed, under the template's headings
    body = "".join(mapped)
    assert body.replace("FINDINGS:", "Findings:").replace("IMPRESSION:", "Impression:") == result.text
    expected = report_templates.preamble(template, session.study) + body
    assert expected.startswith("INDICATION:\nNot given.\n\nTECHNIQUE:\nCT, 112 axial images")
    assert "\n\nCOMPARISON:\nNone.\n\nFINDINGS:\n" in expected
    assert draft.ai_draft == draft.text == report.editor.editor.toPlainText() == expected
    assert json.loads(session.drafts.path_for(session.study.key).read_text())["ai_draft"] == expected


def test_a_failing_task_ends_as_one_line_in_each_dock_and_the_buttons_come_back(docks, qtbot, monkeypatch):
    report, chat, findings, session = docks["Report"], docks["Chat"], docks["Findings"], docks["session"]

    def fail(*_args, **_kwargs):
        raise RuntimeError("CUDA error: device-side assert triggered\nCompile with TORCH_USE_CUDA_DSA")

    monkeypatch.setattr(session.engine.runner, "generate", fail)
    monkeypatch.setattr(session.engine.runner, "next_token_logprobs", fail)
    for start, status in ((report.generate, report.status), (lambda: chat.ask("Any effusion?"), chat.status),
                          (findings.run, findings.status)):
        start()
        assert session.busy
        qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
        assert "CUDA error: device-side assert triggered" in status.text()
        assert "TORCH_USE" not in status.text()
        assert report.generate_button.isEnabled() and report.load_button.isEnabled()
        assert chat.ask_button.isEnabled() and findings.run_button.isEnabled()
        assert not any(b.isEnabled() for b in (report.stop_button, chat.stop_button, findings.stop_button))
        assert not any(bar.isVisible() for bar in (report.progress, chat.progress, findings.progress))
    assert report.status.text().count("Generation failed: CUDA error") == 1
    assert not report.editor.editor.isReadOnly() and chat.pending is None and findings.pending is None
    assert chat.turns(session.study) == [] and findings.results == {}


def test_an_edit_is_autosaved_and_the_ai_draft_is_kept_beside_it(docks, qtbot):
    report, session = docks["Report"], docks["session"]
    report.generate()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    ai_text = report.editor.editor.toPlainText()
    report.editor.editor.setPlainText(ai_text + "\nNo acute findings. (edited by the reader)")
    path = session.drafts.path_for(session.study.key)
    qtbot.waitUntil(lambda: path.is_file() and "edited by the reader" in path.read_text(), timeout=5000)
    saved = json.loads(path.read_text())
    assert saved["ai_draft"] == ai_text and saved["text"].endswith("(edited by the reader)")
    assert "+No acute findings. (edited by the reader)" in report.draft_for(session.study).diff()
    assert report.editor.state.text() == "AI draft, not reviewed (edited)"


def test_switching_study_mid_stream_keeps_the_draft_with_its_study(docks, qtbot, chest_study):
    from napari_radreport.viewer import add_study

    report, session = docks["Report"], docks["session"]
    abdomen = session.study
    add_study(docks["viewer"], chest_study)  # the newest study becomes current
    session.set_study(abdomen)
    hook = _slow(session)
    report.generate()
    qtbot.waitUntil(lambda: len(report.editor.editor.toPlainText()) > 20, timeout=WAIT_MS)
    session.set_study(chest_study)
    assert report.editor.editor.toPlainText() == "" and not report.editor.editor.isReadOnly()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    hook.remove()
    assert report.draft_for(chest_study).text == ""
    abdomen_draft = report.draft_for(abdomen)
    assert abdomen_draft.text.startswith("INDICATION:\n") and "\n\nIMPRESSION:\n" in abdomen_draft.text
    session.set_study(abdomen)
    assert report.editor.editor.toPlainText() == abdomen_draft.text


def test_chat_answers_and_a_follow_up_reuses_the_cached_prefix(docks, qtbot):
    chat, session = docks["Chat"], docks["session"]
    chat.ask("Is there a pleural effusion?")
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    chat.ask("Which side?")
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    turns = chat.turns(session.study)
    assert [q for q, _, _ in turns] == ["Is there a pleural effusion?", "Which side?"]
    assert chat.last_result.timings["prefill_tokens"] <= 4  # only the new words ran
    assert session.engine.runner.encodings == 1
    assert "Which side?" in chat.transcript.toPlainText()
    chat.ask("Where is the nodule?\nA. left lung\nB. right lung")
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    assert chat.turns(session.study)[-1][1] in ("A. left lung", "B. right lung")
    transcript = chat.transcript.toPlainText()
    assert "Where is the nodule?\nA. left lung\nB. right lung" in transcript  # one option per line


def test_findings_fills_eighteen_rows_sortable_by_probability(docks, qtbot):
    findings, session = docks["Findings"], docks["session"]
    findings.run()
    bar, shown = findings.progress, []
    session.watcher.events.connect(lambda _: shown.append((bar.isVisible(), bar.maximum(), bar.value())))
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    assert (True, 100, 100) in shown and not bar.isVisible()  # "Asking the model 18/18 questions"
    table = findings.table
    labels = session.engine.info.labels  # a CT model's: CT-RATE's 18 abnormalities
    assert table.rowCount() == len(labels) == 18 and "Lung nodule" in labels
    assert {table.item(r, 0).text() for r in range(18)} == set(labels)
    table.sortItems(1)
    values = [table.item(r, 1).value for r in range(18)]
    assert values == sorted(values) and all(0 < v < 1 for v in values)
    for threshold in (0.0, values[9], 1.0):
        findings.threshold.setValue(threshold)
        expected = sum(v >= findings.threshold.value() for v in values)
        assert sum(table.item(r, 2).text() == "yes" for r in range(18)) == expected
        assert sum(table.item(r, 0).font().bold() for r in range(18)) == expected
    assert expected == 0 and findings.threshold.value() == 1.0


def test_export_writes_every_format_and_asks_before_replacing(docks, qtbot, tmp_path):
    import pydicom

    report, session = docks["Report"], docks["session"]
    report.generate()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    text = report.editor.editor.toPlainText()
    for suffix in ("txt", "md", "json", "pdf", "dcm"):
        assert report.export_to(str(tmp_path / f"report.{suffix}")) is not None, report.status.text()
    assert text.splitlines()[1] in (tmp_path / "report.txt").read_text()
    record = json.loads((tmp_path / "report.json").read_text())
    assert record["ai_draft"] == text and record["provenance"]["model_name"] == "tiny-ct"
    assert record["provenance"]["weights_sha256"] == session.engine.info.weights_sha256
    sr = pydicom.dcmread(tmp_path / "report.dcm")
    assert sr.Modality == "SR"
    before = (tmp_path / "report.txt").read_text()
    report.editor.editor.setPlainText("Changed text.")
    assert report.export_to(str(tmp_path / "report.txt"), ask=lambda _path: False) is None
    assert (tmp_path / "report.txt").read_text() == before
    assert report.export_to(str(tmp_path / "report.txt"), ask=lambda _path: True)
    assert "Changed text." in (tmp_path / "report.txt").read_text()


def test_closing_the_viewer_mid_generation_stops_the_thread(docks, qtbot):
    report, session = docks["Report"], docks["session"]
    session.update_settings(max_new_tokens=2000)
    hook = _slow(session)
    report.generate()
    qtbot.waitUntil(lambda: len(report.editor.editor.toPlainText()) > 10, timeout=WAIT_MS)
    job = session.engine.job
    docks["viewer"].close()
    assert job.join(10) and job.result().stop_reason == "stopped"
    hook.remove()
    qtbot.waitUntil(lambda: not session.engine.thread_alive, timeout=WAIT_MS)  # the engine's thread ends


def test_a_model_that_fails_to_load_is_explained_and_the_ui_recovers(docks, qtbot, tmp_path):
    report, session = docks["Report"], docks["session"]
    session.update_settings(model_folder=str(tmp_path / "no-such-model"))
    report.load_model()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    assert "Could not load the model" in report.status.text() and "no-such-model" in report.status.text()
    assert report.generate_button.isEnabled() and report.load_button.isEnabled()


def test_a_corrupted_draft_is_kept_aside_and_reported(make_napari_viewer, abdomen_nifti, tmp_path,
                                                       monkeypatch):
    from napari_radreport.drafts import DraftStore
    from napari_radreport.viewer import add_docks, add_study

    monkeypatch.setenv("RADREPORT_DRAFTS", str(tmp_path / "drafts"))
    study = load_study(abdomen_nifti)
    path = DraftStore().path_for(study.key)
    path.parent.mkdir(parents=True)
    path.write_text('{"version": 1, "study_key": "trunc')
    viewer = make_napari_viewer(show=True)
    report = add_docks(viewer)["Report"]
    add_study(viewer, study)
    assert "unreadable" in report.status.text() and "kept as" in report.status.text()
    kept = list(path.parent.glob("*.corrupt-*.json"))
    assert len(kept) == 1 and kept[0].read_text() == '{"version": 1, "study_key": "trunc'
