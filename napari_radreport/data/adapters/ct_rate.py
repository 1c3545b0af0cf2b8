"""CT-RATE (non-contrast chest CT volumes, English reports, 18 abnormality labels) -> training manifest.

Assumed layout: the ``dataset/`` folder of the Hugging Face dataset ``ibrahimhamamci/CT-RATE`` (dataset card;
the file and column names are those read by the authors' CT-CLIP scripts,
github.com/ibrahimethemhamamci/CT-CLIP)::

    dataset/
      radiology_text_reports/train_reports.csv, validation_reports.csv
          VolumeName, ClinicalInformation_EN, Technique_EN, Findings_EN, Impressions_EN
      multi_abnormality_labels/train_predicted_labels.csv, valid_predicted_labels.csv
          VolumeName + the 18 labels of modeling.prompt_spec.CT_RATE_LABELS (0/1)
      metadata/train_metadata.csv, validation_metadata.csv
          VolumeName, ..., RescaleSlope, RescaleIntercept, ...
      train_fixed/train_1/train_1_a/train_1_a_1.nii.gz    valid_fixed/valid_1/valid_1_a/valid_1_a_1.nii.gz
      (first release: train/ and valid/, same nesting)

The volume path comes from the VolumeName: ``<split>_<patient>_<scan>_<reconstruction>.nii.gz`` lies in
``<split>_<patient>/<split>_<patient>_<scan>/``.

**HU.** The corrected ("fixed", CT-RATE v2) volumes already hold Hounsfield units, so by default no
``hu_rescale`` is written. The first release stored raw values; for those files only, ``raw_volumes=True``
(``--raw-volumes``) copies RescaleSlope/RescaleIntercept from the metadata CSV into ``hu_rescale``. Applying
them to the fixed files would rescale twice (CT-CLIP issues #28 and #50 describe both cases), so
``raw_volumes`` together with a ``*_fixed`` volume folder is refused.
"""

from __future__ import annotations

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

_FILES = {  # split -> (reports, labels, metadata, volume folders in order of preference)
    "train": ("radiology_text_reports/train_reports.csv",
              "multi_abnormality_labels/train_predicted_labels.csv",
              "metadata/train_metadata.csv", ("train_fixed", "train")),
    "val": ("radiology_text_reports/validation_reports.csv",
            "multi_abnormality_labels/valid_predicted_labels.csv",
            "metadata/validation_metadata.csv", ("valid_fixed", "valid")),
}


def _find(src: Path, relative: str, what: str, option: str) -> Path:
    candidates = [base / relative for base in (src, src / "dataset")]
    candidates += [base / Path(relative).name for base in (src, src / "dataset")]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise DatasetFormatError(
        f"{src}: no {what} found (looked for {relative} and dataset/{relative}); pass {option}"
    )


def _volume_dir(src: Path, names: tuple[str, ...], raw_volumes: bool) -> Path:
    order = tuple(reversed(names)) if raw_volumes else names
    for base in (src, src / "dataset"):
        for name in order:
            if (base / name).is_dir():
                return base / name
    raise DatasetFormatError(
        f"{src}: no volume folder found (looked for {' or '.join(names)}); pass --volumes"
    )


def volume_path(volumes: Path, volume_name: str) -> Path:
    """Where CT-RATE keeps a volume: train_1_a_1.nii.gz -> volumes/train_1/train_1_a/train_1_a_1.nii.gz."""
    parts = volume_name.removesuffix(".nii.gz").split("_")
    if len(parts) < 4 or not all(parts):
        raise ValueError(f"VolumeName {volume_name!r} is not of the form <split>_<patient>_<scan>_<n>.nii.gz")
    return volumes / "_".join(parts[:2]) / "_".join(parts[:3]) / volume_name


def _labels(path: Path) -> dict[str, dict[str, int]]:
    from napari_radreport.modeling.prompt_spec import CT_RATE_LABELS

    labels = {}
    for line, row in enumerate(read_csv(path, ("VolumeName", *CT_RATE_LABELS)), start=2):
        values = {}
        for label in CT_RATE_LABELS:
            try:
                value = float(row[label])
            except (TypeError, ValueError):
                value = None
            if value not in (0.0, 1.0):
                raise DatasetFormatError(
                    f"{path}:{line}: column {label!r} must be 0 or 1, got {row[label]!r}"
                )
            values[label] = int(value)
        labels[text(row["VolumeName"])] = values
    return labels


def _rescale(path: Path) -> dict[str, tuple[float, float]]:
    rescale = {}
    for line, row in enumerate(read_csv(path, ("VolumeName", "RescaleSlope", "RescaleIntercept")), start=2):
        try:
            rescale[text(row["VolumeName"])] = (float(row["RescaleSlope"]), float(row["RescaleIntercept"]))
        except (TypeError, ValueError):
            raise DatasetFormatError(f"{path}:{line}: RescaleSlope/RescaleIntercept are not numbers "
                                     f"({row['RescaleSlope']!r}, {row['RescaleIntercept']!r})") from None
    return rescale


def convert_ct_rate(src: str | Path, out: str | Path, *, split: str = "train",
                    reports: str | Path | None = None, labels: str | Path | None = None,
                    metadata: str | Path | None = None, volumes: str | Path | None = None,
                    raw_volumes: bool = False, missing: str = "error",
                    overwrite: bool = False) -> ConversionSummary:
    """Write one CT-RATE split (``train`` or ``val``) of the dataset folder ``src`` as a manifest at ``out``.

    ``reports``, ``labels``, ``metadata`` and ``volumes`` override the files found in ``src``; ``metadata`` is
    read only with ``raw_volumes``. ``missing="skip"`` leaves out studies whose volume file is absent (counted
    in the summary) instead of failing on the first one. ``regions`` are filled from the findings by the
    region splitter.
    """
    from napari_radreport.data.manifest import ManifestRecord
    from napari_radreport.data.regions import split_by_region

    check_missing_policy(missing)
    split = check_split(split, ("train", "val"))
    out = prepare_out(out, overwrite)
    src = Path(src)
    if not src.is_dir():
        raise DatasetFormatError(f"{src}: no such folder")
    reports_rel, labels_rel, metadata_rel, volume_names = _FILES[split]
    reports = Path(reports) if reports else _find(src, reports_rel, "reports CSV", "--reports")
    labels = Path(labels) if labels else _find(src, labels_rel, "labels CSV", "--labels")
    volumes = Path(volumes) if volumes else _volume_dir(src, volume_names, raw_volumes)
    if not volumes.is_dir():
        raise DatasetFormatError(f"{volumes}: no such volume folder")
    if raw_volumes and volumes.name.endswith("_fixed"):
        raise DatasetFormatError(f"{volumes}: the *_fixed volumes are already in HU; "
                                 "raw_volumes (--raw-volumes) would rescale them twice")
    rows = read_csv(reports, ("VolumeName", "Findings_EN", "Impressions_EN"))
    label_rows = _labels(labels)
    rescale = None
    if raw_volumes:
        rescale = _rescale(Path(metadata) if metadata
                           else _find(src, metadata_rel, "metadata CSV", "--metadata"))

    summary = ConversionSummary(source=str(src))
    records, seen = [], set()
    for line, row in enumerate(rows, start=2):
        name = text(row["VolumeName"])
        if not name.endswith(".nii.gz"):
            name += ".nii.gz"
        try:
            path = volume_path(volumes, name)
        except ValueError as exc:
            raise DatasetFormatError(f"{reports}:{line}: {exc}") from None
        if name in seen:
            summary.skip("duplicate VolumeName")
            continue
        seen.add(name)
        findings, impression = text(row["Findings_EN"]), text(row["Impressions_EN"])
        if not findings and not impression:
            summary.skip("no findings or impression")
            continue
        if not path.is_file():
            if missing == "error":
                raise FileNotFoundError(
                    f"{path}: volume file of {name} does not exist (--missing skip leaves such studies out)"
                )
            summary.skip("volume file missing")
            continue
        hu_rescale = None
        if rescale is not None:
            hu_rescale = rescale.get(name) or rescale.get(name.removesuffix(".nii.gz"))
            if hu_rescale is None:
                if missing == "error":
                    raise DatasetFormatError(
                        f"{name}: no RescaleSlope/RescaleIntercept row in the metadata CSV"
                    )
                summary.skip("no rescale metadata")
                continue
        study_labels = label_rows.get(name) or label_rows.get(name.removesuffix(".nii.gz"))
        if study_labels is None:
            summary.note("studies without a labels row (labels left empty)")
        records.append(ManifestRecord(
            id=name.removesuffix(".nii.gz"), modality="ct", images=[image_ref(path, out.parent)], split=split,
            findings=findings, impression=impression, regions=split_by_region(findings),
            labels=study_labels or {}, hu_rescale=hu_rescale, source="ct-rate"))
    return finish(out, records, summary)
