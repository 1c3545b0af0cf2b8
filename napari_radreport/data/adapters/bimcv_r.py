"""BIMCV-R (chest CT volumes from BIMCV with English-translated reports) -> training manifest.

Assumed layout (Hugging Face dataset ``cyd0806/BIMCV-R`` of Chen et al., "BIMCV-R: A Landmark Dataset for 3D
CT Text-Image Retrieval", MICCAI 2024; folder and column names as read by the authors' MedFinder code)::

    CT*/ct/*.nii.gz                      the volumes
    meta/curated_ct_report_path_En.csv   columns ``path`` (the volume's original path) and ``Report_en``

A row's volume is the file ``path`` names (relative to the dataset folder, or absolute) when it exists, else
the ``.nii.gz`` with the same file name anywhere under the dataset folder. The report is one text: the part
after an "Impression:", "Conclusion(s):" or "Diagnosis:" heading becomes ``impression``, the rest ``findings``
(a leading "Findings:" is dropped); ``regions`` come from the region splitter. Values are read as stored (no
``hu_rescale``).

BIMCV-R has no official split: ``split`` puts every study in one split, and ``val_fraction`` moves a
deterministic share of *patients* to ``val``. The patient is the BIDS ``sub-<id>`` part of the file name
(BIMCV's naming; assumed, not seen in a listing) or, without one, the file name itself.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from napari_radreport.data.adapters._common import (
    ConversionSummary,
    DatasetFormatError,
    check_missing_policy,
    check_split,
    finish,
    image_ref,
    prepare_out,
    read_csv,
    text,
)

REPORTS = "meta/curated_ct_report_path_En.csv"
_IMPRESSION = re.compile(
    r"(?:^|\n|(?<=[.:;]) )\s*(?:diagnostic\s+)?(?:impressions?|conclusions?|diagnosis)\s*:\s*", re.IGNORECASE)
_FINDINGS = re.compile(r"^\s*findings\s*:\s*", re.IGNORECASE)
_PATIENT = re.compile(r"sub-[A-Za-z0-9]+")


def report_sections(report: str) -> tuple[str, str]:
    """(findings, impression) of a one-text report, cut at its first impression/conclusion heading."""
    match = _IMPRESSION.search(report)
    findings, impression = (report[: match.start()], report[match.end():]) if match else (report, "")
    return _FINDINGS.sub("", findings).strip(), impression.strip()


def _fraction_of(key: str) -> float:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 2**32


def convert_bimcv_r(src: str | Path, out: str | Path, *, reports: str | Path | None = None,
                    split: str = "train", val_fraction: float = 0.0, missing: str = "error",
                    overwrite: bool = False) -> ConversionSummary:
    """Write the BIMCV-R studies of the dataset folder ``src`` as a manifest at ``out``."""
    from napari_radreport.data.manifest import ManifestRecord
    from napari_radreport.data.regions import split_by_region

    check_missing_policy(missing)
    split = check_split(split)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    out = prepare_out(out, overwrite)
    src = Path(src)
    if not src.is_dir():
        raise DatasetFormatError(f"{src}: no such folder")
    reports = Path(reports) if reports else src / REPORTS
    if not reports.is_file():
        raise DatasetFormatError(f"{src}: no reports CSV at {REPORTS}; pass --reports")
    rows = read_csv(reports, ("path", "Report_en"))
    by_name: dict[str, Path] = {}
    for volume in src.rglob("*.nii.gz"):
        by_name.setdefault(volume.name, volume)

    summary = ConversionSummary(source=str(src))
    records, seen = [], set()
    for line, row in enumerate(rows, start=2):
        original = text(row["path"])
        if not original:
            raise DatasetFormatError(f"{reports}:{line}: empty 'path'")
        name = Path(original.replace("\\", "/")).name
        record_id = name.removesuffix(".nii.gz").removesuffix(".nii")
        if record_id in seen:
            summary.skip("duplicate volume")
            continue
        seen.add(record_id)
        findings, impression = report_sections(text(row["Report_en"]))
        if not findings and not impression:
            summary.skip("no report text")
            continue
        volume = src / original if (src / original).is_file() else by_name.get(name)
        if volume is None:
            if missing == "error":
                raise FileNotFoundError(f"{src}: no volume file {name} (from {reports}:{line}; "
                                        "--missing skip leaves such studies out)")
            summary.skip("volume file missing")
            continue
        patient = _PATIENT.search(name)
        in_val = val_fraction and _fraction_of(patient.group(0) if patient else record_id) < val_fraction
        records.append(ManifestRecord(
            id=record_id, modality="ct", images=[image_ref(volume, out.parent)],
            split="val" if in_val else split, findings=findings, impression=impression,
            regions=split_by_region(findings), source="bimcv-r"))
    return finish(out, records, summary)
