"""F1-CheXbert: the F1s against scikit-learn, and the labeller on a tiny random BERT in
chexbert.pth's layout."""

from __future__ import annotations

import numpy as np
import pytest

from napari_radreport.evaluation.chexbert import CONDITIONS, CheXbertLabeler, F1CheXbert, f1_scores
from napari_radreport.evaluation.metric import MetricUnavailable


def test_f1_scores_match_scikit_learn():
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(2)
    truth = (rng.random((30, 14)) < 0.3).astype(int)
    predicted = (rng.random((30, 14)) < 0.3).astype(int)
    truth[:, 3] = predicted[:, 3] = 0  # a label nobody has: F1 0, as zero_division=0
    micro, macro = f1_scores(truth, predicted)
    assert micro == pytest.approx(f1_score(truth, predicted, average="micro", zero_division=0), abs=1e-9)
    assert macro == pytest.approx(f1_score(truth, predicted, average="macro", zero_division=0), abs=1e-9)


class FixedLabeler:
    def __init__(self, table):
        self.table = table

    def labels(self, texts):
        return [self.table[t] for t in texts]


def test_metric_scores_five_and_fourteen_labels():
    def vector(*names):
        return tuple(int(c in names) for c in CONDITIONS)

    table = {"a": vector("Cardiomegaly", "Fracture"), "A": vector("Cardiomegaly"),
             "b": vector("Edema"), "B": vector("Edema", "Pleural Effusion")}
    metric = F1CheXbert(FixedLabeler(table))
    scores = metric.aggregate(metric.item_stats(["a", "b"], ["A", "B"]))
    # 14 labels: tp 2 (cardiomegaly, edema), fp 1 (fracture), fn 1 (effusion): micro 4/6
    assert scores["F1-CheXbert-14 micro"] == pytest.approx(4 / 6)
    # macro over 14: cardiomegaly 1, edema 1, others 0 -> 2/14
    assert scores["F1-CheXbert-14 macro"] == pytest.approx(2 / 14)
    # 5 labels: fracture is not among them: tp 2, fn 1 -> 4/5; macro (1 + 1 + 0 + 0 + 0) / 5
    assert scores["F1-CheXbert-5 micro"] == pytest.approx(4 / 5)
    assert scores["F1-CheXbert-5 macro"] == pytest.approx(2 / 5)


@pytest.fixture(scope="module")
def tiny_chexbert(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertModel

    folder = tmp_path_factory.mktemp("chexbert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "pleural", "effusion", "heart", "is",
             "enlarged", "mild", "edema", ".", ","]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=600)
    config.save_pretrained(folder)
    torch.manual_seed(0)
    bert = BertModel(config)
    heads = torch.nn.ModuleList([torch.nn.Linear(16, 4) for _ in range(13)] + [torch.nn.Linear(16, 2)])
    state = {f"module.bert.{k}": v for k, v in bert.state_dict().items()}
    state.update({f"module.linear_heads.{k}": v for k, v in heads.state_dict().items()})
    torch.save({"epoch": 3, "model_state_dict": state}, folder / "chexbert.pth")
    return folder, bert, heads


def test_labeller_reads_the_released_layout(tiny_chexbert):
    import torch

    folder, bert, heads = tiny_chexbert
    labeler = CheXbertLabeler(folder / "chexbert.pth", folder, device="cpu", batch_size=2)
    texts = ["No pleural effusion.", "  heart is\n enlarged ,  mild edema .", ""]
    classes = labeler.classes(texts)
    assert len(classes) == 3 and all(len(row) == 14 for row in classes)
    assert all(0 <= c <= 3 for row in classes for c in row[:13]) and all(row[13] in (0, 1) for row in classes)
    # the same as running the saved weights by hand on one text, unpadded
    tokens = ["[CLS]", "heart", "is", "enlarged", ",", "mild", "edema", ".", "[SEP]"]
    ids = torch.tensor([[(folder / "vocab.txt").read_text().split("\n").index(t) for t in tokens]])
    with torch.inference_mode():
        cls = bert.eval()(ids)[0][:, 0, :]
        by_hand = [int(head(cls).argmax()) for head in heads]
    assert classes[1] == by_hand
    labels = labeler.labels(texts)
    assert labels[1] == tuple(int(c in (1, 3)) for c in by_hand)


def test_missing_or_wrong_checkpoint_is_a_clear_error(tiny_chexbert, tmp_path):
    import torch

    folder, _, _ = tiny_chexbert
    with pytest.raises(MetricUnavailable, match="no CheXbert checkpoint"):
        CheXbertLabeler(tmp_path / "chexbert.pth", folder)
    with pytest.raises(MetricUnavailable, match="not a bert-base-uncased folder"):
        CheXbertLabeler(folder / "chexbert.pth", tmp_path)
    torch.save({"model_state_dict": {"module.other.weight": torch.zeros(1)}}, tmp_path / "bad.pth")
    with pytest.raises(MetricUnavailable, match="not a CheXbert checkpoint"):
        CheXbertLabeler(tmp_path / "bad.pth", folder, device="cpu").labels(["x"])


def test_rrg24_preset_scores_chexbert_with_local_weights(tiny_chexbert):
    from napari_radreport.data.manifest import ManifestRecord
    from napari_radreport.evaluation.presets import ModelPaths, build_blocks
    from napari_radreport.evaluation.scoring import BootstrapSettings, score_blocks

    folder, _, _ = tiny_chexbert
    records = [ManifestRecord(id=f"r{i}", modality="xray", images=["x.png"], findings=t)
               for i, t in enumerate(["No pleural effusion.", "Heart is enlarged.", "Mild edema."])]
    predictions = {r.id: {"findings": r.findings} for r in records}  # perfect copies
    paths = ModelPaths(chexbert=str(folder / "chexbert.pth"), chexbert_bert=str(folder), device="cpu")
    [findings, _] = score_blocks(build_blocks("rrg24", records, predictions, paths),
                                 BootstrapSettings(resamples=0))
    scores = {row["name"]: row["value"] for row in findings["scores"]}
    labels = CheXbertLabeler(folder / "chexbert.pth", folder, device="cpu").labels(
        [r.findings for r in records])
    expected = 1.0 if any(any(v) for v in labels) else 0.0  # copies: every predicted label is right
    assert scores["F1-CheXbert-14 micro"] == expected
    assert "F1-CheXbert" not in {row["metric"] for row in findings["not_computed"]}
