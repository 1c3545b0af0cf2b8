"""A model's declared scope against the study on screen: the body regions a study covers (header, else image)
and the verdict, on the real scans of ../shared/data, a synthetic phantom and a synthetic head."""

from __future__ import annotations

import numpy as np
import pytest

from napari_radreport import load_study
from napari_radreport.io.body_region import body_regions, regions_from_image, regions_from_text
from napari_radreport.modeling.scope import ModelScope, scope_verdict

CHEST_CT = {"modalities": ["ct"], "body_regions": ["chest"], "training_data": "chest CT"}
DEMO = {**CHEST_CT, "synthetic_only": True, "training_data": "synthetic chest CT phantoms"}


@pytest.mark.parametrize(("texts", "regions"), [
    (("CT CHEST W/O CONTRAST",), ("chest",)), (("Thorax", "5mm"), ("chest",)),
    (("CT ABD PELVIS",), ("abdomen", "pelvis")), (("CAP",), ("chest", "abdomen", "pelvis")),
    (("HEAD",), ("head",)), (("CT Body 3.0",), ()), (("",), ()),
])
def test_header_words_name_regions(texts, regions):
    assert regions_from_text(*texts) == regions


def test_the_real_chest_ct_is_chest_by_its_header_and_by_its_image(chest_series):
    study = load_study(chest_series)
    assert body_regions(study).regions == ("chest",) and body_regions(study).source == "header"
    regions, counts = regions_from_image(study)  # lung apices to upper abdomen (shared/data README)
    assert regions == ("chest", "abdomen") and counts["chest"] >= 15


def test_the_real_abdominal_cts_are_not_chest(abdomen_nifti, j2k_series):
    for path in (abdomen_nifti, j2k_series):
        found = body_regions(load_study(path))
        assert found.source == "image" and "chest" not in found.regions and "abdomen" in found.regions, found


def test_the_image_of_a_study_is_read_for_its_regions_once(abdomen_nifti, monkeypatch):
    from napari_radreport.io import body_region

    calls = []
    real = body_region.regions_from_image
    monkeypatch.setattr(body_region, "regions_from_image", lambda study: calls.append(study) or real(study))
    study = load_study(abdomen_nifti)
    first = body_regions(study)
    assert body_regions(study) is first and len(calls) == 1  # every task's scope check asks again


def test_a_synthetic_phantom_is_chest_by_its_image_and_within_the_demo_models_scope(tmp_path):
    from napari_radreport.data.phantoms.generate import write_phantoms

    write_phantoms(tmp_path, 1, seed=3)
    study = load_study(tmp_path / "volumes" / "phantom-00000.nii.gz")
    assert body_regions(study).regions[0] == "chest"
    verdict = scope_verdict(ModelScope.parse(DEMO, "ct"), study)  # the phantom's header carries its mark
    assert verdict.in_scope and not verdict.reasons and verdict.model_data.endswith("CT phantoms")


def test_a_skull_around_brain_is_a_head(tmp_path):
    import nibabel

    z, y, x = np.mgrid[0:24, 0:128, 0:128]
    r = np.hypot((y - 64) * 1.2, (x - 64) * 1.0)  # mm at 1.2 x 1.0 mm pixels
    volume = np.full(z.shape, -1000, np.int16)
    volume[r < 75] = 1000  # skull
    volume[r < 68] = 35  # brain
    nibabel.save(nibabel.Nifti1Image(volume.T.copy(), np.diag([1.0, 1.2, 5.0, 1.0])), str(tmp_path / "h.nii"))
    assert regions_from_image(load_study(tmp_path / "h.nii"))[0] == ("head",)


def test_verdicts_on_the_real_scans(chest_series, abdomen_nifti, shared_data):
    chest, demo, undeclared = (ModelScope.parse(s, "ct") for s in (CHEST_CT, DEMO, None))
    real_chest, abdomen = load_study(chest_series), load_study(abdomen_nifti)
    xray = load_study(shared_data / "xray" / "nih_00000001_000_cardiomegaly.png")
    assert scope_verdict(chest, real_chest).in_scope and not scope_verdict(chest, real_chest).reasons
    verdict = scope_verdict(chest, abdomen)
    assert not verdict.in_scope and "made for the chest; this study shows the abdomen" in verdict.reasons[0]
    assert verdict.warning().startswith("Out of this model's scope:")
    radiographs = scope_verdict(chest, xray)
    assert not radiographs.in_scope and "this study is radiographs" in radiographs.reasons[0]
    meaningless = scope_verdict(demo, real_chest)
    assert not meaningless.in_scope and "synthetic phantoms" in meaningless.reasons[-1]
    unknown = scope_verdict(undeclared, abdomen)
    assert unknown.in_scope and unknown.reasons == ["the model declares no scope beyond its modality"]


def test_a_bad_scope_section_names_the_field():
    with pytest.raises(ValueError, match="scope.body_regions has 'thorax'"):
        ModelScope.parse({"body_regions": ["thorax"]}, "ct")
    with pytest.raises(ValueError, match="scope has unknown field"):
        ModelScope.parse({"regions": ["chest"]}, "ct")


def test_the_engine_refuses_a_real_scan_for_the_demo_model_unless_allowed(chest_series, tmp_path):
    pytest.importorskip("torch")
    from napari_radreport.data.phantoms.generate import write_phantoms
    from napari_radreport.engine import Engine, GenerationSettings, OutOfScope, ScopeChecked

    write_phantoms(tmp_path, 1, seed=4)
    phantom, real = load_study(tmp_path / "volumes" / "phantom-00000.nii.gz"), load_study(chest_series)
    engine, events = Engine(), []
    settings = GenerationSettings(max_new_tokens=4)
    try:
        engine.load()  # the demo model: synthetic chest CT phantoms only
        with pytest.raises(OutOfScope, match="trained only on synthetic phantoms.*--allow-out-of-scope"):
            engine.report(real, settings=settings, on_event=events.append)
        [checked] = [e for e in events if isinstance(e, ScopeChecked)]
        assert not checked.verdict.in_scope
        assert engine.report(phantom, settings=settings).scope.in_scope
        engine.allow_out_of_scope = True
        result = engine.report(real, settings=settings)
        assert result.text and not result.scope.in_scope and "meaningless" in result.scope.warning()
        assert not engine.ask(real, "Is there a nodule?", settings=settings).scope.in_scope
    finally:
        engine.shutdown()


PRELOAD_PROBE = """
import sys
from napari_radreport.cli.parser import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
print("torch imported:", "torch" in sys.modules, "exit:", code)
"""


@pytest.mark.parametrize("which", ["ct", "xray"])
def test_a_study_the_model_cannot_read_is_refused_from_its_config_before_torch_loads(
        which, tiny_ct_model, tiny_xray_model, cr_monochrome1, abdomen_nifti):
    """A CT model given a radiograph (and the reverse) is refused from config.json: torch never loads."""
    import subprocess
    import sys

    model, study = (tiny_ct_model, cr_monochrome1) if which == "ct" else (tiny_xray_model, abdomen_nifti)
    done = subprocess.run([sys.executable, "-c", PRELOAD_PROBE, "report", "--model", str(model), str(study)],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().endswith("torch imported: False exit: 1"), done.stdout + done.stderr
    line, = done.stderr.strip().splitlines()
    reads = ("CT volumes; this study is radiographs" if which == "ct"
             else "chest radiographs; this study is a ct")
    assert f"{model.name}: the model reads {reads}; the model was not loaded" in line


def test_declared_scope_reads_the_config_alone(tiny_ct_model, tiny_xray_model, tmp_path):
    from napari_radreport.modeling.checkpoints import CheckpointError
    from napari_radreport.modeling.families import declared_scope

    assert declared_scope(tiny_ct_model).modalities == ("ct",)
    assert declared_scope(tiny_xray_model).modalities == ("xray",)
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(CheckpointError, match="model_type 'bert' belongs to no known family"):
        declared_scope(tmp_path)
