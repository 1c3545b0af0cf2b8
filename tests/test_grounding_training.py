"""--stage grounding: the examples a phantom gives, a head that learns, and a trained head the engine uses."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from napari_radreport.engine import default_model

pytestmark = pytest.mark.skipif(default_model() is None,
                                reason="this checkout has no napari_radreport/demo_model")


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory):
    from napari_radreport.data.manifest import read_manifest
    from napari_radreport.data.phantoms.generate import write_phantoms

    manifest = write_phantoms(tmp_path_factory.mktemp("phantoms"), 12, seed=11, val=0.17, test=0.0)
    return manifest, read_manifest(manifest)


@pytest.fixture(scope="module")
def demo():
    import torch

    from napari_radreport.modeling.loading import load_model

    return load_model(default_model(), dtype=torch.float32)


def test_a_phantom_gives_one_example_per_text_that_states_a_drawn_finding(phantom_set, demo):
    from napari_radreport.training.grounding import GroundingExamples, record_examples

    _manifest, records = phantom_set
    spec = demo.family.prompt_spec
    for record in records:
        drawn = {"nodule", "consolidation", "pleural effusion", "pericardial effusion"}
        examples = record_examples(record, dict(spec.tasks), spec.choice_answer, spec.labels, drawn)
        stated = {finding for e in examples for finding, _side in e.regions}
        truth = {f for label, f in (("Lung nodule", "nodule"), ("Consolidation", "consolidation"),
                                    ("Pleural effusion", "pleural effusion"),
                                    ("Pericardial effusion", "pericardial effusion")) if record.labels[label]}
        assert stated == truth  # the phantoms' texts state exactly their findings
    data = GroundingExamples([r for r in records if r.split == "train"], demo, seed=0)
    for index in range(len(data)):
        item = data[index]
        assert item["targets"].shape[0] == len(item["groups"]) and all(item["groups"])
        assert (item["targets"].flatten(1).amax(1) > 0.2).all()  # every sentence's truth is on the grid


def test_a_right_effusion_sentence_learns_the_right_side_only():
    from napari_radreport.data.truth import StudyTruth, TruthRegion
    from napari_radreport.training.grounding import _truth_mask

    right, left = np.zeros((2, 2, 2), bool), np.zeros((2, 2, 2), bool)
    right[0], left[1] = True, True
    truth = StudyTruth(None, [TruthRegion("Pleural effusion (right)", "pleural effusion", right),
                              TruthRegion("Pleural effusion (left)", "pleural effusion", left)])
    assert (_truth_mask(truth, "pleural effusion", "right") == right).all()
    assert (_truth_mask(truth, "pleural effusion", "bilateral") == (right | left)).all()


def _without_head(folder):
    """The demo model with its grounding head taken out: what --stage grounding starts a new head on."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(default_model(), folder)
    config = json.loads((folder / "config.json").read_text())
    config["grounding_head"] = None
    (folder / "config.json").write_text(json.dumps(config))
    weights = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("grounding_head.")},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


def test_the_head_learns_and_the_engine_grounds_with_it(phantom_set, tmp_path, tiny_ct_model):
    import json

    from napari_radreport.data.studies import read_record_study
    from napari_radreport.engine import Engine
    from napari_radreport.modeling.loading import load_model
    from napari_radreport.training.config import resolve
    from napari_radreport.training.run import run_training

    manifest, records = phantom_set
    config = resolve("grounding", None, {"max_steps": 40, "batch_size": 2, "eval_studies": 2, "lr": 3e-3})
    summary = run_training(config, manifest, tmp_path / "out", init=_without_head(tmp_path / "base"),
                           quiet=True, log=lambda _m: None)
    entries = [json.loads(line) for line in (tmp_path / "out" / "history-grounding.jsonl").open()]
    losses = [e["loss"] for e in entries if "loss" in e]
    assert np.mean(losses[-8:]) < np.mean(losses[:8])  # it learns
    loaded = load_model(tmp_path / "out")
    head = loaded.model.config.grounding_head
    assert loaded.model.grounding_head is not None and head["channels"] == 32 and head["kind"] == "unet"
    assert set(head["findings"]) <= {"nodule", "consolidation", "pleural effusion", "pericardial effusion"}
    assert head["findings"] and "cardiomegaly" not in head["findings"]  # drawn in no mask: not learned
    assert summary["saved"] == [str(tmp_path / "out")]

    study = read_record_study(records[0])
    engine = Engine()
    engine.load(tmp_path / "out")
    answer = "A 12 mm nodule in the left lower lobe."
    (sentence,) = engine.ground_answer(study, "Is there a lung nodule?", answer)
    assert engine._grounder.method == "head"
    assert sentence.location is not None or sentence.why_none.startswith("no voxel reaches probability")
    assert sentence.location is None or sentence.location.method == "grounding-head"
    engine.shutdown()
    plain = Engine()
    plain.allow_out_of_scope = True
    plain.load(tiny_ct_model)  # no head
    with pytest.raises(ValueError, match="no grounding head"):
        plain.ground_answer(study, "Is there a lung nodule?", "A nodule.", method="head")
    plain.shutdown()


@pytest.mark.parametrize("kind", ["mix", "unet"])
def test_each_head_kind_gives_one_logit_map_per_sentence_and_only_unet_sees_where_a_voxel_is(kind):
    import torch

    from napari_radreport.modeling.grounding_head import GroundingHead

    torch.manual_seed(0)
    head = GroundingHead({"channels": 16, "kind": kind}, vision_dim=24, grid=(2, 4, 4), stem_dim=3,
                         text_dim=20).eval()
    patches, stem = torch.zeros(2, 32, 24), torch.zeros(2, 3, 8, 16, 16)  # a featureless volume
    with torch.no_grad():
        logits = head(patches, stem, torch.randn(2, 5, 20))
        features = head.volume_features(patches, stem)[0]
    assert logits.shape == (2, 5, 8, 16, 16)
    # with nothing to see, a voxel's feature can only differ from another's by where it is (unet: its
    # coordinates and how far the volume's edges are); mix reads each voxel alone
    spread = (features - features.mean(dim=(1, 2, 3), keepdim=True)).abs().amax().item()
    assert (spread > 1e-3) if kind == "unet" else (spread < 1e-6)


def test_an_unknown_head_kind_is_refused_by_name_and_the_config_knows_every_kind_the_head_builds():
    import json

    from napari_radreport.modeling.configuration import GROUNDING_HEAD_KINDS, ConfigError, RadReportConfig
    from napari_radreport.modeling.grounding_head import KINDS, GroundingHead

    with pytest.raises(ValueError, match="grounding_head kind 'conv'"):
        GroundingHead({"kind": "conv"}, vision_dim=8, grid=(1, 1, 1), stem_dim=1, text_dim=8)
    assert set(KINDS) == set(GROUNDING_HEAD_KINDS)
    config = json.loads((default_model() / "config.json").read_text())
    config["grounding_head"]["kind"] = "conv"
    with pytest.raises(ConfigError, match="grounding_head must be"):
        RadReportConfig(**config)
