"""Streaming into the docks does the GUI work once per batch of events, not once per token, and nothing
that can wait runs while text streams (issue 22, item 10). Behaviour only; the time it takes is
``bench/ui_stall.py``'s to measure."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_radreport import load_study  # noqa: E402
from napari_radreport.engine.events import Token  # noqa: E402

pytestmark = pytest.mark.viewer
WAIT_MS = 60_000
WORDS = ["There", " is", " a", "  small", " left\npleural", " effusion", ".", "\n\nNo", " nodule", "."]


@pytest.fixture()
def viewer_with_study(docked, abdomen_nifti):
    from napari_radreport.viewer import add_study

    add_study(docked["viewer"], load_study(abdomen_nifti))
    return docked


def _count_calls(monkeypatch, module, name: str) -> list:
    """Replace ``module.name`` by a wrapper around the real function that records each call."""
    calls, real = [], getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def _tokens(words):
    return [Token(i, word, i + 1, 10.0) for i, word in enumerate(words)]


def test_the_conflict_check_waits_for_the_end_of_the_stream_and_runs_once(viewer_with_study, monkeypatch):
    from napari_radreport.widgets import draft_editor

    editor = viewer_with_study["Report"].editor
    draft = editor.draft
    draft.diagnosis = {"Pleural effusion": 0.05}  # the text below contradicts it
    calls = _count_calls(monkeypatch, draft_editor, "find_conflicts")
    editor.set_streaming(True)
    for word in ["There is a left pleural effusion", ".", " No", " effusion", "."]:
        draft.text += word
        editor.append(word)
        editor.refresh()  # what a caller may ask for while text streams in
    assert calls == []
    assert not editor.conflict_line.isVisible()
    editor.set_streaming(False)
    assert len(calls) == 1 and calls[0][0] == "There is a left pleural effusion. No effusion."
    editor.set_streaming(False)  # nothing was asked for since: no second check
    assert len(calls) == 1


def test_a_generated_report_is_checked_for_conflicts_once_after_it_streamed(
        viewer_with_study, tiny_ct_model, qtbot, monkeypatch):
    from napari_radreport.widgets import draft_editor

    report, session = viewer_with_study["Report"], viewer_with_study["session"]
    session.update_settings(model_folder=str(tiny_ct_model), max_new_tokens=40)
    report.load_model()
    qtbot.waitUntil(lambda: session.engine.loaded and not session.busy, timeout=WAIT_MS)
    calls = _count_calls(monkeypatch, draft_editor, "find_conflicts")
    batches, updates, hints = [], [], set()
    document = report.editor.editor.document()
    document.contentsChange.connect(lambda *_: batches and updates.append(len(batches)))  # once streaming
    report.generate()
    session.watcher.events.connect(
        lambda events: (batches.append(sum(isinstance(e, Token) for e in events)),
                        hints.add((report.editor.sizeHint().width(), report.editor.sizeHint().height()))))
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    text = report.editor.editor.toPlainText()
    assert text and len(batches) < sum(batches)  # tokens streamed, several in a batch
    assert [c[0] for c in calls] == [text]  # once, on the whole text, after the stream
    assert len(updates) <= len(batches)  # at most one document update per batch, not one per token
    assert len(hints) == 1  # the editor's size hint did not change while text streamed in


def test_a_streamed_chat_answer_is_appended_not_rendered_again(viewer_with_study, monkeypatch):
    chat, session = viewer_with_study["Chat"], viewer_with_study["session"]
    study = session.study
    session.chats[study.key] = [("Is there an effusion?", "Yes.", "")]
    renders = _count_calls(monkeypatch, chat.transcript, "setHtml")
    chat.pending, chat.answer = (study, "Which side?"), ""
    chat.render()
    streamed = ""
    for token in _tokens(WORDS):
        chat._on_events([token])
        streamed += token.text
        assert chat.answer == streamed
        assert chat.transcript.toPlainText() == (
            "You: Is there an effusion?\nModel: Yes.\nYou: Which side?\nModel: " + streamed + " ▍")
    assert len(renders) == 1  # only the render that started the answer
    chat._answered(type("Finished", (), {"text": streamed, "stop_reason": "eos"})())
    chat._ended()
    assert len(renders) == 2  # the whole transcript once more, as before, at the end
    assert chat.turns(study)[-1] == ("Which side?", streamed, "")
    shown = chat.transcript.toPlainText()
    assert shown.startswith("You: Is there an effusion?\nModel: Yes.\nYou: Which side?") and "▍" not in shown


def test_a_chat_answer_for_a_study_not_shown_leaves_the_transcript_alone(viewer_with_study, monkeypatch):
    chat, session = viewer_with_study["Chat"], viewer_with_study["session"]
    study = session.study
    chat.pending, chat.answer = (study, "Which side?"), ""
    chat.render()
    session.study = None  # another study shown (none here): the answer goes on in the background
    chat.render()
    renders = _count_calls(monkeypatch, chat.transcript, "setHtml")
    for token in _tokens(WORDS):
        chat._on_events([token])
    assert renders == [] and chat.answer == "".join(WORDS)
