"""The History dialog: a draft's earlier versions (``Draft.previous``) newest first, a read-only preview.

Each row shows when the version was last saved, the model that wrote its AI draft, who signed it off and
its first line. Restore asks the editor to put the chosen version back (``DraftEditor.restore``, which keeps
the current text in the history first) and closes the dialog.
"""

from __future__ import annotations

from qtpy.QtCore import Signal
from qtpy.QtWidgets import (
    QAbstractItemView,
    QDialog,
    QDialogButtonBox,
    QHeaderView,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from napari_radreport.drafts import Draft, Version

COLUMNS = ("Saved", "Model", "Reviewed by", "First line")


def version_row(version: Version) -> tuple[str, ...]:
    """What the table shows of a version, in ``COLUMNS`` order ("" where an older draft did not record it)."""
    first = next((line.strip() for line in version.text.splitlines() if line.strip()), "")
    reviewer = version.reviewer or ("(unnamed)" if version.reviewed else "")
    return (version.saved_at.replace("T", " "), version.provenance.get("model_name", ""), reviewer, first)


class DraftHistory(QDialog):
    """Lists ``draft.previous`` newest first; ``restore_requested`` carries the chosen index into it."""

    restore_requested = Signal(int)

    def __init__(self, draft: Draft, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"History of the draft{f' of {draft.study_label}' if draft.study_label else ''}")
        self.setObjectName("radreport-history-dialog")
        self.resize(760, 480)
        self.versions = list(draft.previous)
        self.table = QTableWidget(len(self.versions), len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(len(COLUMNS) - 1, QHeaderView.ResizeMode.Stretch)
        for row in range(len(self.versions)):
            for column, value in enumerate(version_row(self.versions[self.index_of(row)])):
                self.table.setItem(row, column, QTableWidgetItem(value))
        self.table.resizeColumnsToContents()
        self.preview = QPlainTextEdit()
        self.preview.setObjectName("radreport-history-preview")
        self.preview.setReadOnly(True)
        self.preview.setPlaceholderText("Choose a version to read it.")
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(self.reject)
        self.restore_button = QPushButton("Restore")
        self.restore_button.setToolTip("Make this version the current draft; the current text is kept here")
        self.restore_button.setEnabled(False)
        self.restore_button.clicked.connect(self._restore)
        buttons.addButton(self.restore_button, QDialogButtonBox.ButtonRole.ActionRole)
        layout = QVBoxLayout(self)
        layout.addWidget(self.table, 1)
        layout.addWidget(self.preview, 2)
        layout.addWidget(buttons)
        self.table.itemSelectionChanged.connect(self._selected)

    def index_of(self, row: int) -> int:
        """The index into ``draft.previous`` of a table row (the newest is the first row)."""
        return len(self.versions) - 1 - row

    def select(self, index: int) -> None:
        """Select the version ``draft.previous[index]``."""
        self.table.selectRow(self.index_of(index))

    def selected_index(self) -> int | None:
        rows = self.table.selectionModel().selectedRows()
        return self.index_of(rows[0].row()) if rows else None

    def _selected(self) -> None:
        index = self.selected_index()
        self.preview.setPlainText(self.versions[index].text if index is not None else "")
        self.restore_button.setEnabled(index is not None)

    def _restore(self) -> None:
        index = self.selected_index()
        if index is not None:
            self.restore_requested.emit(index)
            self.accept()
