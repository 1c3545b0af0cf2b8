"""The demo model shipped in the package: it loads by default and it reads the image of phantoms it never saw.

The phantoms here use a seed the demo model was not trained on (its training set is seed 0), so these are
held-out studies. The full figures come from ``scripts/train_demo_model.sh`` (``radreport eval --preset
phantom``); this test checks, on a few studies, that the findings that fill most of the volume are read from
the image: a decoder that ignored the image would score the always-"no" level (about 65 %).
"""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from napari_radreport.engine import Engine, default_model

pytestmark = pytest.mark.skipif(default_model() is None,
                                reason="this checkout has no napari_radreport/demo_model")

LARGE_FINDINGS = ("Pleural effusion", "Cardiomegaly", "Emphysema")


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    from napari_radreport.data.manifest import read_manifest
    from napari_radreport.data.phantoms.generate import write_phantoms
    from napari_radreport.data.studies import read_record_study

    manifest = write_phantoms(tmp_path_factory.mktemp("phantoms"), 16, seed=20261122, val=0.0, test=0.0)
    return [(record, read_record_study(record)) for record in read_manifest(manifest)]


@pytest.fixture(scope="module")
def engine():
    engine = Engine()
    info = engine.load()  # no folder: the demo model
    assert info.name == "demo_model" and info.modality == "ct"
    return engine


def test_demo_model_is_the_default_and_small():
    folder = default_model()
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 40e6, f"the demo model is {size / 1e6:.0f} MB"
    assert (folder / "README.md").is_file(), "the demo model has no model card"


def test_demo_model_reads_large_findings_from_the_image(engine, held_out):
    right = total = 0
    for record, study in held_out:
        probabilities = engine.diagnose(study, list(LARGE_FINDINGS))
        for label in LARGE_FINDINGS:
            right += (probabilities[label] >= 0.5) == bool(record.labels[label])
            total += 1
    assert right / total >= 0.9, f"{right}/{total} right"


def test_demo_model_report_speaks_of_every_finding(engine, held_out):
    from napari_radreport.data.phantoms import reports

    record, study = held_out[0]
    result = engine.report(study, sections=("findings",))
    text = dict(result.sections)["Findings"]
    assert set(reports.read_findings(text).extras["mentioned"]) == set(reports.FINDING_NAMES), text
