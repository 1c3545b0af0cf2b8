"""The models a radiologist can choose from: ``radreport models`` and the Settings dock's list, from the
model folders' files alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from napari_radreport.cli import main
from napari_radreport.modeling.catalog import PRECISIONS, find_models

WAIT_MS = 60_000


@pytest.fixture()
def models(tmp_path, tiny_ct_model, tiny_xray_model) -> Path:
    """A models folder: two tiny models, one folder whose config.json is broken, one that is not a model."""
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copytree(tiny_ct_model, folder / "ct-model")
    shutil.copytree(tiny_xray_model, folder / "xray-model")
    (folder / "broken").mkdir()
    (folder / "broken" / "config.json").write_text("{")
    (folder / "notes").mkdir()
    (folder / "notes" / "readme.txt").write_text("not a model")
    return folder


def _weights(folder: Path) -> int:
    """The number of weights as safetensors itself reads them."""
    from safetensors.numpy import load_file

    return sum(array.size for path in folder.glob("*.safetensors") for array in load_file(str(path)).values())


def test_model_folders_are_described_from_their_files(models):
    entries = {e.name: e for e in find_models(models)}
    assert sorted(entries) == ["broken", "ct-model", "xray-model"]  # "notes" is no model
    ct, xray, broken = entries["ct-model"], entries["xray-model"], entries["broken"]
    assert (ct.family, ct.scope.modalities, xray.scope.modalities) == ("radreport", ("ct",), ("xray",))
    assert ct.parameters == _weights(models / "ct-model") > 0
    assert ct.weight_bytes("bfloat16") == 2 * ct.parameters and ct.weight_bytes("int4") == ct.parameters // 2
    assert broken.problem.startswith(f"{models / 'broken' / 'config.json'}: not valid JSON")
    assert find_models(models / "ct-model")[0].name == "ct-model"  # one model folder given itself


def test_radreport_models_prints_a_line_per_folder_and_json(models, capsys):
    assert main(["models", str(models)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["broken", "ct-model", "xray-model"]
    assert "radreport," in lines[1] and "CT (scope not declared by the model)" in lines[1]
    assert main(["models", str(models), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [m["name"] for m in listed] == ["broken", "ct-model", "xray-model"]
    assert set(listed[1]["weight_bytes"]) == set(PRECISIONS) and listed[2]["modalities"] == ["xray"]
    assert main(["models", str(models / "missing")]) == 1


def test_the_settings_dock_lists_the_models_and_choosing_one_loads_it(make_napari_viewer, qtbot, models,
                                                                      tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from napari_radreport.widgets.session import session_for
    from napari_radreport.widgets.settings_dock import SettingsDock

    monkeypatch.setenv("RADREPORT_CONFIG", str(tmp_path / "settings.json"))
    viewer = make_napari_viewer()
    dock = SettingsDock(viewer)
    session = session_for(viewer)
    dock.models_folder.value = str(models)  # as the folder dialog sets it
    qtbot.waitUntil(lambda: len(dock.model_choice.choices) == 3, timeout=WAIT_MS)
    labels = [dock.model_choice.native.itemText(i) for i in range(dock.model_choice.native.count())]
    assert labels[0].startswith("Demo model") and labels[1].startswith("ct-model (CT, ")
    assert labels[1].endswith(" bf16)") and labels[2].startswith("xray-model (radiographs, ")
    tooltip = dock.model_choice.tooltip
    assert "broken" in tooltip and "ct-model: radreport, " in tooltip and "int4" in tooltip
    assert "1 could not be read" in dock.status.value
    dock.model_choice.value = str(models / "ct-model")
    qtbot.waitUntil(lambda: session.engine.loaded and not session.busy, timeout=WAIT_MS)
    assert session.engine.info.name == "ct-model"
    assert session.settings.model_folder == str(models / "ct-model")
    assert dock.model_folder.value == models / "ct-model"
    session.shutdown()
