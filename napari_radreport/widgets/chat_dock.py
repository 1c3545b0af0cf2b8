"""The Chat dock: ask about the current study; answers stream in; a history per study.

Options typed on their own lines ("A. left", "B. right") make a multiple-choice question, answered with a
letter and the option it names ("B. right"). Follow-ups reuse the cached image and conversation (only the new
tokens run).

While an answer streams, each batch of tokens is inserted at the end of the transcript (``_append_answer``)
instead of rebuilding the whole transcript's HTML (which grew with the answer: quadratic over it); the whole
transcript is rendered at the start and the end of each question. The answer being written keeps its spaces
(``white-space:pre-wrap``), so the appended text and a fresh rendering of it are the same.

After a written answer (not a multiple choice), its sentences that state a finding are located in the image
where the model can (``Engine.ground_answer``, on the engine's thread once the answer is complete) and become
links; clicking one shows where, as the Report dock does.

*Ask about box* asks what is in a rectangle drawn on the study (``drawn_region.py``), in the model's own box
format (``Engine.region_question``); a model that was not trained on boxes says so in the status line.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QKeyEvent, QTextCharFormat, QTextCursor
from qtpy.QtWidgets import (
    QHBoxLayout,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from napari_radreport.engine.events import Progress, Token
from napari_radreport.engine.prompts import LETTERS, parse_choices
from napari_radreport.widgets.scope_note import ScopeNote
from napari_radreport.widgets.session import error_html, session_for
from napari_radreport.widgets.shortcuts import add_shortcut
from napari_radreport.widgets.status_line import StatusLine
from napari_radreport.widgets.study_picker import StudyPicker

if TYPE_CHECKING:
    import napari

STREAMING_MARK = " ▍"  # after the answer while it is being written


class QuestionEdit(QPlainTextEdit):
    """The question box: Enter sends it (``submitted``), Shift+Enter starts a new line (option lines)."""

    submitted = Signal()

    def keyPressEvent(self, event: QKeyEvent) -> None:
        enter = event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter)
        if enter and not event.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self.submitted.emit()
            return
        super().keyPressEvent(event)


class ChatDock(QWidget):
    def __init__(self, napari_viewer: napari.Viewer) -> None:
        super().__init__()
        self.session = session = session_for(napari_viewer)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Expanding)  # no stretch below
        self.picker = StudyPicker(session)
        self.transcript = QTextBrowser()
        self.transcript.setObjectName("radreport-chat-transcript")
        self.transcript.setPlaceholderText("Questions and answers about this study appear here.")
        self.transcript.setMinimumHeight(48)  # the layout, not this, gives it room
        self.transcript.setOpenLinks(False)
        self.transcript.anchorClicked.connect(self._link_clicked)
        # (study key, turn index) -> the answer's located sentences: (start, end, as_dict, Location; None but
        # for the study's newest answer: a heatmap is a whole model grid)
        self.located: dict[tuple[str, int], list[tuple[int, int, dict, Any]]] = {}
        self.question = QuestionEdit()
        self.question.setObjectName("radreport-chat-input")
        self.question.setPlaceholderText(
            "Ask about this study, e.g. Is there a pleural effusion? Enter sends; options on lines of their "
            "own (Shift+Enter, A. …, B. …) make a multiple-choice question.")
        self.question.setMinimumHeight(40)
        self.question.setMaximumHeight(64)
        self.question.submitted.connect(self._ask_if_enabled)
        self.ask_button = QPushButton("Ask")
        self.ask_button.setObjectName("radreport-chat-send")
        self.ask_button.setToolTip("Send the question (Enter in the question box)")
        self.ask_button.clicked.connect(self.ask)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setObjectName("radreport-chat-stop")
        self.stop_button.clicked.connect(session.stop)
        add_shortcut(self, "Escape", session.stop, self.stop_button)
        self.region_button = QPushButton("Ask about box")
        self.region_button.setObjectName("radreport-chat-region")
        self.region_button.setToolTip(
            "Ask what is in a rectangle drawn on this study (a Shapes layer): rectangles on several slices "
            "span them; one rectangle reaches half its shorter side above and below its slice. Models "
            "trained on boxes only (M3D-LaMed).")
        self.region_button.clicked.connect(self.ask_about_box)
        self.clear_button = QPushButton("Clear history")
        self.clear_button.clicked.connect(self.clear)
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.status = StatusLine()
        self.pending: tuple[Any, str] | None = None  # (study, question) being answered
        self.answer = ""
        self._tail: QTextCursor | None = None  # the end of the streaming answer in the transcript
        self.last_result = None  # the last Finished or Choice (its timings show what the cache saved)

        buttons = QHBoxLayout()
        buttons.addWidget(self.ask_button, 1)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.region_button)
        buttons.addWidget(self.clear_button)
        layout = QVBoxLayout(self)
        layout.setSpacing(4)
        layout.addWidget(self.picker)
        layout.addWidget(self.transcript, 1)
        layout.addWidget(self.question)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(ScopeNote(session))  # why the study is outside the model's scope, if it is
        session.study_changed.connect(self.render)
        session.busy_changed.connect(self._busy_changed)
        self.destroyed.connect(lambda *_, s=session: s.shutdown(timeout=0))
        self._busy_changed(session.busy)
        self.render()

    def turns(self, study) -> list[tuple[str, str, str]]:
        """(question, answer as the model wrote it, note shown after it) for each turn so far."""
        return self.session.chats.setdefault(study.key, [])

    def history(self, study) -> list[tuple[str, str]]:
        """The conversation as the model sees it (its own words, so the cached prefix matches)."""
        return [(q, a) for q, a, _ in self.turns(study)]

    def render(self, *_args) -> None:
        """The whole transcript of the current study, the answer being written last (then ``_tail`` is at
        its end, before the cursor mark)."""
        study = self.session.study
        self._tail = None
        if study is None:
            self.transcript.setHtml("")
            return
        rows = [f"<p><b>You:</b> {_lines(q)}<br><b>Model:</b> "
                f"{_linked(a, self.located.get((study.key, i), []), i)}<i>{html.escape(n)}</i></p>"
                for i, (q, a, n) in enumerate(self.turns(study))]
        streaming = self.pending is not None and self.pending[0] is study
        if streaming:  # spaces kept, so that appending to it shows what rendering it again would
            rows.append(f"<p><b>You:</b> {_lines(self.pending[1])}<br><b>Model:</b> <span style='white-space:"
                        f"pre-wrap'>{_lines(self.answer)}<i>{html.escape(STREAMING_MARK)}</i></span></p>")
        self.transcript.setHtml("".join(rows))
        if streaming:
            self._tail = QTextCursor(self.transcript.document())
            self._tail.movePosition(QTextCursor.MoveOperation.End)
            self._tail.movePosition(QTextCursor.MoveOperation.Left, n=len(STREAMING_MARK))
        self._scroll_to_end()

    def _append_answer(self, text: str) -> None:
        """Streamed ``text`` at the end of the answer being written (as ``render`` would show it)."""
        if self._tail is None:
            if self.pending is not None and self.pending[0] is self.session.study:
                self.render()
            return  # another study is shown: its transcript does not change
        self._tail.insertText(text.replace("\n", "\u2028"), QTextCharFormat())  # "\n": like <br>
        self._scroll_to_end()

    def _scroll_to_end(self) -> None:
        bar = self.transcript.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _busy_changed(self, busy: bool) -> None:
        self.ask_button.setEnabled(not busy)
        self.region_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy and self.session.job_owner is self)

    def _ask_if_enabled(self) -> None:
        if self.ask_button.isEnabled():
            self.ask()

    def clear(self) -> None:
        if self.session.study is not None:
            self.session.chats[self.session.study.key] = []
            self.render()

    def ask(self, text: str | None = None) -> None:
        study = self.session.study
        text = (text if isinstance(text, str) else self.question.toPlainText()).strip()
        if study is None or not text:
            self.status.setText("Open a study and type a question." if study is None else "Type a question.")
            return
        if not self.session.engine.loaded:
            self.status.setText("Load a model first (Report dock or Settings dock).")
            return
        choice = parse_choices(text)
        handlers = {"on_events": self._on_events, "on_result": self._answered, "on_error": self._failed,
                    "on_end": self._ended, "progress": self.progress}
        if choice is not None:
            watcher = self.session.run(self, "choose", study, choice[0], choice[1], **handlers)
        else:
            watcher = self.session.run(self, "ask", study, text, history=list(self.history(study)),
                                       settings=self.session.settings.generation(), **handlers)
        if watcher is None:  # busy: said why, nothing started
            return
        self.pending, self.answer, self.last_result = (study, text), "", None
        self.question.clear()
        self.status.setText("Thinking…")
        self._busy_changed(True)
        self.render()

    def ask_about_box(self) -> None:
        """Ask what is in the rectangle drawn on the current study, as the model's region question."""
        from napari_radreport.engine import EngineError
        from napari_radreport.viewer import study_image_layers
        from napari_radreport.widgets.drawn_region import NO_BOX, drawn_box_lps

        study, viewer = self.session.study, self.session.viewer_ref()
        if study is None or viewer is None:
            self.status.setText("Open a study first.")
            return
        if not self.session.engine.loaded:
            self.status.setText("Load a model first (Report dock or Settings dock).")
            return
        layers = study_image_layers(viewer, study)
        box = drawn_box_lps(viewer, layers[0], study) if layers and study.is_volume else None
        if box is None:
            self.status.setText(NO_BOX if layers and study.is_volume else
                                "Asking about a drawn box needs a volume (CT) on screen.")
            return
        try:
            question = self.session.engine.region_question(study, *box)
        except EngineError as exc:
            self.status.setText(error_html(str(exc)))
            return
        self.ask(question)

    def _on_events(self, events: list[Any]) -> None:
        """One insertion per batch of events (one poll), never a re-render of the transcript."""
        pieces = []
        for event in events:
            if isinstance(event, Token):
                pieces.append(event.text)
            elif isinstance(event, Progress):
                self.status.setText(html.escape(event.message or event.stage))
        if pieces:
            text = "".join(pieces)
            self.answer += text
            self._append_answer(text)

    def _answered(self, result) -> None:
        study, question = self.pending
        self.last_result = result
        if hasattr(result, "letter"):
            answer, note = _chosen(question, result.letter), f" ({result.probabilities[result.letter]:.0%})"
        else:
            answer, note = result.text, (" [stopped]" if result.stop_reason == "stopped" else "")
        self.turns(study).append((question, answer, note))
        self.status.setText("")

    def _ended(self) -> None:
        study, self.pending = (self.pending or (None, ""))[0], None
        self.render()
        result = self.last_result
        written = hasattr(result, "stop_reason") and result.stop_reason != "stopped"  # not a choice
        in_scope = getattr(result, "scope", None) is None or result.scope.in_scope  # else meaningless
        if study is not None and written and in_scope:
            self._locate(study, len(self.turns(study)) - 1)

    def _locate(self, study, turn: int) -> None:
        """Locate the sentences of answer ``turn`` of ``study`` (where the model can), then link them."""
        from napari_radreport.grounding.support import grounding_refusal

        info = self.session.engine.info
        if info is None or grounding_refusal(info.kind, info.modality, study):
            return
        turns = self.turns(study)
        question, answer, _note = turns[turn]

        def located(sentences: list) -> None:
            for (key, earlier), found in self.located.items():  # heatmaps of the newest answer only
                if key == study.key and earlier != turn:
                    self.located[(key, earlier)] = [(a, b, s, None) for a, b, s, _ in found]
            self.located[(study.key, turn)] = [(s.start, s.end, s.as_dict(), s.location) for s in sentences
                                               if s.location is not None]
            if self.located[(study.key, turn)]:
                self.status.setText("Underlined sentences are located in the image: click one to see where.")
            self.render()

        self.session.run(self, "ground_answer", study, question, answer,
                         history=[(q, a) for q, a, _ in turns[:turn]], on_result=located,
                         on_error=lambda text: self.status.setText(error_html(text)),
                         error_prefix="Could not locate the answer's findings")

    def _link_clicked(self, url) -> None:
        """A located sentence's link ("where:TURN:INDEX"): show it."""
        from napari_radreport.widgets.location_layers import show_sentence

        study = self.session.study
        parts = url.toString().split(":")
        if study is None or len(parts) != 3 or parts[0] != "where":
            return
        found = self.located.get((study.key, int(parts[1])), [])
        index = int(parts[2])
        if 0 <= index < len(found):
            _start, _end, sentence, location = found[index]
            self.status.setText(show_sentence(self.session, sentence, location))

    def _failed(self, text: str) -> None:
        """One line; the question goes back into the box (unless another is being typed): it is not lost."""
        if self.pending is not None and not self.question.toPlainText().strip():
            self.question.setPlainText(self.pending[1])
        self.status.setText(error_html(text))


def _chosen(question: str, letter: str) -> str:
    """The chosen letter with the text of its option in ``question``, e.g. "B. right"."""
    options = (parse_choices(question) or ("", []))[1]
    index = LETTERS.find(letter)
    return f"{letter}. {options[index]}" if 0 <= index < len(options) else letter


def _linked(answer: str, located: list[tuple[int, int, dict, Any]], turn: int) -> str:
    """``_lines(answer)`` with each located sentence a link ("where:TURN:INDEX")."""
    pieces, at = [], 0
    for index, (start, end, _sentence, _location) in enumerate(located):
        pieces.append(_lines(answer[at:start]))
        pieces.append(f"<a href='where:{turn}:{index}'>{_lines(answer[start:end])}</a>")
        at = end
    return "".join(pieces) + _lines(answer[at:])


def _lines(text: str) -> str:
    """``text`` as HTML that keeps its line breaks (a typed question's option lines stay one per line)."""
    return "<br>".join(html.escape(line) for line in text.split("\n"))
