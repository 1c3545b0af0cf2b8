"""``--stage labels``: the 3-D encoder and perceiver learn the manifest's labels on real phantom NIfTI files
(tiny random-weight recipe), and a report run starts from what it saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from napari_radreport.data.manifest import ManifestError, ManifestRecord
from napari_radreport.modeling.recipes import load_recipe
from napari_radreport.training import history
from napari_radreport.training.config import resolve
from napari_radreport.training.labels import MISSING, LabelObjective, label_names, label_vector
from napari_radreport.training.run import run_training

RECIPE = "e3d-gpt-vicuna-7b"  # tiny: 16x64x64 volumes, conv3d perceiver


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory) -> Path:
    from napari_radreport.data.phantoms.generate import write_phantoms

    return write_phantoms(tmp_path_factory.mktemp("label-phantoms"), 12, seed=4, val=0.17, test=0.17)


def _record(labels: dict) -> ManifestRecord:
    return ManifestRecord(id="r", modality="ct", images=["x.nii.gz"], split="train", labels=labels)


def test_labels_come_from_the_recipe_else_the_records_and_missing_ones_are_marked():
    records = [_record({"Emphysema": 1, "Lung nodule": 0})]
    # in the demo recipe's prompt.labels order
    assert label_names(load_recipe("radreport-demo-phantom"), records)[0] == "Lung nodule"
    assert label_names(load_recipe(RECIPE), records) == ["Emphysema", "Lung nodule"]
    assert label_vector(records[0], ["Lung nodule", "Cardiomegaly"]).tolist() == [0.0, MISSING]
    with pytest.raises(ManifestError, match="no training record has any of the labels"):
        label_names(load_recipe(RECIPE), [_record({})])


def test_a_label_a_record_does_not_give_adds_no_loss():
    class Fixed(torch.nn.Module):
        def forward(self, pixel_values):
            return torch.tensor([[2.0, -1.0, 0.5]])

    objective = LabelObjective(Fixed())
    full = objective(None, torch.tensor([[1.0, 0.0, 1.0]]))
    partial = objective(None, torch.tensor([[1.0, MISSING, 1.0]]))
    two = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.0]))
    assert partial == pytest.approx(float(two)) and full != pytest.approx(float(partial))


@pytest.mark.slow
def test_label_pretraining_lowers_the_loss_and_a_report_run_starts_from_it(tmp_path, phantom_set):
    from safetensors.torch import load_file

    from napari_radreport.modeling.loading import load_model

    recipe = load_recipe(RECIPE)
    out = tmp_path / "labels"
    settings = {"max_steps": 24, "batch_size": 4, "seed": 1, "lr": 1e-3, "warmup_steps": 0}
    run_training(resolve("labels", recipe, settings), phantom_set, out, recipe=recipe, tiny=True, quiet=True,
                 log=lambda m: None)
    # 8 training studies, 2 steps an epoch: the first two epochs against the last two (2 validation studies
    # are too few to show that it generalises, so the test asks only that it learns)
    curve = [e["loss"] for e in history.read(out / "history-labels.jsonl") if "loss" in e]
    assert len(curve) == 24 and sum(curve[-4:]) / 4 < sum(curve[:4]) / 4 - 0.05, curve
    scores = json.loads((out / "label_scores.json").read_text())  # what the vision side learned (validation)
    assert len(scores) == 6 and all(row["studies"] == 2 for row in scores.values()), scores
    encoder, perceiver = (load_file(str(out / f"{part}.safetensors")) for part in ("encoder", "perceiver"))
    stage1 = tmp_path / "stage1"
    run_training(resolve("stage1", recipe, {"max_steps": 1, "batch_size": 2, "lr": 1e-3,
                                            "tasks": ["diagnosis"]}),
                 phantom_set, stage1, recipe=recipe, tiny=True, encoder=out, quiet=True, log=lambda m: None)
    model = load_model(stage1).model
    tower = model.vision_tower.state_dict()
    # frozen in stage 1: the pretrained weights
    assert all(torch.equal(tower[k], v) for k, v in encoder.items())
    trained = model.perceiver.state_dict()  # trained for a step from the pretrained weights: close, not equal
    assert any(not torch.equal(trained[k], v) for k, v in perceiver.items())
    assert all(torch.allclose(trained[k].float(), v.float(), atol=5e-3) for k, v in perceiver.items())


def test_label_pretraining_needs_a_3d_recipe_and_fitting_weights(tmp_path, phantom_set):
    from safetensors.torch import save_file

    from napari_radreport.training.build import build_from_recipe, load_encoder_weights

    with pytest.raises(ValueError, match="label pretraining is for the 3-D ViT"):
        run_training(resolve("labels", load_recipe("rrg24-clip-vicuna-7b"), {"max_steps": 1}), phantom_set,
                     tmp_path / "x", recipe=load_recipe("rrg24-clip-vicuna-7b"), tiny=True, quiet=True,
                     log=lambda m: None)
    model = build_from_recipe(load_recipe(RECIPE), tmp_path / "m", ["a b c"], tiny=True).model
    weights = tmp_path / "w"
    weights.mkdir()
    save_file(dict(model.vision_tower.state_dict()), str(weights / "encoder.safetensors"))
    save_file({"bogus.weight": torch.zeros(2)}, str(weights / "perceiver.safetensors"))
    with pytest.raises(ValueError, match="perceiver.safetensors: weights do not fit this model's perceiver"):
        load_encoder_weights(model, weights)


def test_label_scores_rank_each_label_over_the_studies_that_give_it(tmp_path):
    from sklearn.metrics import roc_auc_score

    from napari_radreport.training.label_eval import classifier_scores, write_label_scores

    logits = torch.tensor([[2.0, 0.1, 1.0], [-1.0, 0.3, 1.0], [0.5, -2.0, 1.0], [-0.2, 1.5, 1.0],
                           [1.0, 0.0, 1.0]])

    class Fixed(torch.nn.Module):  # logits by study index, read from the first voxel of its image
        def __init__(self):
            super().__init__()
            self.anchor = torch.nn.Parameter(torch.zeros(1))

        def forward(self, pixel_values):
            return logits[pixel_values.flatten(1)[:, 0].long()]

    targets = torch.tensor([[1, 0, 1], [0, MISSING, 1], [1, 1, 1], [0, 1, 1], [0, 0, 1]], dtype=torch.float32)
    dataset = [{"pixel_values": torch.full((1, 1, 2, 2, 2), float(i)), "labels": targets[i]}
               for i in range(5)]
    scores = classifier_scores(Fixed(), dataset, ["a", "b", "c"], batch_size=2)
    assert scores["a"]["AUROC"] == pytest.approx(roc_auc_score([1, 0, 1, 0, 0], logits[:, 0]), abs=1e-4)
    given = [0, 2, 3, 4]  # study 1 does not give "b"
    assert scores["b"]["studies"] == 4 and scores["b"]["AUROC"] == pytest.approx(
        roc_auc_score(targets[given, 1], logits[given, 1]), abs=1e-4)
    assert "AUROC" not in scores["c"] and scores["c"]["positives"] == 5  # one class only: no AUROC
    line = write_label_scores(scores, tmp_path)
    assert json.loads((tmp_path / "label_scores.json").read_text()) == scores
    assert line.startswith("validation AUROC: a ")
