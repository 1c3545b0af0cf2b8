"""The editable draft: streamed text, autosave, the "AI draft, not reviewed" state,
changes against the AI text."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import QTimer, Signal
from qtpy.QtGui import QTextCursor
from qtpy.QtWidgets import (
    QCheckBox,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_radreport.drafts import Draft, DraftStore

AUTOSAVE_MS = 500
UNREVIEWED = "background:#8a5a00;color:white;padding:3px;border-radius:3px"
REVIEWED = "background:#1e6b35;color:white;padding:3px;border-radius:3px"


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
        self.reviewed.setToolTip("Tick when you have read and corrected the draft")
        self.reviewed.toggled.connect(self._reviewed_toggled)
        self.editor = QPlainTextEdit()
        self.editor.setPlaceholderText("The draft appears here. Generate a report, then edit it.")
        self.editor.textChanged.connect(self._edited)
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
        """Update the state line and the Show changes button (after text streamed in)."""
        self._refresh_state()

    # -- editing and saving --------------------------------------------------------------------
    def _edited(self) -> None:
        if self.draft is None:
            return
        self.draft.text = self.editor.toPlainText()
        self._refresh_state()
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
