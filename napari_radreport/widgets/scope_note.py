"""The line every dock shows under its controls when the study on screen is outside the model's scope."""

from __future__ import annotations

import contextlib

from napari_radreport.widgets.session import ViewerSession, scope_html
from napari_radreport.widgets.status_line import StatusLine


class ScopeNote(StatusLine):
    """Orange, word-wrapped, hidden while the shown study is within the model's scope (or not yet checked).

    The verdict comes from the last task run on the study (``ViewerSession.scopes``), so it stays before and
    after each task, and follows the study on screen."""

    def __init__(self, session: ViewerSession) -> None:
        super().__init__("")
        self.session = session
        session.scope_changed.connect(self.refresh)
        session.study_changed.connect(self.refresh)
        session.model_changed.connect(self.refresh)
        self.destroyed.connect(lambda *_: self._disconnect(session))
        self.refresh()

    def _disconnect(self, session: ViewerSession) -> None:
        for name in ("scope_changed", "study_changed", "model_changed"):
            with contextlib.suppress(TypeError, RuntimeError):  # already disconnected, or the session is gone
                getattr(session, name).disconnect(self.refresh)

    def refresh(self, *_args) -> None:
        study = self.session.study
        text = scope_html(self.session.scopes.get(study.key)) if study is not None else ""
        self.setText(text)  # hidden while empty
