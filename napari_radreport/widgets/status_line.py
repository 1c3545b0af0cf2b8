"""A dock's status line: word-wrapped rich text that takes no height while it has nothing to say, and never
less than its lines need."""

from __future__ import annotations

from qtpy.QtWidgets import QLabel


class StatusLine(QLabel):
    """Its minimum height follows what its text needs at its width: a dock's layout counts a word-wrapped
    label as one line when it sizes the dock, and squeezed under its lines the label overlapped the widget
    above (the Findings dock's table at 1366 x 768)."""

    def __init__(self, text: str = "") -> None:
        super().__init__()
        self.setWordWrap(True)
        self.setText(text)

    def setText(self, text: str) -> None:
        super().setText(text)
        self.setVisible(bool(text))
        self._fit()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._fit()

    def _fit(self) -> None:
        if not self.text() or self.width() <= 0:
            return
        kept = self.minimumHeight()
        self.setMinimumHeight(0)  # QLabel.heightForWidth never answers less than the minimum height
        need = self.heightForWidth(self.width())
        self.setMinimumHeight(need if need > 0 else kept)
