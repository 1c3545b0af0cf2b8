"""The docks with a model whose scope excludes the study on screen: refused with the reason, the earlier draft
kept, the reason shown in every dock; allowed in Settings, the draft and its export say it is out of scope."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from napari_radreport import load_study

WAIT_MS = 60_000


@pytest.fixture()
def demo_docks(make_napari_viewer, qtbot, chest_series, tmp_path, monkeypatch):
    """A viewer with the docks, the real chest CT open and the demo model (synthetic phantoms only) loaded."""
    from napari_radreport.viewer import add_docks, add_study
    from napari_radreport.widgets.session import session_for

    monkeypatch.setenv("RADREPORT_DRAFTS", str(tmp_path / "drafts"))
    monkeypatch.setenv("RADREPORT_CONFIG", str(tmp_path / "settings.json"))
    viewer = make_napari_viewer(show=True)
    session = session_for(viewer)
    session.update_settings(model_folder="", max_new_tokens=12)
    found = add_docks(viewer)
    add_study(viewer, load_study(chest_series))
    found["Report"].load_model()
    qtbot.waitUntil(lambda: session.engine.loaded and not session.busy, timeout=WAIT_MS)
    found["session"] = session
    yield found
    session.stop()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)


def test_a_real_scan_is_refused_for_the_demo_model_and_every_dock_says_why(demo_docks, qtbot, tmp_path):
    report, session = demo_docks["Report"], demo_docks["session"]
    draft = report.draft_for(session.study)
    draft.ai_draft = draft.text = "An earlier draft."
    report.generate()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    assert "outside this model's scope (below)" in report.status.text()
    assert "Allow studies outside" in report.status.text()
    assert report.draft_for(session.study).text == "An earlier draft."  # a refusal wipes nothing
    for dock in ("Report", "Chat", "Findings"):
        notes = [w for w in demo_docks[dock].findChildren(type(report.scope_note)) if w.isVisible()]
        assert notes and "Out of this model's scope" in notes[0].text(), dock

    session.update_settings(allow_out_of_scope=True)  # the engineer's choice, in the Settings dock
    report.generate()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    assert "FINDINGS:\n" in report.draft_for(session.study).text and report.scope_note.isVisible()
    written = Path(report.export_to(str(tmp_path / "r.txt"))).read_text()
    assert "OUT OF THE MODEL'S SCOPE: the model was trained only on synthetic phantoms" in written


def test_generate_is_off_with_the_reason_for_a_study_the_model_cannot_read(make_napari_viewer, qtbot,
                                                                            cr_monochrome1, chest_series,
                                                                            tmp_path, monkeypatch):
    """The demo model (CT) and a radiograph on screen: Generate is disabled with a tooltip saying why, from
    the model's config alone; nothing loads. The chest CT on screen again: Generate is back."""
    from napari_radreport.viewer import add_docks, add_study
    from napari_radreport.widgets.report_dock import GENERATE_TIP
    from napari_radreport.widgets.session import session_for

    monkeypatch.setenv("RADREPORT_DRAFTS", str(tmp_path / "drafts"))
    monkeypatch.setenv("RADREPORT_CONFIG", str(tmp_path / "settings.json"))
    viewer = make_napari_viewer(show=True)
    session = session_for(viewer)
    session.update_settings(model_folder="")
    report = add_docks(viewer)["Report"]
    add_study(viewer, load_study(cr_monochrome1))
    button = report.generate_button
    qtbot.waitUntil(lambda: "cannot read" in button.toolTip(), timeout=WAIT_MS)
    assert not button.isEnabled()
    assert button.toolTip() == ("This model cannot read this study: demo_model: the model reads CT volumes; "
                                "this study is radiographs")
    report.generate()  # e.g. from a shortcut: refused at once, the model not loaded
    assert "Not generated: this model cannot read this study" in report.status.text()
    assert not session.engine.loaded and not session.busy
    chest = load_study(chest_series)
    add_study(viewer, chest)
    session.set_study(chest)  # as the Study picker does
    qtbot.waitUntil(button.isEnabled, timeout=WAIT_MS)
    assert button.toolTip().startswith(GENERATE_TIP)  # what it does and its key; no refusal
