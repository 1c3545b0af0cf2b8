"""F1-CheXbert (RRG24): CheXbert labels both reports, then F1 of the predicted labels against the reference's.

The labeller (Smit et al. 2020) is bert-base-uncased with 14 linear heads on the [CLS] state: 13 conditions
with 4 classes (0 blank, 1 positive, 2 negative, 3 uncertain) and "No Finding" with 2 (blank, positive).
As the RRG24 scorer (``f1chexbert`` 0.0.2, mode "rrg") does: positive and uncertain count 1, blank and
negative 0; text stripped, whitespace runs collapsed, at most 512 tokens; F1 (scikit-learn, zero_division 0)
micro and macro over the 14 conditions and over its 5 (Cardiomegaly, Edema, Consolidation, Atelectasis,
Pleural Effusion), recomputed on the whole set (corpus level). The weights are the public ``chexbert.pth``
(``{"model_state_dict": {"module.bert....", "module.linear_heads.N...."}}``) with a local bert-base-uncased
folder for the tokenizer and configuration; nothing is downloaded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from napari_radreport.evaluation.metric import MetricSpec, MetricUnavailable, check_pairs

CONDITIONS = ("Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
              "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion",
              "Pleural Other", "Fracture", "Support Devices", "No Finding")
FIVE = ("Cardiomegaly", "Edema", "Consolidation", "Atelectasis", "Pleural Effusion")
_FIVE_INDEX = [CONDITIONS.index(c) for c in FIVE]
POSITIVE_CLASSES = (1, 3)  # positive, uncertain


def f1_scores(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """(micro F1, macro F1) of 0/1 label matrices (reports x labels), undefined F1 counted 0."""
    tp = (truth * predicted).sum(axis=0)
    fp = ((1 - truth) * predicted).sum(axis=0)
    fn = (truth * (1 - predicted)).sum(axis=0)
    denominators = 2 * tp + fp + fn
    per_label = np.where(denominators > 0, 2 * tp / np.maximum(denominators, 1), 0.0)
    total = 2 * tp.sum() + fp.sum() + fn.sum()
    return (float(2 * tp.sum() / total) if total else 0.0), float(per_label.mean())


class CheXbertLabeler:
    """The CheXbert labeller from a local chexbert.pth and a bert-base-uncased folder."""

    def __init__(self, checkpoint: str | Path, bert_dir: str | Path, device: str = "auto",
                 batch_size: int = 16):
        self.checkpoint, self.bert_dir = Path(checkpoint), Path(bert_dir)
        if not self.checkpoint.is_file():
            raise MetricUnavailable(
                f"F1-CheXbert: no CheXbert checkpoint at {self.checkpoint} (chexbert.pth)"
            )
        if not (self.bert_dir / "config.json").is_file() or not (self.bert_dir / "vocab.txt").is_file():
            raise MetricUnavailable(f"F1-CheXbert: {self.bert_dir} is not a bert-base-uncased folder "
                                    "(config.json and vocab.txt)")
        self.device_choice, self.batch_size = device, batch_size
        self._loaded = None

    def _load(self):
        if self._loaded is None:
            import torch
            from transformers import BertConfig, BertModel, BertTokenizer

            from napari_radreport.engine.device import resolve_device

            device = resolve_device(self.device_choice)
            tokenizer = BertTokenizer.from_pretrained(str(self.bert_dir), local_files_only=True)
            bert = BertModel(BertConfig.from_pretrained(str(self.bert_dir), local_files_only=True))
            heads = torch.nn.ModuleList([torch.nn.Linear(bert.config.hidden_size, 4) for _ in range(13)]
                                        + [torch.nn.Linear(bert.config.hidden_size, 2)])
            saved = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
            state = {k.removeprefix("module."): v for k, v in saved.get("model_state_dict", saved).items()}
            bert_state = {k.removeprefix("bert."): v for k, v in state.items() if k.startswith("bert.")}
            head_state = {k.removeprefix("linear_heads."): v for k, v in state.items()
                          if k.startswith("linear_heads.")}
            missing = [k for k in bert.state_dict() if k not in bert_state and not k.endswith("position_ids")]
            if missing or len(head_state) != 28:
                raise MetricUnavailable(f"F1-CheXbert: {self.checkpoint} is not a CheXbert checkpoint "
                                        f"({len(missing)} BERT weights missing, "
                                        f"{len(head_state)} of 28 head weights)")
            bert.load_state_dict(bert_state, strict=False)
            heads.load_state_dict(head_state)
            self._loaded = (tokenizer, bert.to(device).eval(), heads.to(device).eval(), device)
        return self._loaded

    def _ids(self, tokenizer, text: str) -> list[int]:
        tokens = tokenizer.tokenize(re.sub(r"\s+", " ", text.strip()).strip())
        if not tokens:
            return [tokenizer.cls_token_id, tokenizer.sep_token_id]
        ids = [tokenizer.cls_token_id, *tokenizer.convert_tokens_to_ids(tokens), tokenizer.sep_token_id]
        return ids[:511] + [tokenizer.sep_token_id] if len(ids) > 512 else ids

    def classes(self, texts: Sequence[str]) -> list[list[int]]:
        """The 14 heads' classes (0 blank, 1 positive, 2 negative, 3 uncertain) for each text."""
        import torch

        tokenizer, bert, heads, device = self._load()
        result: list[list[int]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [self._ids(tokenizer, t) for t in texts[start : start + self.batch_size]]
            width = max(len(ids) for ids in batch)
            ids = torch.tensor([x + [tokenizer.pad_token_id] * (width - len(x)) for x in batch],
                               device=device)
            mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch], device=device)
            with torch.inference_mode():
                cls = bert(ids, attention_mask=mask)[0][:, 0, :]
                result.extend(torch.stack([head(cls).argmax(dim=1) for head in heads], dim=1).tolist())
        return result

    def labels(self, texts: Sequence[str]) -> list[tuple[int, ...]]:
        """0/1 per condition: positive or uncertain is 1 (RRG24's rule)."""
        return [tuple(int(c in POSITIVE_CLASSES) for c in row) for row in self.classes(texts)]


class F1CheXbert:
    """Micro and macro F1 over 14 and 5 CheXbert conditions; item statistics are
    (predicted, reference) labels."""

    def __init__(self, labeler) -> None:
        self.labeler = labeler
        self.spec = MetricSpec("F1-CheXbert",
                               "f1chexbert 0.0.2 'rrg' rules (reimplemented): uncertain = positive",
                               "bert-base-uncased WordPiece, 512 tokens", "lowercased (uncased BERT)",
                               "corpus level (labels of all reports), micro and macro")

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, bert_dir: str | Path,
                        device: str = "auto") -> F1CheXbert:
        return cls(CheXbertLabeler(checkpoint, bert_dir, device=device))

    def item_stats(self, predictions: Sequence[str], references: Sequence[str]) -> list[tuple]:
        check_pairs(predictions, references)
        labels = self.labeler.labels([p.strip() for p in predictions] + [r.strip() for r in references])
        n = len(predictions)
        return [(labels[i], labels[n + i]) for i in range(n)]

    def aggregate(self, stats: Sequence[tuple]) -> dict[str, float]:
        if not stats:
            raise ValueError("no items to score")
        predicted = np.array([s[0] for s in stats], dtype=int)
        truth = np.array([s[1] for s in stats], dtype=int)
        micro14, macro14 = f1_scores(truth, predicted)
        micro5, macro5 = f1_scores(truth[:, _FIVE_INDEX], predicted[:, _FIVE_INDEX])
        return {"F1-CheXbert-14 micro": micro14, "F1-CheXbert-14 macro": macro14,
                "F1-CheXbert-5 micro": micro5, "F1-CheXbert-5 macro": macro5}
