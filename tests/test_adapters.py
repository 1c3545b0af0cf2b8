"""Dataset adapters: small files in each public layout -> manifest records; malformed
input -> one clear line."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from napari_radreport.data.adapters import (
    DatasetFormatError,
    convert_amos_mm,
    convert_bimcv_r,
    convert_ct_rate,
    convert_rrg24,
)
from napari_radreport.data.adapters.bimcv_r import report_sections
from napari_radreport.data.manifest import read_manifest
from napari_radreport.modeling.prompt_spec import CT_RATE_LABELS


def _nifti(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.full((4, 4, 2), -1000, dtype=np.int16), np.eye(4)), path)
    return path


def _png(path: Path) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(path)
    return path


def _csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------- CT-RATE

CT_FINDINGS = ("Trachea and both main bronchi are open. There is a 4 mm nodule in the right upper lobe. "
               "No pleural effusion. A 12 mm hypodense lesion is seen in the liver.")


def _ct_rate(root: Path, split: str = "train", volume_folder: str | None = None, names=None) -> Path:
    """A CT-RATE ``dataset/`` folder with reports, labels and metadata for ``names``
    (volumes for all but *_3)."""
    prefix = "train" if split == "train" else "valid"
    names = names or [f"{prefix}_1_a_1.nii.gz", f"{prefix}_1_a_2.nii.gz", f"{prefix}_2_a_1.nii.gz"]
    base = root / "dataset"
    reports, labels, meta = (
        ("train_reports.csv", "train_predicted_labels.csv", "train_metadata.csv") if split == "train"
        else ("validation_reports.csv", "valid_predicted_labels.csv", "validation_metadata.csv"))
    _csv(base / "radiology_text_reports" / reports,
         ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"],
         [[n, "Not given.", "Non-contrast chest CT.", CT_FINDINGS if i == 0 else "Lungs are clear.",
           "Pulmonary nodule." if i == 0 else ""] for i, n in enumerate(names)])
    _csv(base / "multi_abnormality_labels" / labels, ["VolumeName", *CT_RATE_LABELS],
         [[n, *[int(label == "Lung nodule" and i == 0) for label in CT_RATE_LABELS]]
          for i, n in enumerate(names)])
    _csv(base / "metadata" / meta, ["VolumeName", "Manufacturer", "RescaleSlope", "RescaleIntercept"],
         [[n, "PHILIPS", "1", "-1024"] for n in names])
    folder = volume_folder or f"{prefix}_fixed"
    for name in names[:2]:
        parts = name.removesuffix(".nii.gz").split("_")
        _nifti(base / folder / "_".join(parts[:2]) / "_".join(parts[:3]) / name)
    return root


def test_ct_rate_writes_reports_labels_regions_and_no_rescale(tmp_path):
    src = _ct_rate(tmp_path / "ct-rate")
    out = tmp_path / "ct-rate" / "train.jsonl"  # inside the dataset folder: image paths become relative
    summary = convert_ct_rate(src, out, missing="skip")
    assert summary.written == 2 and summary.skipped == {"volume file missing": 1}
    first, second = read_manifest(out)
    assert first.id == "train_1_a_1" and first.split == "train" and first.modality == "ct"
    assert first.images == ["dataset/train_fixed/train_1/train_1_a/train_1_a_1.nii.gz"]
    assert first.image_paths()[0].is_file()
    assert first.findings == CT_FINDINGS and first.impression == "Pulmonary nodule."
    assert list(first.labels) == list(CT_RATE_LABELS)
    assert first.labels["Lung nodule"] == 1 and sum(first.labels.values()) == 1
    assert first.regions == {
        "chest": "Trachea and both main bronchi are open. There is a 4 mm nodule in the right upper lobe. "
                 "No pleural effusion.",
        "abdomen": "A 12 mm hypodense lesion is seen in the liver."}
    assert first.hu_rescale is None and second.hu_rescale is None  # fixed volumes are HU already
    assert first.source == "ct-rate" and second.impression == ""


def test_ct_rate_missing_volume_is_an_error_naming_the_file(tmp_path):
    src = _ct_rate(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"train_2/train_2_a/train_2_a_1\.nii\.gz"):
        convert_ct_rate(src, tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists()


def test_ct_rate_raw_volumes_take_the_metadata_rescale(tmp_path):
    src = _ct_rate(tmp_path, volume_folder="train")  # first release: raw values under train/
    summary = convert_ct_rate(src, tmp_path / "m.jsonl", raw_volumes=True, missing="skip")
    assert summary.written == 2
    assert [r.hu_rescale for r in read_manifest(tmp_path / "m.jsonl")] == [(1.0, -1024.0)] * 2


def test_ct_rate_refuses_to_rescale_the_fixed_volumes(tmp_path):
    src = _ct_rate(tmp_path)  # only train_fixed/
    with pytest.raises(DatasetFormatError, match="train_fixed.*already in HU.*twice"):
        convert_ct_rate(src, tmp_path / "m.jsonl", raw_volumes=True)


def test_ct_rate_validation_split_uses_the_validation_files(tmp_path):
    src = _ct_rate(tmp_path, split="val")
    convert_ct_rate(src, tmp_path / "val.jsonl", split="val", missing="skip")
    records = read_manifest(tmp_path / "val.jsonl")
    assert [r.id for r in records] == ["valid_1_a_1", "valid_1_a_2"]
    assert {r.split for r in records} == {"val"}
    assert "valid_fixed/valid_1/valid_1_a/valid_1_a_1.nii.gz" in records[0].images[0]


@pytest.mark.parametrize("file, drop, message", [
    ("multi_abnormality_labels/train_predicted_labels.csv", "Emphysema", "missing column(s) 'Emphysema'"),
    ("radiology_text_reports/train_reports.csv", "Findings_EN", "missing column(s) 'Findings_EN'"),
])
def test_ct_rate_missing_column_is_named(tmp_path, file, drop, message):
    src = _ct_rate(tmp_path)
    path = src / "dataset" / file
    rows = list(csv.reader(path.open()))
    keep = [i for i, name in enumerate(rows[0]) if name != drop]
    _csv(path, [rows[0][i] for i in keep], [[row[i] for i in keep] for row in rows[1:]])
    with pytest.raises(DatasetFormatError) as info:
        convert_ct_rate(src, tmp_path / "m.jsonl", missing="skip")
    assert str(info.value).startswith(str(path)) and message in str(info.value)
    assert "\n" not in str(info.value)


def test_ct_rate_bad_label_value_names_the_line(tmp_path):
    src = _ct_rate(tmp_path)
    path = src / "dataset" / "multi_abnormality_labels" / "train_predicted_labels.csv"
    path.write_text(path.read_text().replace("train_1_a_2.nii.gz,0", "train_1_a_2.nii.gz,maybe"))
    with pytest.raises(DatasetFormatError, match=r"train_predicted_labels\.csv:3: column 'Medical material'"):
        convert_ct_rate(src, tmp_path / "m.jsonl", missing="skip")


def test_ct_rate_malformed_volume_name_and_missing_files(tmp_path):
    src = _ct_rate(tmp_path, names=["train_1_a_1.nii.gz", "scan.nii.gz"])
    with pytest.raises(DatasetFormatError, match=r"train_reports\.csv:3: VolumeName 'scan\.nii\.gz'"):
        convert_ct_rate(src, tmp_path / "m.jsonl", missing="skip")
    with pytest.raises(DatasetFormatError,
                       match="no reports CSV found .*validation_reports.csv.*; pass --reports"):
        convert_ct_rate(src, tmp_path / "m.jsonl", split="val")
    (src / "dataset" / "multi_abnormality_labels" / "train_predicted_labels.csv").unlink()
    with pytest.raises(DatasetFormatError, match="no labels CSV found"):
        convert_ct_rate(src, tmp_path / "m.jsonl")


# ---------------------------------------------------------------- AMOS-MM

def _amos(root: Path) -> Path:
    for name in ("imagesTr/amos_0001.nii.gz", "imagesTr/amos_0002.nii.gz", "imagesVa/amos_0100.nii.gz"):
        _nifti(root / name)
    qa = [{"question": "Where is the largest lesion?", "options": {"A": "Liver", "B": "Spleen", "C": "Kidney",
                                                                    "D": "Pancreas"}, "answer": "C",
           "reasoning": "The mass arises from the kidney."}]
    data = {
        "training": [
            {
                "image": "./imagesTr/amos_0001.nii.gz",
                "meta": {"spacing": [0.7, 0.7, 5.0]},
                "labels": {
                    "report": {
                        "findings": {
                            "chest": "Both lungs are clear.",
                            "abdomen": "A 3 cm renal mass.",
                            "pelvis": "",
                        },
                        "impression": {
                            "abdomen": ["Right renal mass.", "Suspect carcinoma."],
                            "chest": ["No active lung disease."],
                        },
                    },
                    "qa": qa,
                },
            },
            {
                "image": "./imagesTr/amos_0002.nii.gz",
                "labels": {"report": {"findings": {}, "impression": {}}},
            },
        ],
        "validation": [
            {
                "image": "./imagesVa/amos_0100.nii.gz",
                "labels": {
                    "report": {"findings": {"pelvis": "The bladder is normal."}, "impression": "Normal."}
                },
            },
        ],
    }
    (root / "dataset.json").write_text(json.dumps(data))
    return root


def test_amos_mm_regions_impression_and_multiple_choice(tmp_path):
    src = _amos(tmp_path / "amos")
    summary = convert_amos_mm(src, tmp_path / "amos.jsonl")
    assert summary.written == 2 and summary.skipped == {"no findings, impression or questions": 1}
    assert summary.splits == {"train": 1, "val": 1}
    first, second = read_manifest(tmp_path / "amos.jsonl")
    assert first.id == "amos_0001" and first.split == "train" and first.modality == "ct"
    assert first.regions == {"chest": "Both lungs are clear.", "abdomen": "A 3 cm renal mass."}
    assert first.findings == "Both lungs are clear. A 3 cm renal mass."
    assert first.impression == "No active lung disease. Right renal mass. Suspect carcinoma."  # chest first
    (qa,) = first.qa
    assert qa.choices == ["Liver", "Spleen", "Kidney", "Pancreas"]
    assert qa.answer_index == 2 and qa.answer == "Kidney"
    assert first.image_paths()[0].is_file()
    assert (second.id, second.split, second.regions, second.impression) == (
        "amos_0100", "val", {"pelvis": "The bladder is normal."}, "Normal.")


def test_amos_mm_questions_from_a_second_file_and_one_split(tmp_path):
    src = _amos(tmp_path / "amos")
    vqa = {"training": [{"image": "./imagesTr/amos_0002.nii.gz", "labels": {"qa": [
        {"question": "Is there ascites?", "options": ["Yes", "No"], "answer": "B. No"}]}}]}
    (tmp_path / "vqa.json").write_text(json.dumps(vqa))
    convert_amos_mm(src / "dataset.json", tmp_path / "m.jsonl", vqa=tmp_path / "vqa.json", split="train")
    records = {r.id: r for r in read_manifest(tmp_path / "m.jsonl")}
    assert set(records) == {"amos_0001", "amos_0002"}  # validation left out; 0002 now has a question
    (qa,) = records["amos_0002"].qa
    assert (qa.choices, qa.answer_index, qa.answer) == (["Yes", "No"], 1, "No")


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["training"][0]["labels"]["qa"][0].update(answer="E"), "amos_0001 question 0: answer 'E'"),
    (lambda d: d["training"][0]["labels"]["report"]["findings"].update(neck="x"),
     "unknown findings region 'neck'"),
    (lambda d: d["training"][0].pop("image"), "training[0] has no 'image' path"),
    (lambda d: d.clear() or d.update(cases=[]), "expected an object with 'training'/'validation'"),
])
def test_amos_mm_malformed_input_names_the_file_and_problem(tmp_path, edit, message):
    src = _amos(tmp_path)
    data = json.loads((src / "dataset.json").read_text())
    edit(data)
    (src / "dataset.json").write_text(json.dumps(data))
    with pytest.raises(DatasetFormatError) as info:
        convert_amos_mm(src, tmp_path / "m.jsonl")
    assert str(info.value).startswith(str(src / "dataset.json")) and message in str(info.value)


def test_amos_mm_missing_volume_and_broken_json(tmp_path):
    src = _amos(tmp_path)
    (src / "imagesVa" / "amos_0100.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match=r"imagesVa/amos_0100\.nii\.gz"):
        convert_amos_mm(src, tmp_path / "m.jsonl")
    assert convert_amos_mm(src, tmp_path / "m.jsonl", missing="skip").skipped["volume file missing"] == 1
    (src / "dataset.json").write_text('{"training": [')
    with pytest.raises(DatasetFormatError, match=r"dataset\.json: not valid JSON"):
        convert_amos_mm(src, tmp_path / "m2.jsonl")


# ---------------------------------------------------------------- RRG24 / MIMIC-CXR

def _rrg24(root: Path) -> Path:
    images = [f"files/p10/p10000032/s50414267/view{i}.jpg" for i in range(5)]
    for name in images:
        _png(root / name)
    _png(root / "files/p11/p11000011/s51111111/frontal.jpg")
    train = [
        {"source": "MIMIC-CXR", "images": images, "findings": "Heart size is normal. Lungs are clear.",
         "impression": "No acute process."},
        {"source": "MIMIC-CXR", "images": images[:1], "findings": None, "impression": ""},
        {"source": "CheXpert", "images_path": ["files/p11/p11000011/s51111111/frontal.jpg"],
         "images": [{"bytes": None, "path": None}], "findings": "", "impression": "Small left effusion."},
    ]
    (root / "train_mimic.json").write_text(json.dumps(train))
    (root / "val_mimic.jsonl").write_text(json.dumps(
        {"study_id": "s51111111", "images": ["files/p11/p11000011/s51111111/frontal.jpg"],
         "findings": "Clear.", "impression": "Normal."}) + "\n")
    return root


def test_rrg24_studies_with_several_images(tmp_path):
    src = _rrg24(tmp_path / "rrg")
    summary = convert_rrg24(src, tmp_path / "rrg" / "cxr.jsonl")
    assert summary.written == 3 and summary.skipped == {"no findings or impression": 1}
    assert summary.notes == {"studies with more than 4 images (first 4 kept)": 1}
    records = {r.id: r for r in read_manifest(tmp_path / "rrg" / "cxr.jsonl")}
    assert set(records) == {"train_mimic-000000", "train_mimic-000002", "s51111111"}
    first = records["train_mimic-000000"]
    assert first.modality == "xray" and first.split == "train" and first.source == "rrg24:MIMIC-CXR"
    assert first.images == [f"files/p10/p10000032/s50414267/view{i}.jpg" for i in range(4)]
    assert (first.findings, first.impression) == ("Heart size is normal. Lungs are clear.",
                                                  "No acute process.")
    chexpert = records["train_mimic-000002"]
    assert chexpert.images == ["files/p11/p11000011/s51111111/frontal.jpg"]  # images_path wins over images
    assert (chexpert.findings, chexpert.impression) == ("", "Small left effusion.")
    assert records["s51111111"].split == "val"  # from the file name
    assert all(p.is_file() for r in records.values() for p in r.image_paths())


def test_rrg24_one_split_for_all_files_and_missing_images(tmp_path):
    src = _rrg24(tmp_path)
    convert_rrg24([src / "val_mimic.jsonl"], tmp_path / "t.jsonl", split="test")
    assert [r.split for r in read_manifest(tmp_path / "t.jsonl")] == ["test"]
    (src / "files/p10/p10000032/s50414267/view2.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"view2\.jpg: image of train_mimic-000000"):
        convert_rrg24(src / "train_mimic.json", tmp_path / "m.jsonl")
    summary = convert_rrg24(src / "train_mimic.json", tmp_path / "m.jsonl", missing="skip")
    assert summary.skipped["image file missing"] == 1 and summary.written == 1


@pytest.mark.parametrize("content, message", [
    ('{"source": "x", "images": ["a.jpg"], "findings": "ok"}\n{"broken', "bad.jsonl:2: not valid JSON"),
    ('[1, 2]', "bad.jsonl: study 0 is a int, not a JSON object"),
    ('[{"images": [{"bytes": "AAA"}], "findings": "x"}]', "images must be file paths"),
])
def test_rrg24_malformed_input_names_the_file(tmp_path, content, message):
    (tmp_path / "bad.jsonl").write_text(content)
    with pytest.raises(DatasetFormatError, match=message):
        convert_rrg24(tmp_path / "bad.jsonl", tmp_path / "m.jsonl")


# ---------------------------------------------------------------- BIMCV-R

BIMCV_NAMES = ["sub-S0001_ses-E0001_run-1_bp-chest_ct.nii.gz", "sub-S0001_ses-E0002_run-1_bp-chest_ct.nii.gz",
               "sub-S0002_ses-E0003_run-1_bp-chest_ct.nii.gz"]


def _bimcv(root: Path) -> Path:
    for i, name in enumerate(BIMCV_NAMES[:2]):
        _nifti(root / f"CT{i + 1}" / "ct" / name)
    _csv(root / "meta" / "curated_ct_report_path_En.csv", ["path", "Report_en"], [
        [f"/data/BIMCV/sub-S0001/ses-E0001/mod-ct/{BIMCV_NAMES[0]}",
         "Findings: Bilateral ground glass opacities. Small hiatal hernia. The liver is steatotic. "
         "Impression: Findings consistent with viral pneumonia."],
        [f"/data/BIMCV/sub-S0001/ses-E0002/mod-ct/{BIMCV_NAMES[1]}", "No pulmonary nodules."],
        [f"/data/BIMCV/sub-S0002/ses-E0003/mod-ct/{BIMCV_NAMES[2]}", "Left lower lobe consolidation."],
    ])
    return root


def test_bimcv_r_reports_are_cut_into_findings_impression_and_regions(tmp_path):
    src = _bimcv(tmp_path / "bimcv")
    summary = convert_bimcv_r(src, tmp_path / "b.jsonl", missing="skip")
    assert summary.written == 2 and summary.skipped == {"volume file missing": 1}
    first, second = read_manifest(tmp_path / "b.jsonl")
    assert first.id == "sub-S0001_ses-E0001_run-1_bp-chest_ct" and first.modality == "ct"
    assert first.findings == "Bilateral ground glass opacities. Small hiatal hernia. The liver is steatotic."
    assert first.impression == "Findings consistent with viral pneumonia."
    assert first.regions == {"chest": "Bilateral ground glass opacities. Small hiatal hernia.",
                             "abdomen": "The liver is steatotic."}
    assert first.image_paths()[0] == (src / "CT1" / "ct" / BIMCV_NAMES[0]).resolve()
    assert (second.findings, second.impression, second.hu_rescale) == ("No pulmonary nodules.", "", None)
    with pytest.raises(FileNotFoundError, match="no volume file sub-S0002_ses-E0003"):
        convert_bimcv_r(src, tmp_path / "b2.jsonl")


def test_bimcv_r_validation_share_keeps_patients_together(tmp_path):
    src = _bimcv(tmp_path)
    for i in range(40):  # more patients, two scans each
        for session in (1, 2):
            _nifti(src / "CT9" / "ct" / f"sub-P{i:03d}_ses-E{session}_ct.nii.gz")
    rows = list(csv.reader((src / "meta" / "curated_ct_report_path_En.csv").open()))
    rows += [[f"sub-P{i:03d}_ses-E{s}_ct.nii.gz", "Clear lungs."] for i in range(40) for s in (1, 2)]
    _csv(src / "meta" / "curated_ct_report_path_En.csv", rows[0], rows[1:])
    convert_bimcv_r(src, tmp_path / "a.jsonl", val_fraction=0.3, missing="skip")
    convert_bimcv_r(src, tmp_path / "b.jsonl", val_fraction=0.3, missing="skip")
    a, b = read_manifest(tmp_path / "a.jsonl"), read_manifest(tmp_path / "b.jsonl")
    assert [r.split for r in a] == [r.split for r in b]  # deterministic
    by_patient = {}
    for record in a:
        by_patient.setdefault(record.id.split("_")[0], set()).add(record.split)
    assert all(len(splits) == 1 for splits in by_patient.values())
    assert 5 <= sum(r.split == "val" for r in a) <= 40


def test_bimcv_r_missing_column_and_report_sections(tmp_path):
    _csv(tmp_path / "meta" / "curated_ct_report_path_En.csv", ["path", "Report"], [["a.nii.gz", "x"]])
    with pytest.raises(DatasetFormatError,
                       match=r"curated_ct_report_path_En\.csv: missing column\(s\) 'Report_en'"):
        convert_bimcv_r(tmp_path, tmp_path / "m.jsonl")
    assert report_sections("Lungs clear.\nCONCLUSION: Normal study.") == ("Lungs clear.", "Normal study.")
    assert report_sections("No differential diagnosis: fine.") == ("No differential diagnosis: fine.", "")


# ---------------------------------------------------------------- shared behaviour

def test_converters_refuse_to_overwrite_and_to_write_nothing(tmp_path):
    src = _ct_rate(tmp_path)
    (tmp_path / "m.jsonl").write_text("keep me\n")
    with pytest.raises(FileExistsError, match="m.jsonl exists"):
        convert_ct_rate(src, tmp_path / "m.jsonl", missing="skip")
    assert (tmp_path / "m.jsonl").read_text() == "keep me\n"
    assert convert_ct_rate(src, tmp_path / "m.jsonl", missing="skip", overwrite=True).written == 2
    empty = tmp_path / "empty"
    _csv(empty / "meta" / "curated_ct_report_path_En.csv", ["path", "Report_en"], [["gone.nii.gz", "Clear."]])
    with pytest.raises(DatasetFormatError, match=r"no records to write \(volume file missing: 1\)"):
        convert_bimcv_r(empty, tmp_path / "none.jsonl", missing="skip")
    assert not (tmp_path / "none.jsonl").exists()


# ---------------------------------------------------------------- CLI

@pytest.fixture
def cli():
    """``radreport`` as the console script runs it."""
    from napari_radreport.cli import main

    return main


def test_cli_convert_then_check(cli, tmp_path, capsys):
    src = _ct_rate(tmp_path / "src")
    out = tmp_path / "m.jsonl"
    assert cli(["dataset", "convert", "ct-rate", str(src), "--out", str(out), "--missing", "skip"]) == 0
    printed = capsys.readouterr().out
    assert f"wrote 2 record(s) to {out} (train 2)" in printed and "volume file missing: 1" in printed
    assert cli(["dataset", "convert", "ct-rate", str(src), "--out", str(out)]) == 1
    assert capsys.readouterr().err.strip().endswith(
        "m.jsonl exists; pass --overwrite (overwrite=True) to replace it")
    assert cli(["dataset", "check", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "records: 2\nsplit: train 2\nmodality: ct 2\nsource: ct-rate 2" in printed
    assert "Lung nodule" in printed and "1 / 2" in printed and "images: all 2 file(s) exist" in printed
    gone = src / "dataset/train_fixed/train_1/train_1_a/train_1_a_2.nii.gz"
    gone.unlink()
    assert cli(["dataset", "check", str(out)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("radreport: error: FileNotFoundError: ") and str(gone) in err
    assert "(1 of 2 image files missing)" in err and "\n" not in err


def test_cli_errors_are_one_line_naming_the_problem(cli, tmp_path, capsys):
    src = _bimcv(tmp_path)
    _csv(src / "meta" / "curated_ct_report_path_En.csv", ["path"], [["x.nii.gz"]])
    assert cli(["dataset", "convert", "bimcv-r", str(src), "--out", str(tmp_path / "m.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "DatasetFormatError" in err and "missing column(s) 'Report_en'" in err
    (tmp_path / "bad.jsonl").write_text('{"id": "a"}\n')
    assert cli(["dataset", "check", str(tmp_path / "bad.jsonl")]) == 1
    assert "bad.jsonl:1: missing field(s) modality, images" in capsys.readouterr().err
    args = ["dataset", "convert", "rrg24", str(tmp_path / "nothing.json"), "--out", str(tmp_path / "x.jsonl")]
    assert cli(args) == 1
    assert "nothing.json: no such file or folder" in capsys.readouterr().err
    with pytest.raises(DatasetFormatError, match="nothing.json: no such file or folder"):
        cli(args + ["--debug"])  # the traceback only with --debug
