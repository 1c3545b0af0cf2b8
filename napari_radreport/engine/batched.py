"""Batched greedy decoding for ``radreport predict --batch-size N``: several studies' answers per forward
pass, with exactly the tokens one study at a time would choose. No Qt.

How a batch runs (``predict_batch``):

1. **Plan, one study at a time.** ``batch_predict.predict_study`` runs on each study as it always does (scope,
   diagnosis, prompts, multiple choice, diagnosis probabilities), with the engine's runner swapped for a
   ``DeferringRunner``: its ``generate`` runs the prompt (``prefill``, from the study's cached prefix exactly
   as today), keeps a copy of the prompt's key/value cache and its logits, and returns a placeholder instead
   of decoding. Everything else the runner does is the same, so every cache the study's later prompts reuse
   holds the same numbers as one study at a time (the runner crops a cached prefix to the tokens a new prompt
   shares; a new prompt that shares a deferred answer's tokens, not just its prompt's, has that answer decoded
   first, alone, as today).
2. **Decode together.** The deferred answers of the whole batch (every study's report sections, regions and
   free-text answers) decode as one batch: their prompt caches left-padded into one cache, an attention mask
   that hides the padding, each row's own position ids (its prompt length onwards), the same token choice
   (``decoding.TokenChooser``: suppressed tokens, repetition penalty, greedy), each row stopping on its own
   end-of-sequence or ``max_new_tokens``, finished rows dropped from the batch.
3. **Check.** Batched matrix products round differently from one row's. A step whose chosen token leads the
   runner-up by less than ``tie_margin`` (far above that rounding) is not trusted: that answer is decoded
   again alone from its prompt cache, exactly as one study at a time does, and its tokens replace the batched
   ones. Every other step's choice is the one a lone decode makes, so the texts are identical.

Batching needs greedy settings and a model whose decoding steps take plain text positions: ``batch_refusal``
says why a model or settings run one study at a time instead.
"""

from __future__ import annotations

import copy
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# The runner, its caches and torch come with a loaded model; importing this module loads neither.

# How far apart (in logits) the chosen token and the runner-up must be for a batched step to be trusted, by
# the model's dtype: batched and lone decoding differ by about 1e-5 in float32 and 1e-2 in bfloat16.
TIE_MARGINS = {"float32": 1e-3, "float64": 1e-9, "float16": 0.05, "bfloat16": 0.25}


@dataclass
class Deferred:
    """One answer whose prompt has run and whose decoding waits for the batch."""

    number: int
    marker: str  # what the answer's text reads until it is decoded
    key: tuple  # (study key, adapter): the runner's prefix cache it belongs to
    ids: list[int]  # the prompt
    logits: Any  # (vocab,) logits after the prompt: the first token's
    cache: Any  # a copy of the prompt's key/value cache
    entry: Any  # what the runner keeps as the study's prefix (the prompt, its cache): replaced by a later one
    settings: Any
    eos: set[int]
    suppress: tuple[int, ...]
    tokens: list[int] | None = None  # the answer's tokens once decoded
    reason: str = ""  # "eos" or "length"
    alone: bool = False  # decoded alone (a near tie, or a later prompt that shares its tokens)
    text: str = ""
    wanted: bool = True  # False when its study failed after it was deferred


@dataclass
class BatchStats:
    """What one batch did: answers decoded together, those decoded alone, batched decoding steps."""

    batched: int = 0
    alone: int = 0
    steps: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def tie_margin(dtype: Any) -> float:
    """The smallest lead of the chosen token over the runner-up that a batched step may have."""
    return TIE_MARGINS.get(str(dtype).removeprefix("torch."), 0.25)


def batch_refusal(engine, settings) -> str:
    """Why ``engine``'s model with ``settings`` decodes one study at a time; "" when it can batch."""
    runner = engine.runner
    if runner is None:
        return "no model is loaded"
    if settings.do_sample:
        return "sampling settings (do_sample) decode one study at a time"
    if runner.family.name != "radreport":
        return f"{runner.family.name} models decode one study at a time (their image positions are their own)"
    if getattr(runner.model, "peft_config", None):
        return "models with LoRA adapters decode one study at a time"
    layers = runner._new_cache().layers
    if not all(type(layer).__name__ == "DynamicLayer" for layer in layers):
        return "models with sliding-window or recurrent layers decode one study at a time"
    return ""


class DeferringRunner:
    """Mixin over the engine's ``ModelRunner`` class (``deferring`` builds one): ``generate`` runs the prompt
    and defers its decoding; ``prefill`` first decodes alone a deferred answer the new prompt shares tokens
    with. Shares the runner's caches and model."""

    deferred: list[Deferred]
    latest: dict[tuple, Deferred]
    run_id: str

    def generate(self, study, question: str, settings, *, history=(), on_event=None, stop=None):
        """Run the prompt and return a placeholder ``Finished`` whose text is the answer's marker."""
        from napari_radreport.engine.events import Finished, ignore

        t_start = time.perf_counter()
        ids, extra = self.prompt(study, question, history)
        eos = self._eos_ids()
        try:
            logits, cache, timings = self.prefill(study, ids, extra, on_event or ignore)
            item = Deferred(len(self.deferred), f"<<deferred {self.run_id} {len(self.deferred)}>>",
                            (study.key, self.adapter_name()), list(ids), logits[0], copy.deepcopy(cache),
                            None, settings, eos, self._suppressed(eos))
        except BaseException:
            self.forget(study)
            raise
        self.keep(study, ids, cache)
        item.entry = self._prefixes[item.key]
        self.deferred.append(item)
        self.latest[item.key] = item
        timings["total_s"] = time.perf_counter() - t_start
        return Finished(item.marker, "eos", 0, timings, token_ids=[])

    def prefill(self, study, ids: list[int], extra: dict, on_event=None, keep_last: bool = True):
        """The runner's prefill, after decoding alone a deferred answer that ``ids`` would reuse tokens of."""
        from napari_radreport.engine.events import ignore

        key = (study.key, self.adapter_name())
        item = self.latest.get(key)
        current = item is not None and self._prefixes.get(key) is item.entry
        if current and list(ids[:len(item.ids)]) == item.ids:
            fed, cache = self.decode_alone(item)
            self.keep(study, fed, cache)
        return super().prefill(study, ids, extra, on_event or ignore, keep_last)

    def decode_alone(self, item: Deferred) -> tuple[list[int], Any]:
        """Decode ``item`` alone exactly as ``ModelRunner.generate`` does; returns (fed ids, its cache)."""
        from napari_radreport.engine.decoding import TokenChooser

        chooser = TokenChooser(item.settings, self.device, item.suppress)
        cache, logits = item.cache, item.logits  # the prompt's copy, not needed once decoded
        fed, generated, reason = list(item.ids), [], "length"
        while True:
            token = chooser(logits, generated)
            if token in item.eos:
                reason = "eos"
                break
            generated.append(token)
            if len(generated) >= item.settings.max_new_tokens:
                break
            logits = self._forward([token], cache)[0]
            fed.append(token)
        item.tokens, item.reason, item.alone = generated, reason, True
        return fed, cache


def deferring(runner) -> Any:
    """A runner sharing ``runner``'s model and caches whose ``generate`` defers decoding."""
    cls = type(f"Deferring{type(runner).__name__}", (DeferringRunner, type(runner)), {})
    view = copy.copy(runner)
    view.__class__ = cls
    view.deferred, view.latest, view.run_id = [], {}, uuid.uuid4().hex[:12]
    return view


def _left_padded_cache(runner, items: list[Deferred]):
    """One cache holding every item's prompt cache, left-padded to the longest; and its attention mask."""
    import torch

    lengths = [item.cache.get_seq_length() for item in items]
    width = max(lengths)
    merged = runner._new_cache()
    for index in range(len(items[0].cache.layers)):
        keys, values = [], []
        for item, length in zip(items, lengths):
            layer = item.cache.layers[index]
            pad = (0, 0, width - length, 0)
            keys.append(torch.nn.functional.pad(layer.keys, pad))
            values.append(torch.nn.functional.pad(layer.values, pad))
        merged.update(torch.cat(keys), torch.cat(values), index)
    mask = torch.zeros(len(items), width, dtype=torch.long, device=runner.device)
    for row, length in enumerate(lengths):
        mask[row, width - length:] = 1
    return merged, mask, torch.tensor(lengths, device=runner.device)


def _margin(logits, previous: list[int], settings, suppress: tuple[int, ...], token: int) -> float:
    """How far ``token`` leads the runner-up among ``logits`` as the greedy chooser sees them (suppressed
    tokens out, repetition penalty applied); negative when ``token`` is not the largest."""
    import torch

    scores = logits.float().clone()
    if suppress:
        scores[list(suppress)] = float("-inf")
    if settings.repetition_penalty != 1.0 and previous:
        seen = torch.tensor(sorted(set(previous)), device=scores.device)
        values = scores[seen]
        scores[seen] = torch.where(values > 0, values / settings.repetition_penalty,
                                   values * settings.repetition_penalty)
    best = scores[token].item()
    scores[token] = float("-inf")
    return best - scores.max().item()


class _Row:
    """One answer being decoded in the batch: its chooser and tokens so far."""

    def __init__(self, item: Deferred, device) -> None:
        from napari_radreport.engine.decoding import TokenChooser

        self.item = item
        self.chooser = TokenChooser(item.settings, device, item.suppress)
        self.generated: list[int] = []

    def step(self, logits, margin: float | None) -> bool:
        """Choose the next token; True while the row goes on. A step whose choice leads by less than
        ``margin`` hands the item to a lone decode (None: the prompt's logits, exactly a lone decode's)."""
        item = self.item
        token = self.chooser(logits, self.generated)
        if margin is not None and _margin(logits, self.generated, item.settings, item.suppress,
                                          token) < margin:
            item.alone = True
            return False
        if token in item.eos:
            item.tokens, item.reason = self.generated, "eos"
            return False
        self.generated.append(token)
        if len(self.generated) >= item.settings.max_new_tokens:
            item.tokens, item.reason = self.generated, "length"
            return False
        return True


def decode_batch(runner, items: Sequence[Deferred], stop: threading.Event | None = None,
                 stats: BatchStats | None = None) -> None:
    """Decode ``items`` together (module docstring), then alone those with a near tie; fills their tokens."""
    import torch

    stats = stats if stats is not None else BatchStats()
    margin = tie_margin(next(runner.model.parameters()).dtype)
    rows = [_Row(item, runner.device) for item in items if item.tokens is None]
    rows = [row for row in rows if row.step(row.item.logits, None)]
    if rows:
        cache, mask, positions = _left_padded_cache(runner, [row.item for row in rows])
        steps = 0
        while rows:
            if stop is not None and stop.is_set():
                raise InterruptedError("stopped")
            ids = torch.tensor([[row.generated[-1]] for row in rows], device=runner.device)
            mask = torch.cat([mask, mask.new_ones(len(rows), 1)], dim=1)
            with torch.inference_mode():
                out = runner.model(input_ids=ids, attention_mask=mask,
                                   position_ids=(positions + steps)[:, None], past_key_values=cache,
                                   use_cache=True, logits_to_keep=1)
            steps += 1
            going = [i for i, row in enumerate(rows) if row.step(out.logits[i, -1], margin)]
            if len(going) < len(rows):
                index = torch.tensor(going, device=runner.device, dtype=torch.long)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                rows = [rows[i] for i in going]
        stats.steps += steps
    for item in items:
        if item.tokens is None and item.alone:
            runner.decode_alone(item)
            stats.alone += 1
        elif not item.alone:
            stats.batched += 1


def _text(tokenizer, tokens: list[int]) -> str:
    """The text ``ModelRunner.generate`` returns for ``tokens`` (streamed, then ``TextStream.text``)."""
    from napari_radreport.engine.decoding import TextStream

    stream = TextStream(tokenizer)
    for token in tokens:
        stream.push(token)
    return stream.text()


def _filled(value: Any, texts: dict[str, str]) -> Any:
    """``value`` (a prediction) with every marker replaced by its answer's stripped text."""
    if isinstance(value, str):
        if value in texts:
            return texts[value].strip()
        if "<<deferred " in value:
            raise RuntimeError(f"a deferred answer's marker was changed before decoding: {value[:80]!r}")
        return value
    if isinstance(value, dict):
        return {k: _filled(v, texts) for k, v in value.items()}
    if isinstance(value, list):
        return [_filled(v, texts) for v in value]
    return value


class Batcher:
    """Runs batches of studies on one engine (``predict``), keeping between batches the deferred answers whose
    prompts the runner still caches: a later study of the same image may reuse their tokens."""

    def __init__(self, engine) -> None:
        self.engine = engine
        self.latest: dict[tuple, Deferred] = {}
        self.stats = BatchStats()

    def predict(self, records: Sequence,
                predict_one: Callable[[Any], dict[str, Any]]) -> list[dict[str, Any]]:
        """``predict_one(record)`` for each record with its free-text answers decoded as one batch: the same
        predictions as calling it on each record in turn (``batch_refusal`` must be "" for the engine)."""
        engine, runner = self.engine, self.engine.runner
        view = deferring(runner)
        view.latest.update(self.latest)
        predictions: list[dict[str, Any]] = []
        engine.runner = view
        t0 = time.perf_counter()
        try:
            for record in records:
                first = len(view.deferred)
                predictions.append(predict_one(record))
                if "error" in predictions[-1]:
                    for item in view.deferred[first:]:
                        item.wanted = False
            t1 = time.perf_counter()
            wanted = [item for item in view.deferred if item.wanted]
            stop = threading.Event()
            try:
                engine.call(decode_batch, view, wanted, stop, self.stats)
            except KeyboardInterrupt:
                stop.set()
                raise
            seconds = self.stats.seconds
            seconds["plan_s"] = seconds.get("plan_s", 0.0) + t1 - t0
            seconds["decode_s"] = seconds.get("decode_s", 0.0) + time.perf_counter() - t1
        finally:
            engine.runner = runner
            runner.encodings = view.encodings
        self.latest = {key: item for key, item in view.latest.items()
                       if runner._prefixes.get(key) is item.entry}
        texts = {item.marker: _text(runner.loaded.tokenizer, item.tokens) for item in wanted}
        return [_filled(prediction, texts) for prediction in predictions]
