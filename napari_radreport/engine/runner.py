"""Running a loaded model on a study: cached image features, a cached key/value prefix, streamed decoding.

Two caches, both per study:

* image features, keyed by (study, preprocessing signature, and the adapter when it carries its own trained
  perceiver or encoder): a second request never re-encodes;
* the key/value cache of the last prompt (image + question + answer), keyed by (study, adapter): a new
  prompt that starts with the same tokens only runs its new tokens. The cache is cropped to the common
  prefix, so the result equals a run from scratch (tests compare both).
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from napari_radreport.engine import stages
from napari_radreport.engine.decoding import GenerationSettings, TextStream, TokenChooser
from napari_radreport.engine.events import EventCallback, Finished, Progress, Token, ignore
from napari_radreport.engine.stages import Stage


@dataclass
class _Prefix:
    ids: list[int]  # exactly the tokens whose keys/values the cache holds
    cache: Any


def croppable(cache) -> bool:
    """Whether ``crop`` can take ``cache`` back to an earlier length. transformers calls a sliding-window
    layer croppable, but once past its window it has dropped the states a crop needs (and raises)."""
    return cache.is_croppable and all(
        not getattr(layer, "is_sliding", False) or getattr(layer, "record_past", False)
        or layer.get_seq_length() < layer.get_max_length() for layer in cache.layers)


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class ModelRunner:
    """Prompts, prefill and decoding for one ``LoadedModel``; not thread-safe (the engine runs one job).

    What differs between model families (the prompt's ids, how the image goes in, the image token) comes from
    ``loaded.family``; this code is the same for every family.
    """

    def __init__(self, loaded, device: str, max_studies: int = 2):
        self.loaded = loaded
        self.family = loaded.family
        self.model = loaded.model
        self.device = torch.device(device)
        self.max_studies = max_studies
        self._features: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._prefixes: OrderedDict[tuple, _Prefix] = OrderedDict()
        self.image_token_id = self.family.image_token_id
        self.encodings = 0  # how many times an image was encoded (tests and benchmarks read it)
        self._blocks: dict[str, tuple[list, int]] = {}  # "vision_tower"/"language_model" -> stages.blocks

    # -- caches --------------------------------------------------------------------------
    def clear(self) -> None:
        self._features.clear()
        self._prefixes.clear()

    def _remember(self, store: OrderedDict, key: tuple, value: Any) -> None:
        store[key] = value
        store.move_to_end(key)
        while len(store) > self.max_studies:
            store.popitem(last=False)

    def adapter_name(self) -> str:
        peft = getattr(self.model, "peft_config", None)
        if not peft:
            return ""
        active = getattr(self.model, "active_adapters", None)
        names = active() if callable(active) else active
        return ",".join(names or [])

    def _feature_adapter(self) -> str:
        """The active adapter's name when it replaces image modules (peft ``modules_to_save``), else ''."""
        peft = getattr(self.model, "peft_config", None) or {}
        name = self.adapter_name()
        replaces = any(getattr(peft.get(n), "modules_to_save", None) for n in name.split(",") if n)
        return name if replaces else ""

    def blocks(self, root: str) -> tuple[list, int]:
        """``stages.blocks`` of the model (found once): the blocks whose forward hooks count a stage's
        progress, and how many one forward runs."""
        if root not in self._blocks:
            self._blocks[root] = stages.blocks(self.model, root)
        return self._blocks[root]

    # -- prompt ---------------------------------------------------------------------------
    def prompt(self, study, question: str, history=()) -> tuple[list[int], dict]:
        """Prompt ids and the image inputs built with them ({} where the runner encodes the image itself)."""
        return self.family.build_prompt(study, question, history)

    def image_features(self, study, on_event: EventCallback = ignore,
                       timings: dict[str, float] | None = None) -> torch.Tensor:
        """The study's encoded image (cached); ``timings`` gets preprocess_s and encode_s when it runs."""
        key = (study.key, self.family.preprocess.signature, self._feature_adapter())
        if key in self._features:
            self._features.move_to_end(key)
            return self._features[key]
        Stage(on_event, "preprocess", "Preparing the image")
        t0 = time.perf_counter()
        pixels = self.family.pixel_values(study).to(self.device)
        t1 = time.perf_counter()
        tower, count = self.blocks("vision_tower")
        encode = Stage(on_event, "encode", "Encoding the image", total=count, unit="blocks")
        with stages.hooked(tower, encode.counter()), torch.inference_mode():
            features = self.model.get_image_features(pixels)
        encode.finish()
        # transformers' models return an output object: keep only the projected features (not the tower's
        # last hidden state, several times larger)
        features = getattr(features, "pooler_output", features)
        if timings is not None:
            timings.update(preprocess_s=t1 - t0, encode_s=time.perf_counter() - t1)
        self.encodings += 1
        self._remember(self._features, key, features)
        return features

    # -- forward --------------------------------------------------------------------------
    def _new_cache(self):
        from transformers import DynamicCache

        config = getattr(self.model.config, "text_config", self.model.config)
        return DynamicCache(config=config)

    def _forward(self, ids: list[int] | torch.Tensor, cache, **image_inputs) -> torch.Tensor:
        ids = torch.as_tensor(ids, device=self.device).reshape(1, -1) if not torch.is_tensor(ids) else ids
        with torch.inference_mode():
            out = self.model(input_ids=ids.to(self.device), past_key_values=cache, use_cache=True,
                             logits_to_keep=1, **image_inputs)
        return out.logits[:, -1]

    def _image_inputs(self, study, extra: dict, on_event: EventCallback, timings: dict[str, float]) -> dict:
        """The family's image inputs for the forward pass, on this device (encoded and cached if it asks)."""
        inputs = self.family.image_inputs(extra, lambda: self.image_features(study, on_event, timings))
        return {k: v.to(self.device) if torch.is_tensor(v) else v for k, v in inputs.items()}

    def prefill(self, study, ids: list[int], extra: dict, on_event: EventCallback = ignore,
                keep_last: bool = True):
        """Run ``ids`` through the model, reusing the study's cached prefix; returns (logits, cache, timings).

        With ``keep_last`` at least one token is run, so logits for the next token exist.
        """
        timings: dict[str, float] = {}
        key = (study.key, self.adapter_name())
        entry = self._prefixes.pop(key, None)
        cache, start = self._new_cache(), 0
        last_image = max((i for i, t in enumerate(ids) if t == self.image_token_id), default=-1)
        if entry is not None:
            shared = common_prefix_length(entry.ids, ids)
            shared = min(shared, len(ids) - 1) if keep_last else shared
            length = entry.cache.get_seq_length()
            if shared > last_image and (shared == length or croppable(entry.cache)):
                if shared < length:
                    entry.cache.crop(shared - length)
                cache, start = entry.cache, shared
        image_inputs = {}
        if start == 0 and last_image >= 0:
            t0 = time.perf_counter()
            image_inputs = self._image_inputs(study, extra, on_event, timings)
            image_inputs.update({k: v.to(self.device) for k, v in self.family.token_inputs(ids).items()})
            timings["image_s"] = time.perf_counter() - t0
        layers, count = self.blocks("language_model") if start < len(ids) else ([], 0)
        tokens = f"{len(ids) - start} new of {len(ids)} tokens" if start else f"{len(ids)} tokens"
        prefill = Stage(on_event, "prefill", f"Reading the prompt ({tokens})", total=count, unit="layers")
        t0 = time.perf_counter()
        with stages.hooked(layers, prefill.counter()):
            logits = self._forward(ids[start:], cache, **image_inputs) if start < len(ids) else None
        prefill.finish()
        timings["prefill_s"] = time.perf_counter() - t0
        timings["prefill_tokens"] = float(len(ids) - start)
        return logits, cache, timings

    def keep(self, study, ids: list[int], cache) -> None:
        """Store ``cache`` (holding exactly ``ids``) as the study's prefix for the next prompt."""
        assert cache.get_seq_length() == len(ids), (cache.get_seq_length(), len(ids))
        self._remember(self._prefixes, (study.key, self.adapter_name()), _Prefix(list(ids), cache))

    def forget(self, study) -> None:
        for key in [k for k in self._prefixes if k[0] == study.key]:
            del self._prefixes[key]

    # -- tasks ----------------------------------------------------------------------------
    def generate(self, study, question: str, settings: GenerationSettings, *, history=(),
                 on_event: EventCallback = ignore, stop=None) -> Finished:
        """Stream an answer token by token; ``stop`` (a threading.Event) ends it before the next step."""
        t_start = time.perf_counter()
        ids, extra = self.prompt(study, question, history)
        eos = self._eos_ids()
        try:
            logits, cache, timings = self.prefill(study, ids, extra, on_event)
            on_event(Progress("decode", "Writing", elapsed_s=0.0))
            chooser = TokenChooser(settings, self.device, self._suppressed(eos))
            stream = TextStream(self.loaded.tokenizer)
            fed, generated, reason = list(ids), [], "length"
            t_decode = time.perf_counter()
            while True:
                if stop is not None and stop.is_set():
                    reason = "stopped"
                    break
                token = chooser(logits[0], generated)
                if token in eos:
                    reason = "eos"
                    break
                generated.append(token)
                if len(generated) == 1:
                    timings["first_token_s"] = time.perf_counter() - t_start
                elapsed = max(time.perf_counter() - t_decode, 1e-9)
                rate = (len(generated) - 1) / elapsed if len(generated) > 1 else 0.0
                on_event(Token(token, stream.push(token), len(generated), rate))
                if len(generated) >= settings.max_new_tokens:
                    break
                if len(generated) == 1:
                    t_decode = time.perf_counter()
                logits = self._forward([token], cache)
                fed.append(token)
        except BaseException:
            self.forget(study)  # a half-updated cache must not be reused
            raise
        self.keep(study, fed, cache)
        steps = max(len(generated) - 1, 0)
        timings["decode_s"] = time.perf_counter() - t_decode
        timings["tokens_per_s"] = steps / timings["decode_s"] if steps else 0.0
        timings["total_s"] = time.perf_counter() - t_start
        return Finished(stream.text(), reason, len(generated), timings, token_ids=list(generated))

    def next_token_logprobs(self, study, questions: list[str], *, batch_size: int = 18,
                            on_event: EventCallback = ignore, stop=None) -> torch.Tensor:
        """(len(questions), vocab) log-probabilities of the first answer token of each question.

        The tokens all prompts share (image included) run once; the differing tails run as a batch
        over copies of that prefix cache, in chunks of ``batch_size``.
        """
        built = [self.prompt(study, q) for q in questions]
        prompts, extra = [ids for ids, _ in built], built[0][1]
        shared = min(common_prefix_length(prompts[0], p) for p in prompts)
        shared = min(shared, min(len(p) for p in prompts) - 1)  # every prompt keeps a tail to run
        tails = [p[shared:] for p in prompts]
        rows = self._run_tails(study, prompts[0][:shared], extra, tails, batch_size, on_event, stop,
                               "questions", every_position=False)
        return torch.stack([logprobs for _, logprobs in rows])

    def answer_logprobs(self, study, question: str, answers: list[str], *, batch_size: int = 18,
                        on_event: EventCallback = ignore, stop=None) -> torch.Tensor:
        """(len(answers),) log-probability that the reply to ``question`` is exactly each answer: its tokens,
        then any token ``generate`` stops at (``_eos_ids``: a chat model's end of turn, as Gemma 3's
        <end_of_turn> or Llama 3's <|eot_id|>, besides <eos>). The prompt runs once, the answers as a batch
        over copies of its cache."""
        ids, extra = self.prompt(study, question)
        tokenizer, ends = self.loaded.tokenizer, sorted(self._eos_ids())
        # each tail starts with the prompt's last token, whose logits give the first answer token's odds
        tails = [ids[-1:] + tokenizer(a, add_special_tokens=False)["input_ids"] for a in answers]
        scores = []
        for tail, logprobs in self._run_tails(study, ids[:-1], extra, tails, batch_size, on_event, stop,
                                              "answers", every_position=True):
            targets = torch.tensor(tail[1:])
            said = logprobs[torch.arange(len(targets)), targets].sum()
            scores.append(said + logprobs[len(tail) - 1, ends].logsumexp(0))
        return torch.stack(scores)

    def _run_tails(self, study, prefix: list[int], extra: dict, tails: list[list[int]], batch_size: int,
                   on_event: EventCallback, stop, what: str, *, every_position: bool):
        """(tail, log-probabilities of the next token) for each tail run after ``prefix``: (len(tail), vocab)
        after each of its tokens with ``every_position``, else (vocab,) after its last. The prefix (image
        included) runs once and is kept as the study's cached prefix."""
        try:
            _, cache, _ = self.prefill(study, prefix, extra, on_event, keep_last=False)
            self.keep(study, prefix, cache)
            pad = self.loaded.tokenizer.pad_token_id or 0
            out = []
            asking = Stage(on_event, "diagnose", "Asking the model", total=len(tails), unit=what)
            for begin in range(0, len(tails), batch_size):
                if stop is not None and stop.is_set():
                    raise InterruptedError("stopped")
                chunk = tails[begin:begin + batch_size]
                asking.advance(begin)
                width = max(len(t) for t in chunk)
                batch = torch.tensor([t + [pad] * (width - len(t)) for t in chunk], device=self.device)
                copy_cache = copy.deepcopy(cache)
                copy_cache.batch_repeat_interleave(len(chunk))
                with torch.inference_mode():  # right padding: real tokens never attend to the pads after them
                    logits = self.model(input_ids=batch, past_key_values=copy_cache, use_cache=True).logits
                for row, tail in enumerate(chunk):
                    kept = logits[row, :len(tail)] if every_position else logits[row, len(tail) - 1]
                    out.append((tail, torch.log_softmax(kept.float(), dim=-1).cpu()))
                del copy_cache
            asking.finish()
        except BaseException:
            self.forget(study)
            raise
        return out

    def _suppressed(self, eos: set[int]) -> tuple[int, ...]:
        """Image placeholder, BOS, padding, unknown: never part of an answer (unless one doubles as EOS)."""
        tokenizer = self.loaded.tokenizer
        ids = {self.image_token_id, tokenizer.bos_token_id, tokenizer.pad_token_id, tokenizer.unk_token_id}
        return tuple(sorted(i for i in ids if i is not None and i not in eos))

    def _eos_ids(self) -> set[int]:
        ids: set[int] = set()
        for source in (self.model.generation_config, getattr(self.model.config, "text_config", None),
                       self.loaded.tokenizer):
            value = getattr(source, "eos_token_id", None)
            if value is not None:
                ids.update(value if isinstance(value, (list, tuple)) else [value])
        return ids

