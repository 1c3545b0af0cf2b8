"""The reading layout: the image in the middle, the report at full height on the right, the study, findings
and conversation on the left, all visible at once; fitted to the screen and remembered.

    left column                       centre      right column
    [Study | Settings | layers | layer controls]  canvas      Report (full height: the editor is at least
    Findings                                                  half the window high)
    Chat

The report editor needs most of a column's height (at 768 px, half the window is 384 px of text under the
dock's controls), so Findings and Chat cannot also sit under it; they sit in the left column with the Study
dock, which shares a tab group with Settings and napari's own layer docks (the study picker in every dock
chooses the study, so the layer list is seldom needed). Qt stays here: ``viewer.add_docks`` calls these.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TYPE_CHECKING

from qtpy.QtCore import QByteArray, QEvent, QObject, Qt
from qtpy.QtWidgets import QApplication, QDockWidget, QFrame, QMainWindow, QScrollArea

from napari_radreport.viewer import PLUGIN
from napari_radreport.widgets.session import session_for

if TYPE_CHECKING:
    import napari

DOCKS = ("Study", "Report", "Chat", "Findings", "Settings")
LAYOUT_VERSION = 1  # QMainWindow.restoreState refuses a state saved under another version
LEFT_WIDTH = (0.25, 300, 420)  # fraction of the window, then the least and most pixels
RIGHT_WIDTH = (0.32, 420, 640)
LEFT_HEIGHTS = (0.42, 0.22, 0.36)  # Study group, Findings, Chat: of the left column's height
TITLES_PX = 100  # what the left column's title bars and tab bar take of its height, about


def _width(window: int, rule: tuple[float, int, int]) -> int:
    fraction, least, most = rule
    return max(least, min(most, round(fraction * window)))


def fit_to_screen(main: QMainWindow) -> None:
    """Never larger than the screen's free area (a window taller than the screen clips its own buttons)."""
    screen = main.screen() or QApplication.primaryScreen()
    if screen is None:
        return
    free = screen.availableGeometry()
    frame = main.frameGeometry().size() - main.geometry().size()  # the title bar and borders
    width = min(main.width(), free.width() - frame.width())
    height = min(main.height(), free.height() - frame.height())
    if (width, height) != (main.width(), main.height()):
        main.resize(width, height)


def scroll_when_short(dock: QDockWidget) -> None:
    """The dock's content scrolls when the dock is shorter than it, instead of making the window taller (a tab
    group is as tall as its tallest member). napari's ``dock_widgets`` still hands out the plugin's widget."""
    inner = dock.widget()
    if inner is None or isinstance(inner, QScrollArea):
        return
    scroll = QScrollArea()
    scroll.setObjectName(f"{inner.objectName() or 'dock'}-scroll")
    scroll.setWidgetResizable(True)
    scroll.setFrameShape(QFrame.Shape.NoFrame)
    # napari's QtViewerDockWidget.inner_widget (and so viewer.window.dock_widgets) hands out this attribute
    # when present: the widget the plugin made, not the scroll area
    scroll._magic_widget = getattr(inner, "_magic_widget", inner)
    # Python attributes live on Python wrappers: keep them alive from the dock's, which napari holds, or the
    # scroll area's wrapper (and with it the magicgui Container it names) is collected and the dock closes
    dock._radreport_scroll, scroll._radreport_inner = scroll, inner
    dock.setWidget(scroll)
    scroll.setWidget(inner)
    dock.setMinimumSize(scroll.minimumSizeHint())  # it kept the content's minimum; now the scroll area's


def arrange(main: QMainWindow, docks: dict[str, QDockWidget], napari_docks: list[QDockWidget]) -> None:
    """Put the plugin's docks (by name: Study, Report, Chat, Findings, Settings) and napari's own left docks
    (``napari_docks``: the layer list, the layer controls) into the reading layout, Report and Study in
    front."""
    left, right = Qt.DockWidgetArea.LeftDockWidgetArea, Qt.DockWidgetArea.RightDockWidgetArea
    study, report = docks["Study"], docks["Report"]
    size = main.size()  # re-docking must not grow the window (Qt fits it to the docks' size hints)
    central = main.centralWidget()
    column = central.height() if central is not None and central.height() > 0 else main.height()
    for dock in (*docks.values(), *napari_docks):  # out of any tab group first: re-tabbing leaves stray tabs
        main.removeDockWidget(dock)
        dock.setFloating(False)
    main.addDockWidget(left, study)
    main.splitDockWidget(study, docks["Findings"], Qt.Orientation.Vertical)
    main.splitDockWidget(docks["Findings"], docks["Chat"], Qt.Orientation.Vertical)
    for dock in (docks["Settings"], *napari_docks):
        main.tabifyDockWidget(study, dock)
    main.addDockWidget(right, report)
    for dock in (*docks.values(), *napari_docks):
        dock.setVisible(True)
        if isinstance(dock.widget(), QScrollArea):  # re-docking gave it its content's minimum back
            dock.setMinimumSize(dock.widget().minimumSizeHint())
    main.resize(size)
    main.resizeDocks([study, report], [_width(size.width(), LEFT_WIDTH), _width(size.width(), RIGHT_WIDTH)],
                     Qt.Orientation.Horizontal)
    column -= TITLES_PX  # the three docks' title bars and the tab bar share the column with them
    main.resizeDocks([study, docks["Findings"], docks["Chat"]], [round(f * column) for f in LEFT_HEIGHTS],
                     Qt.Orientation.Vertical)
    study.raise_()
    report.raise_()


def saved_state(main: QMainWindow) -> str:
    """The window's dock arrangement as text (for the settings file)."""
    return base64.b64encode(bytes(main.saveState(LAYOUT_VERSION))).decode("ascii")


def restore_state(main: QMainWindow, state: str) -> bool:
    """Put back an arrangement from ``saved_state``; False (nothing changed) when it cannot be read or was
    saved by another layout version."""
    try:
        raw = base64.b64decode(state.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        return False
    return bool(raw) and main.restoreState(QByteArray(raw), LAYOUT_VERSION)


class _SaveOnClose(QObject):
    """Calls ``save(state)`` when the window closes."""

    def __init__(self, main: QMainWindow, save: Callable[[str], None]):
        super().__init__(main)
        self.save = save

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:
        if event.type() == QEvent.Type.Close and isinstance(watched, QMainWindow):
            self.save(saved_state(watched))
        return False


def remember(main: QMainWindow, save: Callable[[str], None]) -> None:
    """Save the arrangement through ``save`` when the window closes."""
    main.installEventFilter(_SaveOnClose(main, save))


def _plugin_docks(viewer: napari.Viewer) -> tuple[dict[str, QDockWidget], dict]:
    """The plugin's docks (napari's wrappers, and the widgets inside them) by name, made when missing (napari
    hands back a dock it already has)."""
    wrappers, widgets = {}, {}
    for name in DOCKS:
        wrappers[name], widgets[name] = viewer.window.add_plugin_dock_widget(PLUGIN, name, tabify=False)
    return wrappers, widgets


def _napari_docks(viewer: napari.Viewer) -> list[QDockWidget]:
    return [viewer.window._qt_viewer.dockLayerList, viewer.window._qt_viewer.dockLayerControls]


def reset(viewer: napari.Viewer) -> None:
    """Put every dock back in the reading layout, sized for the window as it is now (the Settings dock's
    "Reset the reading layout")."""
    arrange(viewer.window._qt_window, _plugin_docks(viewer)[0], _napari_docks(viewer))


def add_docks(viewer: napari.Viewer, *, restore: bool = True) -> dict:
    """Dock the plugin's widgets in the reading layout, or as the user last left them (when ``restore`` and
    the settings hold an arrangement), in a window no larger than the screen; the arrangement is saved in the
    user's settings when the window closes. Returns the docks' widgets by name."""
    main = viewer.window._qt_window
    wrappers, widgets = _plugin_docks(viewer)
    session = session_for(viewer)
    # held here: in the reading layout a garbage collection closed the Settings dock (a magicgui Container),
    # napari's own references to it notwithstanding (found, not explained: tests/test_reading_workspace.py)
    session.docks = widgets
    for dock in (wrappers["Study"], wrappers["Settings"], *_napari_docks(viewer)):  # the left tab group
        scroll_when_short(dock)
    fit_to_screen(main)
    saved = session.settings.reading_layout if restore else ""
    if not (saved and restore_state(main, saved)):  # restoring after arranging leaves a stray tab bar
        arrange(main, wrappers, _napari_docks(viewer))
    remember(main, lambda state: session.update_settings(reading_layout=state))
    return widgets
