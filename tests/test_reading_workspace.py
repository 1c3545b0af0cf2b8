"""The reading workspace in a real napari window (under Xvfb): the layout fits the screen with a tall report,
one active study follows the selected layer in every dock, keyboard shortcuts, names for automation."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from qtpy.QtCore import QEvent, Qt  # noqa: E402
from qtpy.QtWidgets import QApplication, QDockWidget, QWidget  # noqa: E402

from napari_radreport import load_study  # noqa: E402

pytestmark = pytest.mark.viewer
WAIT_MS = 60000
OBJECT_NAMES = ("radreport-generate", "radreport-stop", "radreport-draft", "radreport-study",
                "radreport-chat-input", "radreport-chat-send", "radreport-findings-table",
                "radreport-reviewed", "radreport-export")


@pytest.fixture()
def workspace(docked):
    """(viewer, session, docks): the plugin's docks in the reading layout (conftest's ``docked``)."""
    docks = {name: dock for name, dock in docked.items() if name not in ("viewer", "session")}
    return docked["viewer"], docked["session"], docks


def _settle() -> None:
    for _ in range(5):
        QApplication.processEvents()


def _dock_of(widget: QWidget) -> QDockWidget:
    while not isinstance(widget, QDockWidget):
        widget = widget.parentWidget()
    return widget


@pytest.mark.parametrize("size", [(1366, 768), (1920, 1080)])
def test_the_reading_layout_fits_the_window_with_the_report_half_its_height(workspace, size, abdomen_nifti):
    from napari_radreport.viewer import add_study
    from napari_radreport.widgets.layout import reset

    viewer, _session, docks = workspace
    add_study(viewer, load_study(abdomen_nifti))
    main = viewer.window._qt_window
    main.resize(*size)
    reset(viewer)
    _settle()
    assert (main.width(), main.height()) == size  # the docks' minimums do not push the window past it
    assert main.minimumSizeHint().height() <= 768 - 40  # a 1366 x 768 screen less a title bar
    editor = docks["Report"].editor.editor
    assert editor.height() >= size[1] / 2
    for name in ("Report", "Findings", "Chat", "Study"):  # draft, findings and conversation at once
        dock = _dock_of(docks[name])
        assert dock.isVisible() and not dock.visibleRegion().isEmpty(), name
        assert main.dockWidgetArea(dock) == (Qt.DockWidgetArea.RightDockWidgetArea if name == "Report" else
                                             Qt.DockWidgetArea.LeftDockWidgetArea)
    assert _dock_of(docks["Settings"].native).visibleRegion().isEmpty()  # a tab behind the Study dock
    for name in ("Study", "Settings"):  # scrolled when short, still the plugin's widget to napari
        assert viewer.window.dock_widgets[f"{name} (napari-radreport)"] is docks[name]


def test_a_two_line_note_under_the_findings_table_does_not_overlap_it(workspace, abdomen_nifti):
    """A dock's layout counts a word-wrapped label as one line: the scope note (two lines at 1366 x 768) was
    squeezed into the Findings table's last rows."""
    from napari_radreport.viewer import add_study
    from napari_radreport.widgets.layout import reset
    from napari_radreport.widgets.scope_note import ScopeNote

    viewer, _session, docks = workspace
    add_study(viewer, load_study(abdomen_nifti))
    main = viewer.window._qt_window
    main.resize(1366, 768)
    reset(viewer)
    _settle()
    findings = docks["Findings"]
    (note,) = findings.findChildren(ScopeNote)
    note.setText("<b>Scope not fully checked: the model declares no scope beyond its modality.</b>")
    findings.status.setText("Showing where “Cardiomegaly: yes” is: peak at row 48, column 240 of "
                            "radiograph 1.")
    _settle()
    assert note.height() > note.fontMetrics().height() * 1.5  # it wraps: two lines or more
    shown = [w for w in (findings.table, findings.status, note) if w.isVisible()]
    for upper, lower in zip(shown, shown[1:]):
        assert upper.geometry().bottom() < lower.geometry().top(), type(lower).__name__
    assert (main.width(), main.height()) == (1366, 768)


def test_a_status_line_is_as_tall_as_its_text_and_no_taller(qtbot):
    from napari_radreport.widgets.status_line import StatusLine

    line = StatusLine()
    qtbot.addWidget(line)
    line.resize(200, 20)
    line.show()
    line.setText("word " * 40)
    lines = line.fontMetrics().height()
    assert line.minimumHeight() >= 4 * lines  # many lines at 200 px
    line.setText("one line")
    assert line.minimumHeight() < 1.5 * lines  # back to one (QLabel's own answer never drops below it)
    line.setText("")
    assert not line.isVisible()


def test_every_dock_survives_a_garbage_collection_and_a_study_opening(make_napari_viewer, tmp_path,
                                                                     monkeypatch, abdomen_nifti):
    """No reference kept by the caller (as `radreport view`): the docks still live after a collection."""
    import gc

    from napari_radreport.viewer import add_docks

    monkeypatch.setenv("RADREPORT_CONFIG", str(tmp_path / "settings.json"))
    monkeypatch.setenv("RADREPORT_DRAFTS", str(tmp_path / "drafts"))
    viewer = make_napari_viewer(show=True)
    names = list(add_docks(viewer))
    gc.collect()
    viewer.open(str(abdomen_nifti), plugin="napari-radreport")
    gc.collect()
    for name in names:
        assert f"{name} (napari-radreport)" in viewer.window.dock_widgets, name
    settings = viewer.window.dock_widgets["Settings (napari-radreport)"]
    settings.max_new_tokens.value = 64  # still a live widget, still saving
    assert settings.session.settings.max_new_tokens == 64


def test_the_arrangement_is_remembered_and_reset_puts_it_back(make_napari_viewer, tmp_path, monkeypatch):
    from napari_radreport.viewer import add_docks
    from napari_radreport.widgets.layout import reset
    from napari_radreport.widgets.session import session_for

    monkeypatch.setenv("RADREPORT_CONFIG", str(tmp_path / "settings.json"))
    monkeypatch.setenv("RADREPORT_DRAFTS", str(tmp_path / "drafts"))
    viewer = make_napari_viewer(show=True)
    main = viewer.window._qt_window
    chat = _dock_of(add_docks(viewer)["Chat"])
    main.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, chat)  # the user moves Chat beside the report
    assert not session_for(viewer).settings.reading_layout
    QApplication.sendEvent(main, QEvent(QEvent.Type.Close))  # what closing the window sends its filters
    assert session_for(viewer).settings.reading_layout  # saved as the window closed

    again = make_napari_viewer(show=True)
    chat = _dock_of(add_docks(again)["Chat"])
    main = again.window._qt_window
    assert main.dockWidgetArea(chat) == Qt.DockWidgetArea.RightDockWidgetArea
    reset(again)
    assert main.dockWidgetArea(chat) == Qt.DockWidgetArea.LeftDockWidgetArea


def test_the_active_study_follows_the_selected_layer_in_every_dock(workspace, abdomen_nifti, chest_study):
    from napari_radreport.io.identity import identity_line
    from napari_radreport.viewer import add_study

    viewer, session, docks = workspace
    abdomen = load_study(abdomen_nifti)
    (abdomen_layer,) = add_study(viewer, abdomen)
    (chest_layer,) = add_study(viewer, chest_study)
    pickers = [docks[name].picker for name in ("Study", "Report", "Chat", "Findings")]

    def shown(study, layer, hidden) -> None:
        assert session.study is study and docks["Study"].current_layer is layer
        assert all(p.currentText() == identity_line(study, layer.name) for p in pickers)
        assert layer.visible and not hidden.visible  # the study the docks name is the one on screen

    shown(chest_study, chest_layer, abdomen_layer)  # a newly opened study is the active one
    assert pickers[0].currentText().startswith("Lung_Dx-A0001 · ID Lung_Dx-A0001 · 2007-04-04")
    viewer.layers.selection.active = abdomen_layer
    shown(abdomen, abdomen_layer, chest_layer)
    docks["Study"].apply_window("bone")  # on the active study's layer only
    assert abdomen_layer.metadata["radreport_window"] == "bone"
    assert chest_layer.metadata.get("radreport_window") != "bone"
    pickers[2].setCurrentIndex(1)  # the Chat dock's picker: the chest CT, everywhere and on screen
    shown(chest_study, chest_layer, abdomen_layer)
    assert viewer.layers.selection.active is chest_layer


def test_a_report_started_on_one_study_stays_with_it_when_the_user_selects_another(
        workspace, qtbot, tiny_ct_model, abdomen_nifti, chest_study):
    from napari_radreport.viewer import add_study

    viewer, session, docks = workspace
    session.update_settings(model_folder=str(tiny_ct_model), max_new_tokens=40)
    report = docks["Report"]
    abdomen = load_study(abdomen_nifti)
    (abdomen_layer,) = add_study(viewer, abdomen)
    (chest_layer,) = add_study(viewer, chest_study)
    viewer.layers.selection.active = abdomen_layer
    report.load_model()
    qtbot.waitUntil(lambda: session.engine.loaded and not session.busy, timeout=WAIT_MS)
    model = session.engine.runner.model.language_model
    hook = model.register_forward_pre_hook(lambda *a: __import__("time").sleep(0.02))
    try:
        report.generate()
        qtbot.waitUntil(lambda: len(report.drafts[abdomen.key].text) > 10, timeout=WAIT_MS)
        viewer.layers.selection.active = chest_layer  # mid-stream, from the layer list
        assert session.study is chest_study and report.editor.editor.toPlainText() == ""
        qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    finally:
        hook.remove()
    assert report.draft_for(chest_study).text == ""
    written = report.draft_for(abdomen).text
    assert written.startswith("INDICATION:") and "\nFINDINGS:\n" in written
    assert report.draft_for(abdomen).stop_reason in ("eos", "length")
    assert abdomen_layer.name in report.status.text()  # the message names the study it was written for
    viewer.layers.selection.active = abdomen_layer
    assert report.editor.editor.toPlainText() == written


def test_the_main_controls_have_stable_object_names(workspace):
    _viewer, _session, docks = workspace
    root = docks["Report"].window()
    for name in OBJECT_NAMES:
        assert root.findChild(QWidget, name) is not None, name


def test_shortcuts_generate_stop_export_and_send(workspace, qtbot, tiny_ct_model, abdomen_nifti, tmp_path,
                                                 monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    from napari_radreport.viewer import add_study

    viewer, session, docks = workspace
    session.update_settings(model_folder=str(tiny_ct_model), max_new_tokens=200)
    report, chat = docks["Report"], docks["Chat"]
    add_study(viewer, load_study(abdomen_nifti))
    main = viewer.window._qt_window
    main.activateWindow()
    qtbot.waitUntil(main.isActiveWindow, timeout=5000)
    canvas = viewer.window._qt_viewer.canvas.native
    model_hook = None

    qtbot.keyClick(canvas, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)  # from the image
    qtbot.waitUntil(lambda: session.engine.loaded, timeout=WAIT_MS)  # loaded, then generated
    model_hook = session.engine.runner.model.language_model.register_forward_pre_hook(
        lambda *a: __import__("time").sleep(0.02))
    try:
        qtbot.waitUntil(lambda: session.study is not None and len(report.draft_for(session.study).text) > 10,
                        timeout=WAIT_MS)
        assert session.busy and session.job_task == "report"
        report.editor.editor.setFocus()
        qtbot.keyClick(report.editor.editor, Qt.Key.Key_Escape)  # Esc in the dock stops
        qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    finally:
        model_hook.remove()
    assert report.draft_for(session.study).stop_reason == "stopped"

    target = tmp_path / "report.txt"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(target), ""))
    # in the docks (on the canvas, napari's own Ctrl+E rolls the axes)
    qtbot.keyClick(report.editor.editor, Qt.Key.Key_E, Qt.KeyboardModifier.ControlModifier)
    assert target.exists() and "FINDINGS:" in target.read_text(), report.status.text()

    box = chat.question
    box.setFocus()
    qtbot.keyClicks(box, "Which side?")
    qtbot.keyClick(box, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)  # a new line, not sent
    assert box.toPlainText() == "Which side?\n" and not session.busy
    qtbot.keyClick(box, Qt.Key.Key_Backspace)
    qtbot.keyClick(box, Qt.Key.Key_Return)  # sent
    qtbot.waitUntil(lambda: not session.busy and bool(chat.turns(session.study)), timeout=WAIT_MS)
    assert chat.turns(session.study)[0][0] == "Which side?" and box.toPlainText() == ""


def test_a_failed_question_goes_back_into_the_box(workspace, qtbot, tiny_ct_model, abdomen_nifti):
    from napari_radreport.viewer import add_study

    viewer, session, docks = workspace
    session.update_settings(model_folder=str(tiny_ct_model))
    chat = docks["Chat"]
    add_study(viewer, load_study(abdomen_nifti))
    docks["Report"].load_model()
    qtbot.waitUntil(lambda: session.engine.loaded and not session.busy, timeout=WAIT_MS)

    def broken(*_args, **_kwargs):
        raise RuntimeError("the model failed")

    session.engine.runner.model.language_model.register_forward_pre_hook(broken)
    chat.question.setPlainText("Is there ascites?")
    chat.ask()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    assert "the model failed" in chat.status.text()
    assert chat.question.toPlainText() == "Is there ascites?" and chat.turns(session.study) == []


def test_a_measurement_goes_into_the_draft_at_the_cursor(workspace, chest_study):
    from napari_radreport.viewer import add_study

    viewer, session, docks = workspace
    add_study(viewer, chest_study)
    editor = docks["Report"].editor.editor
    editor.setPlainText("Findings:\nNodule measuring .")
    cursor = editor.textCursor()
    cursor.setPosition(len("Findings:\nNodule measuring "))
    editor.setTextCursor(cursor)
    docks["Study"].tools.measurement_text.emit("12.4 mm (series 3, image 18)")  # "Insert into report"
    assert editor.toPlainText() == "Findings:\nNodule measuring 12.4 mm (series 3, image 18)."
    assert docks["Report"].draft_for(chest_study).text == editor.toPlainText()  # an edit like any other
    editor.setReadOnly(True)  # as while a report streams in
    docks["Study"].tools.measurement_text.emit("5 mm")
    assert "5 mm" not in editor.toPlainText() and "still being written" in docks["Report"].status.text()
