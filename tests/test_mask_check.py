"""radreport dataset check-masks: which way a ReXGroundingCT-style release's masks lie on their volumes,
read off phantoms written as such a release, once as drawn and once with the first two stored axes flipped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_radreport.data.phantoms import anatomy
from napari_radreport.data.phantoms.generate import phantom_with_labels

CHANNELS = {"Lung nodule": "2d", "Consolidation": "2b", "Pleural effusion (right)": "2e",
            "Pleural effusion (left)": "2e"}  # phantom label -> ReXGroundingCT category


def _write(path, array, affine):
    import nibabel

    path.parent.mkdir(parents=True, exist_ok=True)
    nibabel.save(nibabel.Nifti1Image(array, affine), str(path))


def _release(root, *, flip_masks: bool, count: int = 3):
    """Phantoms as CT-RATE volumes with ReXGroundingCT's dataset.json and one channel per finding drawn."""
    studies, index = [], 0
    while len(studies) < count:
        index += 1
        _record, volume, labels = phantom_with_labels(index, 7, "train")
        drawn = [label for label in CHANNELS if (labels == anatomy.MASK_LABELS[label]).any()]
        if not drawn:
            continue
        name = f"train_{index}_a_1.nii.gz"
        folder = root / "ct" / "train_fixed" / f"train_{index}" / f"train_{index}_a"
        _write(folder / name, np.round(volume).astype(np.int16), anatomy.nifti_affine())
        mask = np.stack([labels == anatomy.MASK_LABELS[label] for label in drawn]).astype(np.uint8)
        if flip_masks:
            mask = np.flip(mask, axis=(1, 2))  # the first two stored axes of each channel
        _write(root / "rex" / "segmentations" / name, np.ascontiguousarray(mask), np.eye(4))
        studies.append({"name": name, "findings": {str(i): label for i, label in enumerate(drawn)},
                        "categories": {str(i): CHANNELS[label] for i, label in enumerate(drawn)},
                        "shape": list(volume.shape)})
    (root / "rex" / "dataset.json").write_text(json.dumps({"train": studies, "val": [], "test": []}))
    return root / "rex", root / "ct"


@pytest.mark.parametrize("flip_masks", [False, True])
def test_the_check_finds_how_the_masks_lie_and_says_what_to_convert_with(tmp_path, capsys, flip_masks):
    from napari_radreport.cli import main
    from napari_radreport.data.adapters import convert_rexgroundingct
    from napari_radreport.data.manifest import read_manifest
    from napari_radreport.data.mask_check import check_mask_orientation

    src, volumes = _release(tmp_path, flip_masks=flip_masks)
    convert_rexgroundingct(src, tmp_path / "m.jsonl", volumes=volumes)
    result = check_mask_orientation(read_manifest(tmp_path / "m.jsonl"))
    assert result.records == 3 and result.masks >= 3
    assert result.clear and result.best.flip_axes == ((0, 1) if flip_masks else ())
    assert result.best.median_hu > -300  # dense findings under the masks, where they were drawn
    assert main(["dataset", "check-masks", str(tmp_path / "m.jsonl")]) == 0
    said = capsys.readouterr().out
    if flip_masks:
        assert "the masks likely need flip_axes [0, 1]" in said and "--mask-flip-axes 0 1" in said
        convert_rexgroundingct(src, tmp_path / "f.jsonl", volumes=volumes, mask_flip_axes=(0, 1))
        fixed = check_mask_orientation(read_manifest(tmp_path / "f.jsonl"))
        assert fixed.verdict().startswith("the manifest's orientation (flip_axes [0, 1]) is the likely one")
    else:
        assert "the manifest's orientation (no flip) is the likely one" in said


def test_a_manifest_without_channel_masks_says_there_is_nothing_to_check(tmp_path, capsys):
    from napari_radreport.cli import main
    from napari_radreport.data.phantoms.generate import write_phantoms

    manifest = write_phantoms(tmp_path, 2, seed=3, val=0.0, test=0.0)  # label-map masks, not channels
    assert main(["dataset", "check-masks", str(manifest)]) == 0
    assert "records read: 0" in capsys.readouterr().out
