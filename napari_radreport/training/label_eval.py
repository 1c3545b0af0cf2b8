"""What a ``--stage labels`` run learned: each label's AUROC and balanced accuracy on the validation studies.

Written next to the weights as ``label_scores.json`` and logged at the end of the run, so the engineer sees
which findings the vision side already separates before a report run starts from it (a label at AUROC 0.5 is
one the language model will not be able to read from the image either).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from napari_radreport.data.label_scores import label_scores
from napari_radreport.training.labels import MISSING


def classifier_scores(classifier, dataset, names: list[str],
                      batch_size: int = 8) -> dict[str, dict[str, Any]]:
    """Per label, the label classifier's AUROC, balanced accuracy at P = 0.5, studies and positives, over the
    studies that give the label."""
    was_training = classifier.training
    classifier.eval()
    device = next(classifier.parameters()).device
    probabilities, targets = [], []
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            pixels = torch.cat([item["pixel_values"] for item in items]).to(device)
            probabilities.append(torch.sigmoid(classifier(pixels).float()).cpu())
            targets.append(torch.stack([item["labels"] for item in items]))
    classifier.train(was_training)
    if not probabilities:
        return {}
    p, y = torch.cat(probabilities).numpy(), torch.cat(targets).numpy()
    out: dict[str, dict[str, Any]] = {}
    for j, name in enumerate(names):
        given = y[:, j] != MISSING
        truth, scores = y[given, j].astype(int), p[given, j]
        positives = int(truth.sum())
        row: dict[str, Any] = {"studies": int(given.sum()), "positives": positives}
        if 0 < positives < len(truth):  # AUROC and balanced accuracy need both classes
            found = label_scores(truth, scores)
            row.update({"AUROC": round(found["AUROC"], 4),
                        "balanced accuracy": round(found["balanced accuracy"], 4)})
        out[name] = row
    return out


def write_label_scores(scores: dict[str, dict[str, Any]], out: Path) -> str:
    """Save ``label_scores.json`` in ``out``; return a one-line summary for the log."""
    (Path(out) / "label_scores.json").write_text(json.dumps(scores, indent=1))
    parts = [f"{name} {row['AUROC']:.3f}" for name, row in scores.items() if "AUROC" in row]
    return "validation AUROC: " + (", ".join(parts) if parts else "not computed (a label needs both classes)")
