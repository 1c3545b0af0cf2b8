"""Steps 4-6: generation, follow-up questions and 18-label diagnosis through the engine,
each beside its baseline.

* Generation: the engine's streaming path (a background job whose token events a consumer drains, as the
  docks do) vs ``model.generate`` on the same prompt and cached image features, both greedy, same tokens.
  Decoding speed is (N - 1) / (time for N tokens - time for 1 token), so the prompt's cost cancels out.
  Time to the first token of a report is split into load, preprocess, encode, prefill (and choosing it).
* Follow-up: latency of a second question with the study's cached image and key/value prefix vs recomputing
  everything (preprocess, encode, the whole conversation) and vs only the image cached.
* Diagnosis: the engine (image encoded once, shared prefix once, 18 tails batched) vs 18 independent passes,
  re-encoding the image each time (as a loop over ``model(pixel_values, prompt)`` does) or encoding it once.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from napari_radreport.bench.measure import PeakMemory, ratio, timed, timed_interleaved

QUESTION = "Describe the findings of this chest CT."
FOLLOW_UP = "Is there a pleural effusion on the left?"


def _settings(tokens: int):
    from napari_radreport.engine.decoding import GenerationSettings

    return GenerationSettings(max_new_tokens=tokens)


def _streamed(engine, study, question: str, tokens: int, history=()):
    """Run ``ask`` as the docks do: a background job, its events drained as they come; the Finished event."""
    job = engine.start("ask", study, question, history=history, settings=_settings(tokens))
    for _ in job.events():
        pass
    finished = job.result()
    if finished.n_tokens != tokens:
        raise RuntimeError(
            f"asked for {tokens} tokens, the engine wrote {finished.n_tokens} ({finished.stop_reason})"
        )
    return finished


class LlmBench:
    """One loaded model and one study; each method measures one figure."""

    def __init__(self, model_folder: Path, study, repeats: int):
        from napari_radreport.engine.engine import Engine

        self.study, self.repeats = study, repeats
        self.engine = Engine()
        with PeakMemory() as memory:
            start = time.perf_counter()
            self.info = self.engine.load(model_folder, device="auto")
            self.load_s = time.perf_counter() - start
        self.load_memory = memory
        self.runner = self.engine.runner
        self.model = self.runner.model
        self.weights_mib = sum(f.stat().st_size for f in Path(model_folder).glob("*.safetensors")) / 2**20

    def describe(self) -> dict[str, Any]:
        config = self.model.config
        text, vision = config.text_config, config.vision_config
        params = sum(p.numel() for p in self.model.parameters())
        return {"parameters_m": round(params / 1e6, 1), "weights_mib": round(self.weights_mib, 1),
                "device": self.info.device, "dtype": self.info.dtype,
                "image_tokens": self.model.num_image_tokens,
                "text": (f"{text.model_type} width {text.hidden_size}, {text.num_hidden_layers} layers, "
                         f"vocabulary {text.vocab_size}"),
                "vision": (f"ViT3D width {vision.hidden_size}, {vision.num_hidden_layers} layers, "
                           f"image {list(vision.image_size)}"),
                "weights": "random (sizes real, text meaningless)"}

    # -- generation ------------------------------------------------------------------------------------
    def first_token(self, tokens: int) -> dict[str, Any]:
        """A Findings section from a cold study: where the time to its first token goes."""
        from napari_radreport.engine.prompts import SECTIONS

        splits = []
        with PeakMemory() as memory:
            for _ in range(self.repeats + 1):  # the first is a warm-up
                self.runner.clear()
                result = self.engine.report(self.study, sections=SECTIONS[:1], settings=_settings(tokens))
                splits.append(result.timings)
        keys = ("preprocess_s", "encode_s", "prefill_s", "first_token_s")
        median = {k: statistics.median(s[k] for s in splits[1:]) for k in keys}
        return {"load_s": round(self.load_s, 3), **{k: round(v, 4) for k, v in median.items()},
                "prompt_tokens": int(splits[-1]["prefill_tokens"]),
                "load_memory": self.load_memory.as_dict(), "memory": memory.as_dict()}

    def _generate_ids(self, tokens: int) -> list[int]:
        return self.engine.call(self._generate_here, tokens)

    def _generate_here(self, tokens: int) -> list[int]:
        ids, _ = self.runner.prompt(self.study, QUESTION)
        features = self.runner.image_features(self.study)
        input_ids = torch.tensor([ids], device=self.runner.device)
        with torch.inference_mode():
            out = self.model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                      image_features=features, max_new_tokens=tokens, do_sample=False)
        new = out[0, len(ids):].tolist()
        if len(new) != tokens:  # the model's EOS row is zeroed: generate must run to max_new_tokens
            raise RuntimeError(f"asked generate for {tokens} tokens, it wrote {len(new)}")
        return new

    def _engine_text(self, tokens: int) -> str:
        self.runner.forget(self.study)  # no key/value prefix: the whole prompt runs, as in generate
        return _streamed(self.engine, self.study, QUESTION, tokens).text

    def streaming(self, tokens: int) -> dict[str, Any]:
        self.engine.call(self.runner.image_features, self.study)  # both paths start from the cached image
        runs = timed_interleaved({
            ("ours", 1): lambda: self._engine_text(1), ("ours", tokens): lambda: self._engine_text(tokens),
            ("raw", 1): lambda: self._generate_ids(1), ("raw", tokens): lambda: self._generate_ids(tokens),
        }, self.repeats)
        ours = {n: runs[("ours", n)] for n in (1, tokens)}
        raw = {n: runs[("raw", n)] for n in (1, tokens)}
        rate_ours = (tokens - 1) / (ours[tokens].seconds - ours[1].seconds)
        rate_raw = (tokens - 1) / (raw[tokens].seconds - raw[1].seconds)
        raw_text = self.runner.loaded.tokenizer.decode(raw[tokens].result, skip_special_tokens=True)
        return {
            "tokens": tokens,
            "engine_stream": {"total": ours[tokens].as_dict(), "decode_tokens_per_s": round(rate_ours, 2)},
            "model_generate": {"total": raw[tokens].as_dict(), "decode_tokens_per_s": round(rate_raw, 2)},
            "decode_rate_ratio": round(rate_ours / rate_raw, 3),
            "end_to_end_ratio": round(raw[tokens].seconds / ours[tokens].seconds, 3),
            "same_text": raw_text.split() == ours[tokens].result.split(),
        }

    def streaming_with_second_team(self, tokens: int) -> dict[str, Any]:
        """The engine's decoding after this (main) thread has run torch too: a second OpenMP thread team.

        Run last: the team stays for the life of the process. Shows why the engine keeps one model thread.
        """
        a = torch.rand(512, 512)
        _ = a @ a  # a parallel kernel on this thread gives it its own OpenMP team
        ours = {n: timed(lambda n=n: self._engine_text(n), self.repeats) for n in (1, tokens)}
        return {"decode_tokens_per_s": round((tokens - 1) / (ours[tokens].seconds - ours[1].seconds), 2)}

    # -- follow-up -------------------------------------------------------------------------------------
    def follow_up(self, tokens: int) -> dict[str, Any]:
        first = _streamed(self.engine, self.study, QUESTION, tokens)
        history = [(QUESTION, first.text)]

        def cached():
            self.runner.forget(self.study)
            _streamed(self.engine, self.study, QUESTION, tokens)  # the first turn, as the chat had it
            return _streamed(self.engine, self.study, FOLLOW_UP, tokens, history)

        def image_only():
            self.runner.forget(self.study)
            return _streamed(self.engine, self.study, FOLLOW_UP, tokens, history)

        def everything():
            self.runner.clear()
            return _streamed(self.engine, self.study, FOLLOW_UP, tokens, history)

        runs = {}
        for name, call in (("cached", cached), ("image_cached", image_only), ("recompute", everything)):
            results = [call() for _ in range(self.repeats + 1)][1:]
            pick = sorted(results, key=lambda f: f.timings["first_token_s"])[len(results) // 2]
            runs[name] = {"first_token_s": round(pick.timings["first_token_s"], 4),
                          "answer_s": round(pick.timings["total_s"], 4),
                          "prompt_tokens_run": int(pick.timings["prefill_tokens"]), "text": pick.text}
        same = runs["cached"]["text"] == runs["recompute"]["text"] == runs["image_cached"]["text"]
        for entry in runs.values():
            entry.pop("text")
        return {
            "answer_tokens": tokens, **runs, "same_answer": same,
            "first_token_ratio": ratio(runs["recompute"]["first_token_s"], runs["cached"]["first_token_s"]),
            "answer_ratio": ratio(runs["recompute"]["answer_s"], runs["cached"]["answer_s"]),
            "first_token_ratio_vs_image_cached": ratio(runs["image_cached"]["first_token_s"],
                                                       runs["cached"]["first_token_s"]),
        }

    # -- diagnosis -------------------------------------------------------------------------------------
    def _independent(self, labels: list[str], reencode: bool) -> dict[str, float]:
        return self.engine.call(self._independent_here, labels, reencode)

    @torch.inference_mode()
    def _independent_here(self, labels: list[str], reencode: bool) -> dict[str, float]:
        from napari_radreport.engine.prompts import diagnosis_prompt

        tasks = self.runner.family.prompt_spec.tasks
        pixels = self.runner.loaded.pixel_values(self.study).to(self.runner.device)
        features = None if reencode else self.model.get_image_features(pixels)
        yes, no = self.engine._variants("Yes"), self.engine._variants("No")
        result = {}
        for label in labels:
            ids, _ = self.runner.prompt(self.study, diagnosis_prompt(tasks, label))
            image = {"pixel_values": pixels} if reencode else {"image_features": features}
            logits = self.model(input_ids=torch.tensor([ids], device=self.runner.device),
                                **image).logits[0, -1]
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            p_yes, p_no = (float(torch.logsumexp(logprobs[i], 0).exp()) for i in (yes, no))
            result[label] = p_yes / (p_yes + p_no)
        return result

    def diagnosis(self) -> dict[str, Any]:
        labels = list(self.info.labels)

        def shared():
            self.runner.clear()
            return self.engine.diagnose(self.study, labels)

        ours = timed(shared, self.repeats)
        once = timed(lambda: self._independent(labels, reencode=False), max(1, self.repeats // 2), warmup=0)
        every = timed(lambda: self._independent(labels, reencode=True), 1, warmup=0)
        difference = max(abs(ours.result[k] - once.result[k]) for k in labels)
        return {
            "labels": len(labels), "shared_prefix_batched": ours.as_dict(),
            "independent_encode_each": every.as_dict(), "independent_encode_once": once.as_dict(),
            "ratio_vs_encode_each": ratio(every.seconds, ours.seconds),
            "ratio_vs_encode_once": ratio(once.seconds, ours.seconds),
            "max_probability_difference": difference,
        }

    def close(self) -> None:
        self.engine.unload()
