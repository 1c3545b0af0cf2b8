"""The editable draft: streamed text, autosave, the "AI draft, not reviewed" state,
changes against the AI text, and the sentences that contradict each other or the model's diagnosis.

Conflicts (napari_radreport/consistency.py) are found again on every edit, against the diagnosis the draft
keeps; each is shown on its sentences (an amber background, the reason as a tooltip) and counted in a line
under the text. Highlights are extra selections: they never enter the text, the undo history or the export.
"""

from __future__ import annotations

import html
from collections.abc import Callable

from qtpy.QtCore import QEvent, QTimer, Signal
from qtpy.QtGui import QColor, QTextCursor, QTextFormat
from qtpy.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
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

AUTOSAVE_MS = 500
UNREVIEWED = "background:#8a5a00;color:white;padding:3px;border-radius:3px"
REVIEWED = "background:#1e6b35;color:white;padding:3px;border-radius:3px"
CONFLICT_BACKGROUND = "#7a5200"  # a conflicting sentence, readable under napari's light text
CONFLICTS = "color:#ffc44d"


class ConflictTextEdit(QPlainTextEdit):
    """A plain text editor that shows the conflicts on their sentences, with the reason as a tooltip."""

    def __init__(self) -> None:
        super().__init__()
        self.conflicts: list[Conflict] = []

    def show_conflicts(self, conflicts: list[Conflict]) -> None:
        self.conflicts = conflicts
        selections = []
        for conflict in conflicts:
            for start, end in conflict.spans:
                selection = QTextEdit.ExtraSelection()
                selection.cursor = QTextCursor(self.document())
                selection.cursor.setPosition(start)
                selection.cursor.setPosition(end, QTextCursor.MoveMode.KeepAnchor)
                selection.format.setBackground(QColor(CONFLICT_BACKGROUND))
                selection.format.setProperty(QTextFormat.Property.FullWidthSelection, False)
                selections.append(selection)
        self.setExtraSelections(selections)

    def conflicts_at(self, position: int) -> list[Conflict]:
        """The conflicts whose sentences hold the character at ``position``."""
        return [c for c in self.conflicts if any(start <= position < end for start, end in c.spans)]

    def event(self, event) -> bool:
        if event.type() == QEvent.Type.ToolTip:
            found = self.conflicts_at(self.cursorForPosition(self.viewport().mapFromGlobal(
                event.globalPos())).position())
            if found:
                QToolTip.showText(event.globalPos(), "\n".join(c.message for c in found), self)
            else:
                QToolTip.hideText()
                event.ignore()
            return True
        return super().event(event)


class DraftEditor(QWidget):
    """Shows one Draft at a time; every edit is saved through the store within ``AUTOSAVE_MS``.

    The first unsaved edit starts the timer and later edits do not restart it, so continuous typing is
    saved every half second instead of never.
    """

    saved = Signal(str)  # path written
    save_failed = Signal(str)

    def __init__(self, store: Callable[[], DraftStore]):
        super().__init__()
        self._store = store
        self.draft: Draft | None = None
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
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(AUTOSAVE_MS)
        self.timer.timeout.connect(self.save_now)

        top = QHBoxLayout()
        top.addWidget(self.state, 1)
        top.addWidget(self.reviewed)
        self.actions = QHBoxLayout()  # buttons under the text; the dock may add its own
        self.actions.addWidget(self.changes)
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
        self.draft = draft
        self.editor.blockSignals(True)
        self.editor.setPlainText(draft.text if draft else "")
        self.editor.blockSignals(False)
        self.editor.setEnabled(draft is not None)
        self.reviewed.blockSignals(True)
        self.reviewed.setChecked(bool(draft and draft.reviewed))
        self.reviewed.blockSignals(False)
        self._refresh_state()
        self.check()

    def set_streaming(self, streaming: bool) -> None:
        self.editor.setReadOnly(streaming)
        self.reviewed.setEnabled(not streaming)

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
        """Find the conflicts in the draft's text as it stands; show them on their sentences, count them."""
        draft = self.draft
        conflicts = find_conflicts(draft.text, draft.diagnosis) if draft is not None and draft.text else []
        self.editor.show_conflicts(conflicts)
        if conflicts:
            listed = "; ".join(html.escape(c.message) for c in conflicts[:3])
            more = f" (and {len(conflicts) - 3} more)" if len(conflicts) > 3 else ""
            noun = "conflict" if len(conflicts) == 1 else "conflicts"
            self.conflict_line.setText(f"<b>{len(conflicts)} {noun} in the draft</b> (highlighted; hover for "
                                       f"why): {listed}{more}")
        self.conflict_line.setVisible(bool(conflicts))

    # -- editing and saving --------------------------------------------------------------------
    def _edited(self) -> None:
        if self.draft is None:
            return
        self.draft.text = self.editor.toPlainText()
        self._refresh_state()
        self.check()
        if not self.timer.isActive():  # at most AUTOSAVE_MS after the first unsaved edit, even while typing
            self.timer.start()

    def _reviewed_toggled(self, checked: bool) -> None:
        if self.draft is not None:
            self.draft.reviewed = checked
            self._refresh_state()
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
            self.state.setText("Reviewed")
            self.state.setStyleSheet(REVIEWED)
        else:
            edited = " (edited)" if draft is not None and draft.ai_draft and draft.edited else ""
            self.state.setText(f"AI draft, not reviewed{edited}")
            self.state.setStyleSheet(UNREVIEWED)
        self.changes.setEnabled(bool(draft and draft.ai_draft and draft.edited))

    def _show_changes(self) -> None:
        from qtpy.QtWidgets import QMessageBox

        if self.draft is None:
            return
        box = QMessageBox(self)
        box.setWindowTitle("Changes to the AI draft")
        box.setText("Lines removed from the AI draft start with '-', lines you added with '+'.")
        box.setDetailedText(self.draft.diff() or "No changes.")
        box.open()
