"""napari sample data: a real abdominal CT and a real chest radiograph shipped in the package, and a synthetic
chest CT phantom made on first use (what the demo model was made for)."""

from __future__ import annotations

from pathlib import Path

SAMPLES = Path(__file__).parent / "samples"
SAMPLE_CT = SAMPLES / "totalseg_abdomen_pelvis.nii.gz"
SAMPLE_XRAY = SAMPLES / "nih_00000001_000_cardiomegaly.png"
CT_ATTRIBUTION = "TotalSegmentator test CT (Apache-2.0), Wasserthal J, et al. Radiology: AI 2023"
XRAY_ATTRIBUTION = "NIH ChestX-ray14, courtesy of the NIH Clinical Center; Wang X, et al. CVPR 2017"
PHANTOM_ATTRIBUTION = "synthetic chest CT phantom made by napari-radreport (not a patient)"
PHANTOM_SEED = 2026


def _layers(path: Path, attribution: str, modality: str | None = None) -> list:
    from napari_radreport.io import load_study

    study = load_study(path, modality=modality)
    study.extra["attribution"] = attribution
    return study.to_layer_data()


def sample_ct() -> list:
    """Abdomen-pelvis CT, 3 mm isotropic, HU (TotalSegmentator test data)."""
    return _layers(SAMPLE_CT, CT_ATTRIBUTION, modality="CT")


def sample_phantom() -> list:
    """A synthetic chest CT phantom (``radreport phantoms``), written once into the cache folder."""
    from napari_radreport.data.phantoms.generate import phantom_record, write_nifti
    from napari_radreport.paths import cache_dir

    path = cache_dir() / "samples" / f"phantom-seed{PHANTOM_SEED}.nii.gz"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_nifti(path, phantom_record(0, PHANTOM_SEED, "test")[1])
    return _layers(path, PHANTOM_ATTRIBUTION, modality="CT")


def sample_xray() -> list:
    """Frontal chest radiograph labelled cardiomegaly (NIH ChestX-ray14)."""
    return _layers(SAMPLE_XRAY, XRAY_ATTRIBUTION)
