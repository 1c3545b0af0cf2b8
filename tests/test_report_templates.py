"""Report templates (napari_radreport/templates/*.txt and the user's folder), the Report dock's Template and
Indication row, and the indication reaching the prompt of a model whose prompt spec reads one."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from napari_radreport import load_study
from napari_radreport import report_templates as rt

WAIT_MS = 120_000
INDICATION = "left lung nodule"  # words the tiny models' tokenizer knows


@pytest.fixture()
def user_templates(tmp_path, monkeypatch):
    folder = tmp_path / "templates"
    folder.mkdir()
    monkeypatch.setenv("RADREPORT_TEMPLATES", str(folder))
    return folder


def test_the_shipped_templates_load_and_a_user_file_replaces_its_namesake(user_templates):
    assert {"chest_ct", "abdomen_pelvis_ct", "chest_radiograph"} <= set(rt.list_templates())
    for name in ("chest_ct", "abdomen_pelvis_ct", "chest_radiograph"):
        headings = [h for h, _ in rt.load(name).sections]
        assert headings == ["INDICATION", "TECHNIQUE", "COMPARISON", "FINDINGS", "IMPRESSION"]
    (user_templates / "chest_ct.txt").write_text(
        "# My chest CT\n# exam: ct chest\nCLINICAL HISTORY:\n{indication}\n\nFINDINGS:\n\nIMPRESSION:\n")
    (user_templates / "neck_ct.txt").write_text("# Neck\nFINDINGS:\n{findings}\nIMPRESSION:\n")
    mine = rt.load("chest_ct")
    assert mine.title == "My chest CT" and [h for h, _ in mine.sections][0] == "CLINICAL HISTORY"
    assert "neck_ct" in rt.list_templates()


@pytest.mark.parametrize(("text", "fault"), [
    ("INDICATION:\n{indication}\nIMPRESSION:\n", "no FINDINGS section"),
    ("FINDINGS:\nIMPRESSION:\nCOMPARISON:\n", "must be the last two sections"),
    ("TECHNIQUE:\n{dose}\nFINDINGS:\nIMPRESSION:\n", "unknown field {dose}"),
    ("FINDINGS:\nLungs: clear.\nIMPRESSION:\n", "is written by the model"),
    ("# exam: ct knee\nFINDINGS:\nIMPRESSION:\n", "unknown body region 'knee'"),
])
def test_a_malformed_template_is_one_clear_line(user_templates, text, fault):
    (user_templates / "bad.txt").write_text(text)
    with pytest.raises(rt.TemplateError) as caught:
        rt.load("bad")
    message = str(caught.value)
    assert fault in message and "bad.txt" in message and "\n" not in message


def test_filled_from_the_study_headers_and_the_reader(chest_series, cr_monochrome1, user_templates):
    chest = load_study(chest_series)
    assert rt.suggest(chest) == "chest_ct"
    text = rt.fill(rt.load("chest_ct"), chest, "  cough,\n fever ", findings="Clear lungs.",
                   impression="Normal.")
    assert text == (
        "INDICATION:\ncough, fever\n\n"
        'TECHNIQUE:\nCT of the chest (study "Chest"), 64 axial images at 5 mm spacing (series "5mm"); '
        "no contrast information in the header.\n\n"
        "COMPARISON:\nNone.\n\nFINDINGS:\nClear lungs.\n\nIMPRESSION:\nNormal.")
    assert rt.fill(rt.load("chest_ct"), chest, comparison="CT of 2024-01-02").count("CT of 2024-01-02") == 1
    radiograph = load_study(cr_monochrome1)
    assert rt.suggest(radiograph) == "chest_radiograph"
    assert "TECHNIQUE:\nRadiograph of the chest" in rt.fill(rt.load("chest_radiograph"), radiograph)
    assert "contrast" not in rt.technique(radiograph)


def test_the_template_suits_the_study(abdomen_nifti, chest_series):
    assert rt.suggest(load_study(abdomen_nifti)) == "abdomen_pelvis_ct"
    assert rt.suggest(load_study(chest_series), ["chest_radiograph"]) is None  # no CT template offered
    template = rt.load("chest_ct")
    assert rt.map_heading(template, "Findings (chest):\n") == "FINDINGS (chest):\n"
    assert rt.map_heading(template, "\n\nImpression:\n") == "\n\nIMPRESSION:\n"
    assert rt.map_heading(None, "Findings:\n") == "Findings:\n"


def _prompts_of(engine, study, indication):
    """The token ids of the findings prompt the engine runs for ``study`` (the diagnosis check follows)."""
    from napari_radreport.engine.decoding import GenerationSettings

    seen, runner = [], engine.runner
    original = runner.prompt

    def spy(study, question, history=()):
        ids, extra = original(study, question, history)
        seen.append(ids)
        return ids, extra

    runner.prompt = spy
    try:
        engine.report(study, sections=("findings",), indication=indication,
                      settings=GenerationSettings(max_new_tokens=2))
    finally:
        runner.prompt = original
    return seen[0]


def _contains(ids, part):
    return any(ids[i:i + len(part)] == part for i in range(len(ids) - len(part) + 1))


def test_the_indication_reaches_the_prompt_only_where_the_recipe_reads_it(tiny_ct_model, abdomen_nifti,
                                                                          tmp_path):
    from napari_radreport.engine import Engine

    from tiny_models import with_prompt

    study = load_study(abdomen_nifti)
    reading = with_prompt(tiny_ct_model, tmp_path / "reads",
                          indication_template="{question} left right {indication}")
    for folder, reads in ((reading, True), (tiny_ct_model, False)):
        engine = Engine()
        try:
            info = engine.load(str(folder), device="cpu")
            assert info.reads_indication is reads
            part = engine.runner.family.tokenizer(INDICATION, add_special_tokens=False)["input_ids"]
            assert 3 not in part  # every word is known: no <unk>
            with_it, without = _prompts_of(engine, study, INDICATION), _prompts_of(engine, study, "")
            assert _contains(with_it, part) is reads
            assert not _contains(without, part)
        finally:
            engine.shutdown()


def test_a_bad_indication_template_is_refused_at_load():
    from napari_radreport.modeling.prompt_spec import PromptSpec

    assert PromptSpec.parse({}, "ct").indication_template is None
    with pytest.raises(ValueError, match="indication_template"):
        PromptSpec.parse({"indication_template": "Indication: {indication}"}, "ct")


def test_the_report_dock_writes_the_filled_template_then_the_model(make_napari_viewer, qtbot, tiny_ct_model,
                                                                   abdomen_nifti, tmp_path, monkeypatch):
    from napari_radreport.viewer import add_docks, add_study
    from napari_radreport.widgets.report_dock import INDICATION_UNREAD, NO_TEMPLATE
    from napari_radreport.widgets.session import session_for

    monkeypatch.setenv("RADREPORT_DRAFTS", str(tmp_path / "drafts"))
    monkeypatch.setenv("RADREPORT_CONFIG", str(tmp_path / "settings.json"))
    monkeypatch.setenv("RADREPORT_TEMPLATES", str(tmp_path / "templates"))
    viewer = make_napari_viewer(show=True)
    session = session_for(viewer)
    session.update_settings(model_folder=str(tiny_ct_model), max_new_tokens=8)
    report = add_docks(viewer)["Report"]
    add_study(viewer, load_study(abdomen_nifti))
    assert report.template.currentData() == "abdomen_pelvis_ct"
    report.indication.setText("pain after a fall")
    report.generate()  # loads the model, then generates
    qtbot.waitUntil(lambda: session.engine.loaded and not session.busy and
                    report.draft_for(session.study).stop_reason != "generating", timeout=WAIT_MS)
    text = report.draft_for(session.study).text
    assert text.startswith("INDICATION:\npain after a fall\n\nTECHNIQUE:\nCT, 112 axial images at 3 mm")
    assert "\n\nCOMPARISON:\nNone.\n\nFINDINGS:\n" in text and "\n\nIMPRESSION:\n" in text
    assert "Findings:" not in text and "Impression:" not in text
    assert INDICATION_UNREAD in report.status.text()  # the tiny model does not read it: said once
    assert report.indication.toolTip() == INDICATION_UNREAD
    report.generate()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    assert INDICATION_UNREAD not in report.status.text()
    report.template.setCurrentText(NO_TEMPLATE)  # the model's sections alone, as before templates
    report.generate()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    assert report.draft_for(session.study).text.startswith("Findings:\n")
    session.stop()
