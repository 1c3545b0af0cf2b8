"""Grounding scores: hits, Dice and box IoU of sentences against the masks of real phantoms (written here)
and of a tiny fake ReXGroundingCT release, the per-method / per-finding figures with their intervals, and the
adapter."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from napari_radreport.data.manifest import read_manifest
from napari_radreport.data.studies import read_record_study
from napari_radreport.data.truth import truth_from_record
from napari_radreport.evaluation import grounding
from napari_radreport.evaluation.grounding import (
    ABSENT,
    NO_REGION,
    NOT_A_FINDING,
    SCORED,
    GroundingCase,
    aggregate,
    box_iou,
    dice,
    score_cases,
    score_grounding,
    score_sentence,
)


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory):
    """Seed 5's first 12 phantoms by id: 02 nodule (8 mm) + consolidation + pericardial effusion, 03 bilateral
    effusion, 04 nodule (15 mm), 10 nodule (26 mm) + consolidation + right effusion, 00 cardiomegaly and
    emphysema only, 01 normal."""
    from napari_radreport.data.phantoms.generate import write_phantoms

    manifest = write_phantoms(tmp_path_factory.mktemp("grounding-phantoms"), 12, seed=5, val=0.0, test=0.0)
    return {record.id.removeprefix("phantom-000"): record for record in read_manifest(manifest)}


def _truth(record):
    return truth_from_record(record, read_record_study(record))


def _region(truth, name):
    return next(r for r in truth.regions if r.name == name)


def _sentence(finding, peak=None, box=None, text="", method="attribution"):
    location = None if peak is None else {"method": method, "peak_lps_mm": [float(v) for v in peak],
                                          "box_lps_mm": [[float(v) for v in c] for c in box]}
    return {"section": "findings", "text": text or f"There is {finding}.", "finding": finding,
            "location": location}


def _oracle(region, grid, method="attribution"):
    """A sentence pointing exactly at a truth region: a peak inside it, its box."""
    return _sentence(region.finding, _inside(region, grid), region.box, method=method)


def _inside(region, grid):
    """The region's centre, else the LPS position of one of its voxels."""
    if region.centres:
        return region.centres[0]
    voxels = np.argwhere(region.mask)
    return grid.to_lps(voxels[len(voxels) // 2])


def test_truth_of_a_phantom_record_has_its_drawn_findings_with_their_centres(phantoms):
    truth = _truth(phantoms["10"])
    assert {r.name: r.finding for r in truth.regions} == {
        "Lung nodule": "nodule", "Consolidation": "consolidation",
        "Pleural effusion (right)": "pleural effusion"}
    nodule = _region(truth, "Lung nodule")
    assert np.allclose(nodule.centres[0], phantoms["10"].positions["Lung nodule"][0])
    assert nodule.mask[truth.grid.voxel_of(nodule.centres[0])]  # the centre lies inside its own mask
    assert nodule.mask.shape == read_record_study(phantoms["10"]).array.shape
    assert np.allclose(nodule.box, phantoms["10"].masks["boxes"]["Lung nodule"])  # read back = as written
    assert truth.present == {"nodule", "consolidation", "pleural effusion"}
    only_global = _truth(phantoms["00"])
    assert only_global.regions == [] and only_global.present == {"cardiomegaly", "emphysema"}


def test_a_peak_inside_the_mask_hits_and_dice_and_iou_measure_the_overlap(phantoms):
    truth = _truth(phantoms["10"])
    nodule, consolidation = _region(truth, "Lung nodule"), _region(truth, "Consolidation")
    exact = score_sentence(_oracle(nodule, truth.grid), truth, nodule.mask)
    assert (exact.status, exact.located, exact.hit, exact.dice, exact.iou) == (SCORED, True, True, 1.0, 1.0)
    wrong = score_sentence(_sentence("nodule", consolidation.centres[0], consolidation.box), truth,
                           consolidation.mask)
    assert not wrong.hit and wrong.dice == 0.0 and wrong.iou < 0.05
    probabilities = np.where(nodule.mask, 0.7, np.where(consolidation.mask, 0.3, 0.0)).astype(np.float32)
    assert score_sentence(_oracle(nodule, truth.grid), truth, probabilities).dice == 1.0  # threshold 0.5
    looser = score_sentence(_oracle(nodule, truth.grid), truth, probabilities, threshold=0.2).dice
    assert looser == pytest.approx(2 * nodule.mask.sum() / (2 * nodule.mask.sum() + consolidation.mask.sum()))
    in_dict = dict(_oracle(nodule, truth.grid), location_mask=nodule.mask)  # the engine's in-memory mask
    assert score_sentence(in_dict, truth).dice == 1.0
    half = (nodule.box[0], (nodule.box[0] + nodule.box[1]) / 2)  # half as long along each axis
    assert score_sentence(_sentence("nodule", nodule.centres[0], half), truth).iou == pytest.approx(1 / 8)
    outside = truth.grid.to_lps(np.array(truth.grid.shape) + 5)  # a peak off the image is no hit
    assert not score_sentence(_sentence("nodule", outside, nodule.box), truth).hit


def test_a_sentence_without_a_location_is_a_miss(phantoms):
    truth = _truth(phantoms["10"])
    nodule = _region(truth, "Lung nodule")
    miss = score_sentence(_sentence("nodule"), truth, method="attribution")
    assert (miss.status, miss.located, miss.hit, miss.iou, miss.dice) == (SCORED, False, False, 0.0, 0.0)
    located = _oracle(nodule, truth.grid, method="attribution:gradient_x_input")
    cases = [GroundingCase("10", truth, [located, _sentence("nodule")], [nodule.mask, None], "attribution")]
    figures = score_grounding(cases, resamples=0)["methods"]["attribution"]["figures"]
    assert figures["hit_rate"]["value"] == 0.5 and figures["located"]["value"] == 0.5
    assert figures["dice"]["value"] == 0.5 and figures["box_iou"]["value"] == 0.5  # the miss counts 0
    boxes_only = [GroundingCase("10", truth, [located, _sentence("nodule")], None, "box")]
    figures = score_grounding(boxes_only, resamples=0)["methods"]["box"]["figures"]
    assert "dice" not in figures and figures["box_iou"]["value"] == 0.5  # a method without masks has no Dice


def test_a_bilateral_effusion_is_matched_against_both_sides(phantoms):
    truth = _truth(phantoms["03"])
    right, left = _region(truth, "Pleural effusion (right)"), _region(truth, "Pleural effusion (left)")
    peak = _inside(left, truth.grid)
    sentence = _sentence("pleural effusion", peak, left.box, text="Bilateral pleural effusions.")
    score = score_sentence(sentence, truth, left.mask)
    assert score.hit and score.truth == ("Pleural effusion (right)", "Pleural effusion (left)")
    assert score.iou == 1.0  # the best of each side's box and the union's
    assert score.dice == pytest.approx(2 * left.mask.sum() / (2 * left.mask.sum() + right.mask.sum()))
    assert not score_sentence(_sentence("pleural effusion", peak + [0, 0, 500], left.box), truth).hit


def test_sentences_without_a_truth_region_are_counted_apart(phantoms):
    truth = _truth(phantoms["00"])  # cardiomegaly and emphysema: present, drawn as no region
    rows = [score_sentence(_sentence("cardiomegaly", [0, 0, 0], [[0, 0, 0], [1, 1, 1]]), truth),
            score_sentence(_sentence("nodule", [0, 0, 0], [[0, 0, 0], [1, 1, 1]]), truth),
            score_sentence(_sentence(None, text="The heart is normal in size."), truth)]
    assert [r.status for r in rows] == [NO_REGION, ABSENT, NOT_A_FINDING]
    assert all(r.hit is None for r in rows)
    result = aggregate(rows, ["00"], resamples=0)
    assert result["methods"] == {} and result["sentences"] == {"total": 3, NO_REGION: 1, ABSENT: 1,
                                                               NOT_A_FINDING: 1}


def test_centres_without_masks_hit_within_the_distance(phantoms):
    record = dataclasses.replace(phantoms["10"], masks={})
    truth = _truth(record)
    nodule = _region(truth, "Lung nodule")
    assert nodule.mask is None and nodule.box is None
    box = [[0, 0, 0], [1, 1, 1]]
    near = score_sentence(_sentence("nodule", nodule.centres[0] + [0, 8, 0], box), truth)
    far = score_sentence(_sentence("nodule", nodule.centres[0] + [0, 15, 0], box), truth)
    assert near.hit and not far.hit and near.iou is None and near.dice is None
    assert score_sentence(_sentence("nodule", nodule.centres[0] + [0, 15, 0], box), truth, distance_mm=20).hit
    assert score_sentence(_sentence("pleural effusion", [0, 0, 0], box), truth).status == NO_REGION


def _findings(truth):
    """finding -> (its regions' union mask, a peak inside, the union's box)."""
    out = {}
    for finding in dict.fromkeys(r.finding for r in truth.regions):
        regions = [r for r in truth.regions if r.finding == finding]
        union = np.logical_or.reduce([r.mask for r in regions])
        out[finding] = union, _inside(regions[0], truth.grid), truth.grid.box(union)
    return out


def _cases(phantoms, ids):
    """Per study and finding: an oracle method (exact), a method that names no place, and one right on every
    other study (the peak 200 mm off on the rest)."""
    cases = []
    for k, study in enumerate(ids):
        truth = _truth(phantoms[study])
        found = _findings(truth)
        exact = [_sentence(f, peak, box) for f, (_, peak, box) in found.items()]
        cases.append(GroundingCase(study, truth, exact, [mask for mask, _, _ in found.values()], "oracle"))
        cases.append(GroundingCase(study, truth, [_sentence(f) for f in found], None, "nowhere"))
        off = [_sentence(f, np.add(peak, [0, 0, 200]), box) for f, (_, peak, box) in found.items()]
        cases.append(GroundingCase(study, truth, exact if k % 2 else off, None, "half"))
    return cases


def test_figures_per_method_and_finding_with_seeded_intervals(phantoms):
    ids = ["02", "03", "04", "06", "07", "10", "11", "00"]
    cases = _cases(phantoms, ids)
    result = score_grounding(cases, resamples=300, seed=4)
    assert result == score_grounding(cases, resamples=300, seed=4)  # seeded
    assert result["n_studies"] == len(ids) and result["bootstrap"]["unit"] == "studies"
    oracle, nowhere, half = (result["methods"][m] for m in ("oracle", "nowhere", "half"))
    findings = sum(len(_findings(_truth(phantoms[i]))) for i in ids)
    assert oracle["figures"]["hit_rate"] == {"value": 1.0, "low": 1.0, "high": 1.0, "sum": findings,
                                             "n": findings}
    assert oracle["figures"]["dice"]["value"] == 1.0 and oracle["figures"]["box_iou"]["value"] == 1.0
    assert nowhere["figures"]["hit_rate"]["value"] == 0.0 and nowhere["figures"]["located"]["value"] == 0.0
    assert "dice" not in nowhere["figures"]  # it never gave a mask
    hits = sum(len(_findings(_truth(phantoms[i]))) for k, i in enumerate(ids) if k % 2)
    rate = half["figures"]["hit_rate"]
    assert rate["value"] == pytest.approx(hits / findings) and rate["low"] < rate["value"] < rate["high"]
    assert set(oracle["by_finding"]) == {"nodule", "consolidation", "pleural effusion",
                                         "pericardial effusion"}
    nodules = sum(r.finding == "nodule" for i in ids for r in _truth(phantoms[i]).regions)
    assert oracle["by_finding"]["nodule"]["hit_rate"]["n"] == nodules
    plain = score_grounding(cases, resamples=0)
    assert plain["methods"]["half"]["figures"]["hit_rate"]["low"] is None
    assert plain["methods"]["half"]["figures"]["hit_rate"]["value"] == rate["value"]
    assert len(plain["details"]) == len(score_cases(cases)) and plain["settings"]["distance_mm"] == 10.0
    table = grounding.format_grounding(result)
    assert f"sentences: {len(plain['details'])} in all, {findings * 3} scored" in table
    assert "oracle / nodule" in table and "hit_rate" in table and "100.0 [100.0, 100.0]" in table
    with pytest.raises(ValueError, match="masks for"):
        score_cases([GroundingCase("x", cases[0].truth, cases[0].sentences, [None], "oracle")])


def test_box_iou_and_dice():
    assert box_iou([[0, 0, 0], [2, 1, 1]], [[1, 0, 0], [3, 1, 1]]) == pytest.approx(1 / 3)
    assert box_iou([[2, 1, 1], [0, 0, 0]], [[0, 0, 0], [2, 1, 1]]) == 1.0  # corners in any order
    assert box_iou([[0, 0, 0], [1, 1, 1]], [[5, 5, 5], [6, 6, 6]]) == 0.0
    a, b = np.zeros((4, 4, 4), bool), np.zeros((4, 4, 4), bool)
    a[:2], b[1:3] = True, True
    assert dice(a, b) == 0.5 and dice(a, a) == 1.0
    with pytest.raises(ValueError, match="not on the study's grid"):
        dice(a, np.zeros((4, 4, 5), bool))


# -- a tiny fake ReXGroundingCT release ------------------------------------------------------------------
VOLUME_AFFINE = np.array([[-0.8, 0, 0, 120.0], [0, -0.8, 0, 110.0], [0, 0, 1.5, -60.0], [0, 0, 0, 1]])
SHAPE = (20, 16, 10)  # stored (H, W, D), as CT-RATE stores it


def _write(path, array, affine):
    import nibabel

    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(array, affine), str(path))


def _release(root, *, mask_shape=(2, *SHAPE)):
    """ReXGroundingCT's dataset.json and segmentations/, and CT-RATE's train_fixed/ and valid_fixed/."""
    volume = np.full(SHAPE, -850, np.int16)
    volume[2:6, 3:8, 1:5] = 10
    for name, split in (("train_1_a_1.nii.gz", "train"), ("valid_2_a_1.nii.gz", "valid")):
        patient, scan = name.split("_")[1], name.split("_")[2]
        _write(root / "ct" / f"{split}_fixed" / f"{split}_{patient}" / f"{split}_{patient}_{scan}" / name,
               volume, VOLUME_AFFINE)
    mask = np.zeros(mask_shape, np.uint8)
    mask[0, 3, 4, 2], mask[0, 4, 5, 2] = 1, 2  # two entities of finding 0
    mask[1, 2:6, 3:8, 1:5] = 1
    _write(root / "rex" / "segmentations" / "train_1_a_1.nii.gz", mask, np.eye(4))  # identity, as released
    study = {"name": "train_1_a_1.nii.gz", "findings": {"0": "Nodule in the right lower lobe",
                                                        "1": "Right pleural effusion"},
             "categories": {"0": "2d", "1": "2e"}, "entity_counts": {"0": 2, "1": 1}, "shape": list(SHAPE),
             "pixels": {"0": 2, "1": 80}, "protocol": "protocol1"}
    held_out = {"name": "valid_2_a_1.nii.gz", "findings": {"0": "Left upper lobe ground-glass opacity"},
                "categories": {"0": "2c"}, "shape": list(SHAPE)}
    (root / "rex" / "dataset.json").write_text(json.dumps({"train": [study], "val": [], "test": [held_out]}))
    return root / "rex", root / "ct"


def _stored_voxel_lps(index):
    ras = VOLUME_AFFINE @ np.array([*index, 1.0])
    return np.array([-ras[0], -ras[1], ras[2]])


def test_rexgroundingct_release_becomes_records_whose_masks_lie_on_the_volume(tmp_path):
    from napari_radreport.data.adapters import CONVERTERS, convert_rexgroundingct

    assert CONVERTERS["rexgroundingct"] is convert_rexgroundingct
    src, volumes = _release(tmp_path)
    with pytest.raises(FileNotFoundError, match="mask file of valid_2_a_1.nii.gz does not exist"):
        convert_rexgroundingct(src, tmp_path / "m.jsonl", volumes=volumes)
    summary = convert_rexgroundingct(src, tmp_path / "m.jsonl", volumes=volumes, missing="skip")
    assert summary.written == 1 and summary.skipped == {"mask file missing": 1}
    [record] = read_manifest(tmp_path / "m.jsonl")
    assert record.id == "train_1_a_1" and record.split == "train" and record.source == "rexgroundingct"
    assert record.masks["layout"] == "channels" and record.masks["sentences"] == [
        {"text": "Nodule in the right lower lobe", "channel": 0, "category": "2d"},
        {"text": "Right pleural effusion", "channel": 1, "category": "2e"}]
    study = read_record_study(record)
    assert study.extra["reorientation"] != {"perm": [0, 1, 2], "flip": [False, False, False]}
    truth = truth_from_record(record, study)
    assert [(r.text, r.finding) for r in truth.regions] == [
        ("Nodule in the right lower lobe", "nodule"), ("Right pleural effusion", "pleural effusion")]
    nodule, effusion = truth.regions
    assert nodule.mask.sum() == 2 and effusion.mask.sum() == 80
    for stored in ((3, 4, 2), (4, 5, 2)):  # the stored voxel, placed by the volume's affine, is in the mask
        assert nodule.mask[truth.grid.voxel_of(_stored_voxel_lps(stored))]
    assert (study.array[effusion.mask] == 10).all()  # the fluid drawn in the volume, under its mask
    # matched by the sentence's text (whatever finding the engine read), case and final period aside
    peak = _stored_voxel_lps((3, 4, 2))
    score = score_sentence(_sentence(None, peak, nodule.box, text="nodule in the right lower lobe."), truth)
    assert score.status == SCORED and score.hit and score.finding == "nodule" and score.iou == 1.0
    flipped = convert_rexgroundingct(src, tmp_path / "f.jsonl", volumes=volumes, missing="skip",
                                     mask_flip_axes=(0, 1))
    assert flipped.written == 1
    [record] = read_manifest(tmp_path / "f.jsonl")
    moved = truth_from_record(record, read_record_study(record)).regions[0]
    assert moved.mask[truth.grid.voxel_of(_stored_voxel_lps((SHAPE[0] - 4, SHAPE[1] - 5, 2)))]
    assert not moved.mask[truth.grid.voxel_of(peak)]


def test_rexgroundingct_refuses_what_it_cannot_read(tmp_path):
    from napari_radreport.data.adapters import DatasetFormatError, convert_rexgroundingct

    src, volumes = _release(tmp_path, mask_shape=(2, 20, 16, 9))
    with pytest.raises(DatasetFormatError, match=r"shape \(2, 20, 16, 9\), expected"):
        convert_rexgroundingct(src, tmp_path / "m.jsonl", volumes=volumes, missing="skip")
    (src / "dataset.json").write_text(json.dumps([{"name": "x"}]))
    with pytest.raises(DatasetFormatError, match="expected an object of splits"):
        convert_rexgroundingct(src, tmp_path / "m.jsonl", volumes=volumes)
    (src / "dataset.json").write_text(json.dumps({"train": [{"name": "train_1_a_1.nii.gz",
                                                             "findings": {"a": "Nodule"}}]}))
    with pytest.raises(DatasetFormatError, match="finding key 'a' is not a channel index"):
        convert_rexgroundingct(src, tmp_path / "m.jsonl", volumes=volumes)


def test_the_preset_refuses_an_engine_that_cannot_ground_and_grounds_reference_text(phantoms, tmp_path):
    from napari_radreport.evaluation.presets import (
        GroundingUnavailable,
        iter_grounding_cases,
        reference_text,
        require_grounding,
    )

    with pytest.raises(GroundingUnavailable, match="^this engine cannot ground yet"):
        require_grounding(object())
    record = phantoms["04"]
    assert reference_text(record) == f"Findings: {record.findings}\nImpression: {record.impression}"
    truth = _truth(record)
    nodule = _region(truth, "Lung nodule")

    class Grounded:
        mask = nodule.mask

        def as_dict(self):
            return _oracle(nodule, truth.grid)

    class Engine:
        def ground(self, study, text, method="its own"):
            self.asked = (study.array.shape, text, method)
            return [Grounded()]

    engine = Engine()
    [case] = iter_grounding_cases(engine, [record], methods=["saliency"], text="reference")
    assert engine.asked[1:] == (reference_text(record), "saliency") and case.method == "saliency"
    assert score_cases([case])[0].dice == 1.0
    [case] = iter_grounding_cases(engine, [record], text="reference")  # the engine's default method,
    assert engine.asked[2] == "its own" and case.method == "attribution"  # named as its locations name it


def test_the_command_line_converts_a_rexgroundingct_release(tmp_path, capsys):
    from napari_radreport.cli import main

    src, volumes = _release(tmp_path)
    out = tmp_path / "m.jsonl"
    assert main(["dataset", "convert", "rexgroundingct", str(src), "--volumes", str(volumes), "--out",
                 str(out), "--missing", "skip", "--mask-flip-axes", "0", "1"]) == 0
    [record] = read_manifest(out)
    assert record.masks["flip_axes"] == [0, 1] and "1" in capsys.readouterr().out
