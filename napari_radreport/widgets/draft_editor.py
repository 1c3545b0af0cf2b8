"""The editable draft: streamed text, autosave, the "AI draft, not reviewed" state, the reviewer's sign-off,
changes against the AI text, earlier versions, and the sentences that contradict each other or the model's
diagnosis.

Ticking Reviewed signs the text off: the reviewer's name (the Reviewer setting, asked once when empty) and
the time go into the draft, and the state line says "Reviewed by NAME, TIME". Any edit after that clears
the sign-off and the state line says so: the reviewed text is always the signed text.

Conflicts (napari_radreport/consistency.py) are found again on every edit, against the diagnosis the draft
keeps; each is shown on its sentences (an amber background, the reason as a tooltip) and counted in a line
under the text. Sentences located in the image (the draft's ``grounding``, matched to the text as it now
reads) are underlined; a click on one (without selecting text) emits ``location_clicked``. Highlights and
underlines are extra selections: they never enter the text, the undo history or the export.
Never while a report streams in (the editor is read-only then): a check asked for meanwhile runs once, when
the stream ends (``set_streaming(False)``). Streamed text is appended without counting as an edit.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from typing import TYPE_CHECKING

from qtpy.QtCore import QEvent, Qt, QTimer, Signal
from qtpy.QtGui import QColor, QTextCursor, QTextFormat
from qtpy.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTextEdit,
    QToolTip,
    QVBoxLayout,
    QWidget,
)

from napari_radreport.consistency import Conflict, find_conflicts
from napari_radreport.drafts import Draft, DraftStore
from napari_radreport.export.content import STATUS_DRAFT, reviewed_by
from napari_radreport.grounding.matching import located_spans

if TYPE_CHECKING:
    from napari_radreport.widgets.draft_history import DraftHistory

AUTOSAVE_MS = 500
UNREVIEWED = "background:#8a5a00;color:white;padding:3px;border-radius:3px"
REVIEWED = "background:#1e6b35;color:white;padding:3px;border-radius:3px"
CONFLICT_BACKGROUND = "#7a5200"  # a conflicting sentence, readable under napari's light text
CONFLICTS = "color:#ffc44d"
LOCATED_UNDERLINE = "#4fc3f7"  # a sentence located in the image


class ConflictTextEdit(QPlainTextEdit):
    """A plain text editor that shows the conflicts on their sentences (the reason as a tooltip) and
    underlines the sentences located in the image (a click on one emits ``location_clicked``)."""

    location_clicked = Signal(object)  # the grounded sentence (GroundedSentence.as_dict)

    def __init__(self) -> None:
        super().__init__()
        self.conflicts: list[Conflict] = []
        self.located: list[tuple[int, int, dict]] = []

    def _selection(self, start: int, end: int) -> QTextEdit.ExtraSelection:
        selection = QTextEdit.ExtraSelection()
        selection.cursor = QTextCursor(self.document())
        selection.cursor.setPosition(start)
        selection.cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
        selection.format.setProperty(QTextFormat.Property.FullWidthSelection, False)
        return selection

    def show_conflicts(self, conflicts: list[Conflict],
                       located: list[tuple[int, int, dict]] | None = None) -> None:
        self.conflicts = conflicts
        self.located = located if located is not None else self.located
        selections = []
        for start, end, _sentence in self.located:
            selection = self._selection(start, end)
            selection.format.setUnderlineStyle(selection.format.UnderlineStyle.SingleUnderline)
            selection.format.setUnderlineColor(QColor(LOCATED_UNDERLINE))
            selections.append(selection)
        for conflict in conflicts:
            for start, end in conflict.spans:
                selection = self._selection(start, end)
                selection.format.setBackground(QColor(CONFLICT_BACKGROUND))
                selections.append(selection)
        self.setExtraSelections(selections)

    def conflicts_at(self, position: int) -> list[Conflict]:
        """The conflicts whose sentences hold the character at ``position``."""
        return [c for c in self.conflicts if any(start <= position < end for start, end in c.spans)]

    def located_at(self, position: int) -> dict | None:
        """The located sentence that holds the character at ``position``, or None."""
        return next((s for start, end, s in self.located if start <= position < end), None)

    def mouseReleaseEvent(self, event) -> None:
        super().mouseReleaseEvent(event)
        if event.button() == Qt.MouseButton.LeftButton and not self.textCursor().hasSelection():
            sentence = self.located_at(self.cursorForPosition(event.pos()).position())
            if sentence is not None:
                self.location_clicked.emit(sentence)

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            position = self.cursorForPosition(self.viewport().mapFromGlobal(event.globalPos())).position()
            lines = [c.message for c in self.conflicts_at(position)]
            sentence = self.located_at(position)
            if sentence is not None:
                lines.append(f"Located in the image ({sentence.get('finding')}): click to show where")
            if lines:
                QToolTip.showText(event.globalPos(), "\n".join(lines), self)
            else:
                QToolTip.hideText()
                event.ignore()
            return True
        return super().event(event)


class DraftEditor(QWidget):
    """Shows one Draft at a time; every edit is saved through the store within ``AUTOSAVE_MS``.

    The first unsaved edit starts the timer and later edits do not restart it, so continuous typing is
    saved every half second instead of never. ``reviewer_name`` reads the Reviewer setting and
    ``remember_reviewer`` saves the name asked for when it is empty; ``ask_reviewer`` asks (tests answer).
    """

    saved = Signal(str)  # path written
    save_failed = Signal(str)

    def __init__(self, store: Callable[[], DraftStore], reviewer_name: Callable[[], str] = lambda: "",
                 remember_reviewer: Callable[[str], None] = lambda _name: None):
        super().__init__()
        self._store = store
        self._reviewer_name, self._remember_reviewer = reviewer_name, remember_reviewer
        self.ask_reviewer: Callable[[], str | None] = self._ask_reviewer
        self.draft: Draft | None = None
        self._check_deferred = False  # a conflict check was asked for while the text streamed in
        self._note = ""  # what just happened to the draft (a sign-off cleared, a version restored)
        self.history_dialog: DraftHistory | None = None  # while it is open
        self.state = QLabel()
        self.state.setObjectName("draft_state")
        self.reviewed = QCheckBox("Reviewed")
        self.reviewed.setObjectName("radreport-reviewed")
        self.reviewed.setToolTip("Tick when you have read and corrected the draft")
        self.reviewed.toggled.connect(self._reviewed_toggled)
        self.editor = ConflictTextEdit()
        self.editor.setObjectName("radreport-draft")
        self.editor.setPlaceholderText("The draft appears here. Generate a report, then edit it.")
        self.editor.textChanged.connect(self._edited)
        self.conflict_line = QLabel()
        self.conflict_line.setObjectName("draft_conflicts")
        self.conflict_line.setWordWrap(True)
        self.conflict_line.setStyleSheet(CONFLICTS)
        self.conflict_line.setVisible(False)
        self.changes = QPushButton("Show changes")
        self.changes.setToolTip("Differences between the AI draft and your edited text")
        self.changes.clicked.connect(self._show_changes)
        self.history = QPushButton("History…")
        self.history.setObjectName("radreport-history")
        self.history.setToolTip("Earlier versions of this draft; restore one")
        self.history.clicked.connect(self.show_history)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(AUTOSAVE_MS)
        self.timer.timeout.connect(self.save_now)

        top = QHBoxLayout()
        top.addWidget(self.state, 1)
        top.addWidget(self.reviewed)
        self.actions = QHBoxLayout()  # buttons under the text; the dock may add its own
        self.actions.addWidget(self.changes)
        self.actions.addWidget(self.history)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(self.editor, 1)
        layout.addWidget(self.conflict_line)
        layout.addLayout(self.actions)
        self._refresh_state()

    # -- showing ---------------------------------------------------------------------------
    def show_draft(self, draft: Draft | None) -> None:
        """Show another study's draft (the current one is saved first)."""
        self.save_now()
        if self.history_dialog is not None:
            self.history_dialog.close()
        self.draft = draft
        self._note = ""
        self._show_text(draft.text if draft else "")
        self.editor.setEnabled(draft is not None)
        self._refresh_state()
        self.check()

    def _show_text(self, text: str) -> None:
        """The draft's text and sign-off in the widgets, without counting either as the user's change."""
        self.editor.blockSignals(True)
        self.editor.setPlainText(text)
        self.editor.blockSignals(False)
        self._show_reviewed()

    def _show_reviewed(self) -> None:
        self.reviewed.blockSignals(True)
        self.reviewed.setChecked(bool(self.draft and self.draft.reviewed))
        self.reviewed.blockSignals(False)

    def set_streaming(self, streaming: bool) -> None:
        self.editor.setReadOnly(streaming)
        self.reviewed.setEnabled(not streaming)
        self._refresh_state()
        if not streaming and self._check_deferred:
            self.check()

    def append(self, text: str) -> None:
        """Add streamed text at the end without counting it as the user's edit."""
        cursor = self.editor.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        self.editor.blockSignals(True)
        cursor.insertText(text)
        self.editor.blockSignals(False)
        self.editor.ensureCursorVisible()

    def refresh(self) -> None:
        """Update the state line, the Show changes button and the conflicts (after text streamed in)."""
        self._refresh_state()
        self.check()

    def check(self) -> None:
        """Find the conflicts in the draft's text as it stands; show them on their sentences, count them.
        While text streams in, only note that a check is due: it runs when the stream ends."""
        self._check_deferred = self.editor.isReadOnly()
        if self._check_deferred:
            return
        draft = self.draft
        conflicts = find_conflicts(draft.text, draft.diagnosis) if draft is not None and draft.text else []
        located = located_spans(draft.text, draft.grounding) if draft is not None and draft.grounding else []
        self.editor.show_conflicts(conflicts, located)
        if conflicts:
            listed = "; ".join(html.escape(c.message) for c in conflicts[:3])
            more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
            noun = "conflict" if len(conflicts) == 1 else "conflicts"
            self.conflict_line.setText(f"<b>{len(conflicts)} {noun} in the draft</b> (highlighted; hover for "
                                       f"why): {listed}{more}")
        self.conflict_line.setVisible(bool(conflicts))

    def show_locations(self) -> None:
        """Underline the draft's located sentences again (after its grounding changed); the conflicts shown
        stay as they are (the text did not change)."""
        draft = self.draft
        located = located_spans(draft.text, draft.grounding) if draft is not None and draft.grounding else []
        self.editor.show_conflicts(self.editor.conflicts, located)

    # -- editing and saving --------------------------------------------------------------------
    def _edited(self) -> None:
        draft = self.draft
        if draft is None:
            return
        draft.text = self.editor.toPlainText()
        if draft.reviewed:  # the signed text changed: the sign-off no longer holds
            who = draft.reviewer or "the reviewer"
            draft.clear_sign_off()
            self._show_reviewed()
            self._note = f"sign-off by {who} cleared: the text changed after review"
        self._refresh_state()
        self.check()
        if not self.timer.isActive():  # at most AUTOSAVE_MS after the first unsaved edit, even while typing
            self.timer.start()

    def _reviewed_toggled(self, checked: bool) -> None:
        """Sign the text off under the Reviewer setting's name (asked once when empty; cancelled: not
        reviewed), or withdraw the sign-off."""
        draft = self.draft
        if draft is None:
            return
        if checked:
            name = self._reviewer_name().strip()
            if not name:
                name = (self.ask_reviewer() or "").strip()
                if not name:
                    self._show_reviewed()
                    return
                self._remember_reviewer(name)
            draft.sign_off(name)
        else:
            draft.clear_sign_off()
        self._note = ""
        self._refresh_state()
        self.save_now()

    def _ask_reviewer(self) -> str | None:
        name, ok = QInputDialog.getText(
            self, "Reviewer", "Your name, as it signs the reports you review\n(family name, given names: "
            "e.g. Smith, Jane). It is saved as the Reviewer setting.")
        return name if ok else None

    # -- history -------------------------------------------------------------------------------
    def show_history(self) -> None:
        """The History dialog: the earlier versions, newest first; Restore puts one back."""
        from napari_radreport.widgets.draft_history import DraftHistory

        if self.draft is None:
            return
        self.history_dialog = dialog = DraftHistory(self.draft, self)
        dialog.restore_requested.connect(self.restore)
        dialog.finished.connect(lambda _result: setattr(self, "history_dialog", None))
        dialog.open()

    def restore(self, index: int) -> None:
        """Make ``draft.previous[index]`` the current text; the current one is kept in the history first."""
        draft = self.draft
        if draft is None or self.editor.isReadOnly():
            return
        saved_at = draft.previous[index].saved_at
        if draft.restore(index):
            self._show_text(draft.text)
            self._note = f"restored the version saved {saved_at}" if saved_at else "restored a version"
            self._refresh_state()
            self.check()
            self.save_now()

    def save_now(self) -> None:
        self.timer.stop()
        if self.draft is None or not (self.draft.text or self.draft.ai_draft or self.draft.previous):
            return
        try:
            self.saved.emit(str(self._store().save(self.draft)))
        except OSError as exc:
            self.save_failed.emit(f"could not save the draft: {exc}")

    def _refresh_state(self) -> None:
        draft = self.draft
        if draft is not None and draft.reviewed:
            self.state.setText(reviewed_by(draft.reviewer, draft.reviewed_at))
            self.state.setStyleSheet(REVIEWED)
        else:
            edited = " (edited)" if draft is not None and draft.ai_draft and draft.edited else ""
            note = f"; {self._note}" if self._note else ""
            self.state.setText(f"{STATUS_DRAFT}{edited}{note}")
            self.state.setStyleSheet(UNREVIEWED)
        self.changes.setEnabled(bool(draft and draft.ai_draft and draft.edited))
        self.history.setEnabled(bool(draft and draft.previous) and not self.editor.isReadOnly())

    def _show_changes(self) -> None:
        from qtpy.QtWidgets import QMessageBox

        if self.draft is None:
            return
        box = QMessageBox(self)
        box.setWindowTitle("Changes to the AI draft")
        box.setText("Lines removed from the AI draft start with '-', lines you added with '+'.")
        box.setDetailedText(self.draft.diff() or "No changes.")
        box.open()
