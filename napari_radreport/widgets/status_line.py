"""A dock's status line: word-wrapped rich text that takes no height while it has nothing to say."""

from __future__ import annotations

from qtpy.QtWidgets import QLabel


class StatusLine(QLabel):
    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.setWordWrap(True)
        self.setText(text)

    def setText(self, text: str) -> None:
        super().setText(text)
        self.setVisible(bool(text))
