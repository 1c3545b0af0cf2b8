"""Synthetic phantoms: reproducible volumes that show their findings where the report says, reports and
answers that read back to the truth, the finding masks beside them, and the manifest that carries them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from napari_radreport.data.manifest import ManifestError, ManifestRecord, read_manifest, write_manifest
from napari_radreport.data.phantoms import anatomy, reports
from napari_radreport.data.phantoms.generate import phantom_record, write_phantoms


def _findings(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [(anatomy.sample_findings(rng), np.random.default_rng([seed, i])) for i in range(n)]


def test_every_wording_of_reports_and_answers_reads_back_to_the_truth():
    for truth, rng in _findings(400):
        truth_names = {n: getattr(truth, n) for n in reports.FINDING_NAMES}
        for text in (reports.findings_text(truth, rng), reports.impression_text(truth, rng)):
            stated = reports.read_findings(text)
            assert {n: getattr(stated, n) for n in reports.FINDING_NAMES} == truth_names, text
        findings = reports.read_findings(reports.findings_text(truth, rng))
        assert findings.extras["mentioned"] == set(reports.FINDING_NAMES)  # findings speak of every finding


def test_wording_varies_and_findings_are_balanced():
    texts, present = set(), dict.fromkeys(reports.FINDING_NAMES, 0)
    for truth, rng in _findings(300, seed=1):
        texts.add(reports.findings_text(anatomy.Findings(), rng))
        for name in reports.FINDING_NAMES:
            present[name] += bool(getattr(truth, name))
    assert len(texts) > 20  # six sentences, three wordings each
    assert all(60 < count < 150 for count in present.values()), present


def test_questions_have_right_answers_and_valid_choices():
    from napari_radreport.evaluation.phantoms import score_answer

    for truth, rng in _findings(100, seed=2):
        for qa in reports.questions(truth, rng):
            if qa.get("choices"):
                assert (qa["choices"][qa["answer_index"]] == qa["answer"]
                        and len(set(qa["choices"])) == len(qa["choices"]))
            else:
                kind, right = score_answer(qa["question"], qa["answer"], truth)
                assert right, (qa, kind)
                if kind.startswith("yes/no"):
                    flipped = "No." if qa["answer"].startswith("Yes") else "Yes."
                    assert not score_answer(qa["question"], flipped, truth)[1]


def test_phantoms_are_reproducible_and_differ_between_indices():
    a, va = phantom_record(7, seed=11, split="train")
    b, vb = phantom_record(7, seed=11, split="train")
    _, vc = phantom_record(8, seed=11, split="train")
    assert a.to_json() == b.to_json() and np.array_equal(va, vb)
    assert not np.array_equal(va, vc)


def test_masks_leave_each_phantom_byte_identical():
    """Phantom 2 of seed 5 (nodule, consolidation, pericardial effusion...) is, volume and texts, what it was
    before the masks existed; the volume with labels is the volume without."""
    record, volume = phantom_record(2, seed=5, split="train")
    fields = record.to_json()
    assert fields.pop("masks")["path"] == "masks/phantom-00002.nii.gz"
    assert hashlib.sha256(np.round(volume).astype(np.int16).tobytes()).hexdigest()[:16] == "57f581b300df19b4"
    assert hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16] == "510410d925b3a2e4"
    truth = anatomy.Findings(nodule=("left", "upper", 12), effusion="bilateral", pericardial_effusion=True)
    alone = anatomy.phantom_volume(truth, np.random.default_rng(4))
    truth.extras.clear()
    with_labels, labels = anatomy.phantom_volume_and_labels(truth, np.random.default_rng(4))
    assert np.array_equal(alone, with_labels) and labels.shape == alone.shape and labels.dtype == np.uint8


def test_label_map_marks_each_regional_finding_where_it_is_drawn():
    truth = anatomy.Findings(nodule=("right", "lower", 22), effusion="bilateral",
                             consolidation=("left", "upper"), pericardial_effusion=True, cardiomegaly=True,
                             emphysema=True)
    phantom = anatomy.Phantom(truth, np.random.default_rng(8))
    volume, labels, values = phantom.build(), phantom.labels, anatomy.MASK_LABELS
    assert set(np.unique(labels)) == {0, *values.values()}  # cardiomegaly and emphysema are no region

    def median_hu(name: str) -> float:
        return float(np.median(volume[labels == values[name]]))

    assert abs(median_hu("Lung nodule") - anatomy.HU["nodule"]) < 20
    assert abs(median_hu("Consolidation") - anatomy.HU["consolidation"]) < 20
    for name in ("Pleural effusion (right)", "Pleural effusion (left)", "Pericardial effusion"):
        assert abs(median_hu(name) - anatomy.HU["fluid"]) < 20, name
    centre = truth.extras["centres_mm"]["nodule"]
    index = tuple(int(np.argmin(np.abs(axis - c))) for axis, c in
                  zip([phantom.z[:, 0, 0], phantom.y[0, :, 0], phantom.x[0, 0, :]], centre))
    assert labels[index] == values["Lung nodule"]
    assert (phantom.x[labels == values["Pleural effusion (right)"]] < 0).all()  # x grows to the left
    assert (phantom.x[labels == values["Pleural effusion (left)"]] > 0).all()
    heart = anatomy._ellipsoid(phantom.z, phantom.y, phantom.x, phantom.heart_centre, phantom.heart_radii)
    pericardium = labels == values["Pericardial effusion"]
    assert pericardium.sum() > 100 and (heart[pericardium] > 1.0).all() and (heart[pericardium] <= 1.45).all()
    bone = np.abs(volume - anatomy.HU["bone"]) < 60
    assert not (bone & (labels > 0)).any()  # anatomy painted over a finding clears its label


def test_written_masks_read_back_on_the_volume_grid_around_the_findings(tmp_path):
    from napari_radreport.io import load_study

    records = read_manifest(write_phantoms(tmp_path, 12, seed=5, val=0.0, test=0.0))
    names = {"Lung nodule": "nodule", "Consolidation": "consolidation", "Pericardial effusion":
             "pericardial_effusion"}
    found = {"Lung nodule": 0, "Consolidation": 0, "boxes": 0}
    for record in records:
        image = load_study(record.image_paths()[0]).image
        labels = load_study(record.mask_path()).image  # the project's reader, as for the volume
        assert labels.array.shape == image.array.shape and labels.orientation == ("I", "P", "L")
        assert np.allclose(labels.origin, image.origin) and np.allclose(labels.direction, image.direction)
        assert labels.spacing == pytest.approx(image.spacing)
        truth = reports.read_findings(record.impression)
        sides = {"bilateral": ("right", "left"), None: ()}.get(truth.effusion, (truth.effusion,))
        expected = {name for name, attribute in names.items() if getattr(truth, attribute)}
        expected |= {f"Pleural effusion ({side})" for side in sides}
        table = record.masks.get("labels", {})
        assert set(table) == expected and set(record.masks.get("boxes", {})) == expected, record.id
        for label, points in record.positions.items():  # each centre lies inside its finding's mask
            index = tuple(np.round(image.patient_to_index(points[0])).astype(int))
            assert labels.array[index] == table[label], (record.id, label)
            found[label] += 1
        for name, value in table.items():  # each box spans its mask's voxels to their outer faces
            where = np.argwhere(labels.array == value)
            ends = image.index_to_patient(where.min(0) - 0.5), image.index_to_patient(where.max(0) + 0.5)
            box = np.asarray(record.masks["boxes"][name])
            assert np.allclose(box, [np.minimum(*ends), np.maximum(*ends)], atol=1e-6), (record.id, name)
            found["boxes"] += 1
    assert min(found.values()) >= 2 and found["boxes"] >= 10, found


def test_findings_are_drawn_where_the_report_puts_them():
    rng = np.random.default_rng(5)
    truth = anatomy.Findings(nodule=("left", "lower", 22), effusion="right", cardiomegaly=False)
    phantom = anatomy.Phantom(truth, rng)
    volume = phantom.build()
    centre = truth.extras["centres_mm"]["nodule"]
    index = tuple(int(np.argmin(np.abs(axis_mm - c))) for axis_mm, c in
                  zip([phantom.z[:, 0, 0], phantom.y[0, :, 0], phantom.x[0, 0, :]], centre))
    assert abs(volume[index] - anatomy.HU["nodule"]) < 80  # soft tissue inside the lung
    assert centre[2] > 0  # patient's left: higher x index in the canonical display
    height = phantom.lung_bottom - phantom.lung_top
    assert str(anatomy.lobe_of("left", (centre[0] - phantom.lung_top) / height, centre[1],
                               phantom.lung_y)) == "lower"
    # posterior and inferior, away from the heart
    dependent = (phantom.y > phantom.lung_y + 15) & (phantom.z > 0)
    off_nodule = ((phantom.z - centre[0]) ** 2 + (phantom.y - centre[1]) ** 2
                  + (phantom.x - centre[2]) ** 2 > 15 ** 2)
    fluid = (np.abs(volume - anatomy.HU["fluid"]) < 60) & dependent & off_nodule
    assert (fluid & phantom.lung_mask("right")).sum() > 50 and (fluid & phantom.lung_mask("left")).sum() == 0


def test_consolidation_fills_part_of_its_lobe_with_air_bronchograms():
    truth = anatomy.Findings(consolidation=("right", "lower"))
    phantom = anatomy.Phantom(truth, np.random.default_rng(3))
    volume = phantom.build()
    lung = phantom.lung_mask("right")
    height = phantom.lung_bottom - phantom.lung_top
    lobes = anatomy.lobe_of("right", (phantom.z - phantom.lung_top) / height, phantom.y, phantom.lung_y)
    opaque = lung & (np.abs(volume - anatomy.HU["consolidation"]) < 60)
    voxel_ml = float(np.prod(anatomy.SPACING)) / 1000
    largest_nodule_ml = 4 / 3 * np.pi * (max(anatomy.NODULE_SIZES_MM) / 2) ** 3 / 1000
    assert opaque.sum() * voxel_ml > 3 * largest_nodule_ml  # lobar, not a round nodule
    assert (lobes[opaque] == "lower").all()  # it stops at the fissures
    near = np.zeros_like(opaque)
    for axis in range(3):  # air inside the opacity: a voxel of air with opacity on both sides along some axis
        near |= np.roll(opaque, 1, axis) & np.roll(opaque, -1, axis)
    bronchograms = near & lung & (volume < -700)
    assert bronchograms.sum() >= 3
    normal = anatomy.Phantom(anatomy.Findings(), np.random.default_rng(3))
    normal_opaque = normal.lung_mask("right") & (np.abs(normal.build() - anatomy.HU["consolidation"]) < 60)
    assert normal_opaque.sum() < 0.05 * opaque.sum()  # the opacity is the finding, not the anatomy


def test_heart_is_larger_with_cardiomegaly():
    def heart_voxels(cardiomegaly: bool) -> int:
        volume = anatomy.phantom_volume(anatomy.Findings(cardiomegaly=cardiomegaly), np.random.default_rng(9))
        return int((volume > 100).sum() - (volume > 300).sum())  # blood pool, not bone

    assert heart_voxels(True) > 1.6 * heart_voxels(False)  # radii x 1.4; the aorta adds the same to both


def test_written_dataset_reads_back_as_canonical_ct(tmp_path):
    from napari_radreport.io import load_study

    manifest = write_phantoms(tmp_path, 10, seed=4, val=0.2, test=0.2)
    records = read_manifest(manifest)
    assert [r.split for r in records] == ["train"] * 6 + ["val"] * 2 + ["test"] * 2
    study = load_study(records[0].image_paths()[0])
    _, volume = phantom_record(0, seed=4, split="train")
    assert study.modality == "CT" and study.image.orientation == ("I", "P", "L")
    assert study.spacing == pytest.approx(anatomy.SPACING)
    assert np.array_equal(study.array, np.round(volume))
    assert records[0].labels == reports.labels(reports.read_findings(records[0].impression))


def test_manifest_positions_point_at_the_nodule_and_the_consolidation_in_the_written_file(tmp_path):
    from napari_radreport.io import load_study

    manifest = write_phantoms(tmp_path, 12, seed=5, val=0.0, test=0.0)
    records = read_manifest(manifest)
    found = {"Lung nodule": 0, "Consolidation": 0}
    for record in records:
        assert set(record.positions) == {k for k in found if record.labels[k]}  # one centre per local finding
        if not record.positions:
            continue
        image = load_study(record.image_paths()[0]).image
        inverse = np.linalg.inv(np.asarray(image.direction, dtype=float))
        for label, points in record.positions.items():
            # LPS -> array index through the file's own geometry (the inverse of Study.index_to_patient)
            index = (np.asarray(points[0]) - np.asarray(image.origin)) @ inverse / np.asarray(image.spacing)
            hu = image.array[tuple(np.round(index).astype(int))]
            target = anatomy.HU["nodule" if label == "Lung nodule" else "consolidation"]
            assert abs(hu - target) < 60 or (label == "Consolidation" and hu < -700), (record.id, label, hu)
            found[label] += 1
    assert min(found.values()) >= 2, found
    # and through the demo model's preprocessing: a nodule of 15 mm or more is bright where its position lands
    from napari_radreport.modeling.processor import Preprocess, patient_to_pixel_index, volume_to_pixels
    from napari_radreport.modeling.recipes import load_recipe

    spec = Preprocess.from_recipe(load_recipe("radreport-demo-phantom").config().preprocess)
    large = [r for r in records
             if r.positions.get("Lung nodule") and reports.read_findings(r.impression).nodule[2] >= 15]
    assert large
    for record in large:
        study = load_study(record.image_paths()[0])
        where = np.round(patient_to_pixel_index(study, spec, record.positions["Lung nodule"][0])).astype(int)
        assert volume_to_pixels(study, spec)[0, 0][tuple(where)] > 0.6, record.id  # lung around it: about 0.1
    with pytest.raises(ManifestError, match="positions of 'Lung nodule' must be a list of"):
        bad = tmp_path / "bad.jsonl"
        bad.write_text(
            '{"id": "b", "modality": "ct", "images": ["x"], "positions": {"Lung nodule": [1, 2, 3]}}\n')
        read_manifest(bad)


def test_manifest_errors_name_the_line_and_field(tmp_path):
    good = ManifestRecord(id="a", modality="ct", images=["a.nii.gz"], qa=[
        {"question": "q?", "answer": "y", "choices": ["x", "y"], "answer_index": 1},
        {"question": "Free?", "answer": "Yes."}])
    path = write_manifest(tmp_path / "m.jsonl", [good])
    assert read_manifest(path)[0].qa[0].answer_index == 1
    assert json.loads(path.read_text())["qa"][1] == {"question": "Free?", "answer": "Yes."}
    cases = {
        '{"id": "b", "modality": "mri", "images": ["x"]}': "'modality' must be one of",
        '{"id": "b", "modality": "ct", "images": ["x"], "colour": 1}': "unknown field(s) colour",
        '{"id": "a", "modality": "ct", "images": ["x"]}': "appears twice",
        '{"id": "b", "modality": "ct"}': "missing field(s) images",
        '{"id": "b", "modality": "ct", "images": ["x"], "labels": {"Cardiomegaly": 2}}': "must be 0 or 1",
        '{"id": "b", "modality": "ct", "images": ["x"], "qa": [{"question": "q", "answer": "a", '
        '"choices": ["x", "y"], "answer_index": 5}]}': "does not point into",
        "{not json": "not valid JSON",
    }
    for line, message in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text(path.read_text() + line + "\n")
        with pytest.raises(ManifestError,
                           match="bad.jsonl:2: .*" + message.replace("(", r"\(").replace(")", r"\)")):
            read_manifest(bad)


def test_manifest_masks_are_checked(tmp_path):
    labels = {"path": "masks/a.nii.gz", "labels": {"Lung nodule": 1, "Pleural effusion (right)": 3},
              "boxes": {"Lung nodule": [[-1, -2, -3], [4, 5, 6]]}}
    channels = {"path": "/data/seg/b.nii.gz", "layout": "channels", "flip_axes": [1, 0],
                "sentences": [{"text": "Right lower lobe nodule", "channel": 0, "category": "2d"}]}
    path = write_manifest(tmp_path / "m.jsonl", [ManifestRecord(id="a", modality="ct", images=["a.nii.gz"],
                                                                masks=labels),
                                                 ManifestRecord(id="b", modality="ct", images=["b.nii.gz"],
                                                                masks=channels)])
    a, b = read_manifest(path)
    assert a.masks["boxes"]["Lung nodule"] == [[-1.0, -2.0, -3.0], [4.0, 5.0, 6.0]]
    assert a.mask_path() == tmp_path / "masks/a.nii.gz" and "layout" not in a.masks  # the default left out
    assert b.masks["flip_axes"] == [0, 1] and b.mask_path() == Path("/data/seg/b.nii.gz")
    assert ManifestRecord(id="c", modality="ct", images=["c"]).mask_path() is None
    cases = {
        '"masks": {"labels": {"Lung nodule": 1}}': "'path'",
        '"masks": {"path": "m", "colour": 1}': "unknown field\\(s\\) colour",
        '"masks": {"path": "m", "layout": "rle"}': "'layout' must be one of",
        '"masks": {"path": "m", "labels": {"Lung nodule": 0}}': "integers >= 1",
        '"masks": {"path": "m", "labels": {"A": 1}, "boxes": {"B": [[0, 0, 0], [1, 1, 1]]}}':
            "names of 'labels'",
        '"masks": {"path": "m", "labels": {"A": 1}, "boxes": {"A": [[2, 0, 0], [1, 1, 1]]}}':
            "min corner beyond",
        '"masks": {"path": "m", "layout": "channels", "sentences": [{"text": "x", "label": 1}]}':
            "needs 'channel'",
        '"masks": {"path": "m", "sentences": [{"text": "", "label": 1}]}': "non-empty 'text'",
        '"masks": {"path": "m", "flip_axes": [0]}': "channels layout only",
        '"masks": {"path": "m", "layout": "channels", "labels": {"A": 1}}': "belongs to the labels layout",
    }
    for fields, message in cases.items():
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"id": "x", "modality": "ct", "images": ["x"], ' + fields + "}\n")
        with pytest.raises(ManifestError, match="bad.jsonl:1: .*" + message):
            read_manifest(bad)
