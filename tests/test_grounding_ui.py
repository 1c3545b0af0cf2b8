"""Grounded drafts in a real napari viewer: after a report the finding sentences are located and underlined;
a click on one moves the viewer to its slice and draws its box and heatmap; Show all; the export keeps
them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtGui import QTextCursor

from napari_radreport.engine import default_model

pytestmark = pytest.mark.skipif(default_model() is None,
                                reason="this checkout has no napari_radreport/demo_model")
WAIT_MS = 120_000


@pytest.fixture()
def phantom_study(tmp_path):
    from napari_radreport import load_study
    from napari_radreport.data.phantoms.generate import phantom_record, write_nifti

    record, volume = phantom_record(2168, 0, "test")  # held out from the demo model's training
    write_nifti(tmp_path / "phantom.nii.gz", volume)
    return record, load_study(tmp_path / "phantom.nii.gz")


def _click_sentence(qtbot, editor, start: int) -> None:
    cursor = QTextCursor(editor.document())
    cursor.setPosition(start + 2)
    qtbot.mouseClick(editor.viewport(), Qt.MouseButton.LeftButton, pos=editor.cursorRect(cursor).center())


def test_a_report_is_located_and_a_click_shows_where(docked, qtbot, phantom_study, tmp_path):
    from napari_radreport.viewer import add_study, study_image_layers

    record, study = phantom_study
    viewer, session, report = docked["viewer"], docked["session"], docked["Report"]
    add_study(viewer, study)
    report.generate()
    qtbot.waitUntil(lambda: not session.busy and bool(report.draft_for(study).grounding), timeout=WAIT_MS)
    draft = report.draft_for(study)
    editor = report.editor.editor
    nodules = [(start, s) for start, _end, s in editor.located if s["finding"] == "nodule"]
    assert nodules, draft.text  # the demo model finds this phantom's nodule and the sentence is underlined
    assert "Located" in report.status.text() and report.grounding.show_all.isEnabled()
    assert "found by grounding-head," in report.status.text()  # the demo model's trained head, named

    viewer.dims.set_point(0, viewer.dims.range[0].start)  # away from the nodule
    start, sentence = nodules[0]
    _click_sentence(qtbot, editor, start)
    (layer,) = study_image_layers(viewer, study)
    peak_index = study.image.patient_to_index(sentence["location"]["peak_lps_mm"])
    step = viewer.dims.range[0].step  # napari shows the slice nearest the point
    assert abs(viewer.dims.point[0] - layer.data_to_world(peak_index)[0]) <= step / 2 + 1e-6
    (centre,) = record.positions["Lung nodule"]
    assert np.linalg.norm(np.asarray(sentence["location"]["peak_lps_mm"]) - centre) < 15.0
    box = viewer.layers["nodule (location)"]
    heat = viewer.layers["nodule (heatmap)"]
    assert box.metadata["study"] is study and heat.metadata["study"] is study
    assert viewer.layers.selection.active is layer  # the study stays the active one
    # the sentence's peak, in world coordinates, lies where the heatmap is at its brightest
    at_peak = np.round(heat.world_to_data(layer.data_to_world(peak_index))).astype(int)
    assert heat.data[tuple(at_peak)] >= 0.99 * heat.data.max()

    report.grounding.show_all.click()
    assert len(viewer.layers["all findings (location)"].data) >= 1

    written = report.export_to(str(tmp_path / "report.json"))
    sentences = json.loads(Path(written).read_text())["sentences"]
    assert any(s["finding"] == "nodule" and s["location"] for s in sentences)


def test_an_edited_sentence_loses_its_mark_and_locate_finds_it_again(docked, qtbot, phantom_study):
    from napari_radreport.viewer import add_study

    _record, study = phantom_study
    viewer, session, report = docked["viewer"], docked["session"], docked["Report"]
    add_study(viewer, study)
    report.generate()
    qtbot.waitUntil(lambda: not session.busy and bool(report.draft_for(study).grounding), timeout=WAIT_MS)
    editor = report.editor.editor
    before = len(editor.located)
    start, end, sentence = editor.located[0]
    cursor = QTextCursor(editor.document())
    cursor.setPosition(end - 1)  # before the full stop
    cursor.insertText(", unchanged")
    assert len(editor.located) == before - 1
    assert report.grounding.locate.isEnabled()
    report.grounding.locate.click()
    qtbot.waitUntil(lambda: not session.busy and len(editor.located) == before, timeout=WAIT_MS)


def test_a_findings_row_and_a_chat_answer_show_where(docked, qtbot, phantom_study):
    from qtpy.QtCore import QUrl

    from napari_radreport.viewer import add_study, study_image_layers

    record, study = phantom_study
    viewer, session = docked["viewer"], docked["session"]
    findings, chat = docked["Findings"], docked["Chat"]
    add_study(viewer, study)
    docked["Report"].load_model()
    qtbot.waitUntil(lambda: session.engine.loaded and not session.busy, timeout=WAIT_MS)
    findings.render()
    labels = [findings.table.item(r, 0).text() for r in range(findings.table.rowCount())]
    row = labels.index("Lung nodule")
    assert findings.where_button.isEnabled()
    findings.table.cellDoubleClicked.emit(row, 0)
    qtbot.waitUntil(lambda: "nodule (location)" in viewer.layers and not session.busy, timeout=WAIT_MS)
    assert "Showing where" in findings.status.text()
    (centre,) = record.positions["Lung nodule"]
    (layer,) = study_image_layers(viewer, study)
    nodule_z = layer.data_to_world(study.image.patient_to_index(centre))[0]
    assert abs(viewer.dims.point[0] - nodule_z) <= 2 * viewer.dims.range[0].step  # its slice, or next to it

    viewer.layers.remove("nodule (location)")
    chat.ask("Is there a lung nodule?")
    qtbot.waitUntil(lambda: not session.busy and bool(chat.located), timeout=WAIT_MS)
    (links,) = chat.located.values()
    assert "href='where:0:0'" in chat.transcript.toHtml().replace('"', "'")
    chat.transcript.anchorClicked.emit(QUrl("where:0:0"))
    assert f"{links[0][2]['finding']} (location)" in viewer.layers


def test_heatmaps_are_kept_for_the_last_two_studies_only(qtbot):
    from types import SimpleNamespace

    from napari_radreport.widgets.grounding_controls import GroundingControls

    controls = GroundingControls(None, SimpleNamespace(study=None), lambda _s: None, lambda _t: None,
                                 lambda: None, lambda _d: None)
    for key in "abc":
        controls._keep_locations(key, {("findings", f"{key}."): object()})
    assert list(controls.locations) == ["b", "c"]
    controls._keep_locations("b", {})  # grounded again: replaces its own, becomes the newest
    assert list(controls.locations) == ["c", "b"] and controls.locations["b"] == {}


def test_a_drawn_box_is_asked_about_in_the_models_box_format(docked, qtbot, phantom_study, tmp_path):
    from napari_radreport.grounding.locate import model_box_of_patient_box
    from napari_radreport.modeling.m3d import convert_m3d
    from napari_radreport.modeling.m3d_boxes import parse_boxes
    from napari_radreport.modeling.processor import model_grid
    from napari_radreport.viewer import add_study, study_image_layers

    import m3d_reference as ref

    _record, study = phantom_study
    viewer, session, chat = docked["viewer"], docked["session"], docked["Chat"]
    add_study(viewer, study)
    (image,) = study_image_layers(viewer, study)
    chat.ask_about_box()
    assert "Load a model first" in chat.status.text()
    ref.write_tiny_m3d_checkpoint(tmp_path / "m3d", "phi3")
    session.engine.allow_out_of_scope = True  # a tiny random model: nothing to say about scope
    session.engine.load(convert_m3d(tmp_path / "m3d", tmp_path / "m3d-converted"))
    chat.ask_about_box()
    assert "Draw a rectangle first" in chat.status.text()

    # a rectangle on slice 20, rows 30-60, columns 40-90 of the study, drawn in world coordinates
    corners = np.array([[20, 30, 40], [20, 30, 90], [20, 60, 90], [20, 60, 40]], float)
    viewer.add_shapes([np.array([image.data_to_world(c) for c in corners])], shape_type="rectangle")
    chat.ask_about_box()
    qtbot.waitUntil(lambda: not session.busy and bool(chat.turns(study)), timeout=WAIT_MS)
    question = chat.turns(study)[0][0]
    grid = model_grid(study, session.engine.runner.family.preprocess)
    (asked,) = parse_boxes(question, grid.model_shape)
    # what was asked is the drawn rectangle, reaching half its shorter side (30 rows) above and below
    spacing = np.abs(np.asarray(study.image.spacing, float))
    reach = 0.5 * min(30 * spacing[1], 50 * spacing[2]) / spacing[0]
    low, high = np.array([20 - reach, 30, 40]), np.array([20 + reach, 60, 90])
    lps = np.array([study.image.index_to_patient([(low, high)[b][a] for a, b in enumerate(bits)])
                    for bits in np.ndindex(2, 2, 2)])
    first, last = model_box_of_patient_box(lps.min(axis=0), lps.max(axis=0), grid)
    tolerance = 0.0005 * max(grid.model_shape) + 1e-9
    np.testing.assert_allclose(asked.start, first, atol=tolerance)
    np.testing.assert_allclose(asked.end, last, atol=tolerance)
    assert first[0] < last[0]  # the box has depth: more than the drawn slice
