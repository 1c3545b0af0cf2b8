"""Keyboard shortcuts of the docks, each shown in its button's tooltip (the list is in docs/docks.md)."""

from __future__ import annotations

from collections.abc import Callable

from qtpy.QtCore import Qt
from qtpy.QtGui import QKeySequence, QShortcut
from qtpy.QtWidgets import QAbstractButton, QWidget


def shortcut_text(key: str) -> str:
    """``key`` as this platform writes it (Ctrl+Return, ⌘E)."""
    return QKeySequence(key).toString(QKeySequence.SequenceFormat.NativeText)


def add_shortcut(owner: QWidget, key: str, slot: Callable[[], object], button: QAbstractButton | None = None,
                 *, window: bool = False) -> QShortcut:
    """``key`` runs ``slot``: anywhere in the napari window when ``window`` (e.g. Generate from the canvas),
    else only while the focus is in ``owner`` (Esc must stay napari's on the canvas). ``button``'s tooltip
    names the key."""
    shortcut = QShortcut(QKeySequence(key), owner)
    shortcut.setContext(Qt.ShortcutContext.WindowShortcut if window else
                        Qt.ShortcutContext.WidgetWithChildrenShortcut)
    shortcut.activated.connect(slot)
    if button is not None:
        tip = button.toolTip()
        button.setToolTip(f"{tip} ({shortcut_text(key)})" if tip else shortcut_text(key))
    return shortcut
