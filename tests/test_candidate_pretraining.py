"""``--stage candidates``: the conv stem learns small findings from patches at the manifest's positions (real
phantom NIfTI files, the demo recipe's stem), and a labels run starts from it with the stem kept as it is."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_radreport.data.manifest import ManifestError, ManifestRecord
from napari_radreport.modeling.recipes import load_recipe
from napari_radreport.training.candidates import (
    CandidateObjective,
    StudyCandidates,
    candidate_names,
    collate_candidates,
)
from napari_radreport.training.config import resolve
from napari_radreport.training.run import run_training

RECIPE = "radreport-demo-phantom"  # the recipe with a conv stem
NODULE = "Lung nodule"


@pytest.fixture(scope="module")
def phantom_set(tmp_path_factory) -> Path:
    from napari_radreport.data.phantoms.generate import write_phantoms

    return write_phantoms(tmp_path_factory.mktemp("candidate-phantoms"), 16, seed=2, val=0.25, test=0.0)


def _record(label: int, positions=None) -> ManifestRecord:
    return ManifestRecord(id="r", modality="ct", images=["x.nii.gz"], split="train", labels={NODULE: label},
                          positions={NODULE: positions} if positions else {})


def _dataset(seed: int = 0) -> StudyCandidates:
    """Two volumes with a bright voxel at their finding's pixel index, two without."""
    records = [_record(1, [[0.0, 0.0, 0.0]]), _record(0), _record(1, [[1.0, 0.0, 0.0]]), _record(0)]
    centres = {0: np.array([6.0, 20.0, 30.0]), 2: np.array([10.0, 40.0, 12.0])}
    images = []
    for i in range(4):
        volume = torch.zeros(1, 1, 16, 48, 48)
        if i in centres:
            volume[(0, 0, *centres[i].astype(int))] = 1.0
        images.append(volume)
    return StudyCandidates(records, images, [NODULE], lambda i, position: centres[i], patch=[4, 8, 8],
                           jitter=[1, 2, 2], seed=seed)


def test_patches_hold_the_finding_where_they_say_and_negatives_sit_at_a_positive_position():
    data = _dataset()
    assert len(data) == 4
    for epoch in range(3):
        data.epoch = epoch
        for i in range(4):
            item = data[i]
            assert item["pixel_values"].shape == (1, 1, 4, 8, 8)
            where = tuple(item["where"][0].tolist())
            if item["target"].item() == 1:
                assert item["pixel_values"][(0, 0, *where)] == 1.0 and item["pixel_values"].sum() == 1.0
            else:  # a clean volume, cut around where a positive study had its finding (moved by the jitter)
                assert item["pixel_values"].sum() == 0
                assert all(abs(w - half) <= j for w, half, j in zip(where, (2, 4, 4), (1, 2, 2))), where
    again = _dataset()
    again.epoch = 2
    assert all(torch.equal(again[i]["pixel_values"], data[i]["pixel_values"]) for i in range(4))  # resumable
    moved = {tuple(data[0]["where"][0].tolist())}
    for epoch in range(3, 12):
        data.epoch = epoch
        moved.add(tuple(data[0]["where"][0].tolist()))
    assert len(moved) > 1  # the jitter moves the finding around in the patch


def test_a_positive_counts_only_the_response_at_its_finding_a_negative_counts_any():
    class Fixed(torch.nn.Module):  # response map: 3.0 at (0, 0, 0), -3 elsewhere
        def response(self, pixel_values):
            maps = torch.full((pixel_values.shape[0], 1, 4, 8, 8), -3.0)
            maps[:, :, 0, 0, 0] = 3.0
            return maps

    objective = CandidateObjective(Fixed())
    batch = collate_candidates([
        {"pixel_values": torch.zeros(1, 1, 4, 8, 8), "label_index": torch.tensor([0]),
         "target": torch.tensor([t]), "where": torch.tensor([w])}
        for t, w in ((1.0, [2, 4, 4]), (0.0, [2, 4, 4]))])
    loss = objective(**batch)
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    # the positive's logit is -3 (its finding's neighbourhood), the negative's is 3 (the patch's maximum)
    expected = bce(torch.tensor([-3.0, 3.0]), torch.tensor([1.0, 0.0]))
    assert loss == pytest.approx(float(expected))
    batch["where"] = torch.tensor([[0, 1, 1], [2, 4, 4]])  # the bright voxel is now within one voxel
    assert objective(**batch) == pytest.approx(float(bce(torch.tensor([3.0, 3.0]), torch.tensor([1.0, 0.0]))))


def test_candidates_need_positions_for_positive_studies_and_some_negative_ones():
    assert candidate_names([], [_record(1, [[0.0, 0.0, 0.0]]), _record(0)]) == [NODULE]
    with pytest.raises(ManifestError, match="no training record gives 'positions'"):
        candidate_names([], [_record(1), _record(0)])
    with pytest.raises(ManifestError, match="found 1 and 0"):
        candidate_names([NODULE], [_record(1, [[0.0, 0.0, 0.0]])])


def test_candidate_pretraining_learns_a_stem_that_a_labels_run_keeps(tmp_path, phantom_set):
    from safetensors.torch import load_file

    recipe = load_recipe(RECIPE)
    out = tmp_path / "candidates"
    # 12 training studies (4 with a nodule), all of them in each step
    settings = {"max_steps": 40, "batch_size": 12, "lr": 1e-2, "seed": 0, "candidate_labels": [NODULE]}
    run_training(resolve("candidates", recipe, settings), phantom_set, out, recipe=recipe, quiet=True,
                 log=lambda m: None)
    from napari_radreport.training import history

    curve = [e["loss"] for e in history.read(out / "history-candidates.jsonl") if "loss" in e]
    assert len(curve) == 40 and np.mean(curve[-8:]) < np.mean(curve[:8]) - 0.04, curve
    scores = json.loads((out / "label_scores.json").read_text())
    assert list(scores) == [NODULE] and scores[NODULE]["studies"] == 4, scores
    stem = load_file(str(out / "stem.safetensors"))
    assert sorted(stem) == ["detector.bias", "detector.weight", "layers.0.bias", "layers.0.weight",
                            "layers.2.bias", "layers.2.weight"]
    for freeze in (True, False):  # the recipe freezes the stem in the labels stage
        labels = tmp_path / f"labels-{freeze}"
        settings = {"max_steps": 2, "batch_size": 4, "lr": 1e-2, "freeze_conv_stem": freeze}
        run_training(resolve("labels", recipe, settings), phantom_set, labels, recipe=recipe, encoder=out,
                     quiet=True, log=lambda m: None)
        encoder = load_file(str(labels / "encoder.safetensors"))
        kept = [torch.equal(encoder[f"patch_embedding.stem.{k}"], v) for k, v in stem.items()]
        assert all(kept) if freeze else not any(kept)


def test_stem_weights_need_a_model_with_a_fitting_stem(tmp_path):
    from safetensors.torch import save_file

    from napari_radreport.training.build import build_from_recipe, load_encoder_weights

    weights = tmp_path / "w"
    weights.mkdir()
    save_file({"layers.0.weight": torch.zeros(4, 1, 3, 3, 3), "layers.0.bias": torch.zeros(4)},
              str(weights / "stem.safetensors"))
    with_stem = build_from_recipe(load_recipe(RECIPE), tmp_path / "m", ["a b c"], tiny=False).model
    with pytest.raises(ValueError, match="weights do not fit this model's conv stem"):
        load_encoder_weights(with_stem, weights)
    without = build_from_recipe(load_recipe("e3d-gpt-vicuna-7b"), tmp_path / "e", ["a b c"], tiny=True).model
    with pytest.raises(ValueError, match="has no conv stem"):
        load_encoder_weights(without, weights)
    with pytest.raises(FileNotFoundError, match="no stem.safetensors"):
        load_encoder_weights(without, tmp_path)
