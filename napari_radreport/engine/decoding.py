"""Choosing the next token and turning token ids into streamed text (no model calls here).

``GenerationSettings`` is plain data (the docks and the command line build it without torch); torch is
imported by the token chooser, which only runs once a model is loaded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class GenerationSettings:
    """How to decode: greedy by default (reproducible drafts); sampling with temperature and top-p."""

    max_new_tokens: int = 256
    do_sample: bool = False
    temperature: float = 0.7
    top_p: float = 0.9
    repetition_penalty: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"temperature must be above 0 when sampling, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.repetition_penalty <= 0:
            raise ValueError(f"repetition_penalty must be above 0, got {self.repetition_penalty}")

    def as_dict(self) -> dict:
        return asdict(self)


class TokenChooser:
    """Greedy or seeded sampling over one row of logits, with an optional repetition penalty."""

    def __init__(self, settings: GenerationSettings, device: torch.device | str = "cpu",
                 suppress: tuple[int, ...] = ()):
        import torch

        self.settings = settings
        self.suppress = list(suppress)  # tokens an answer never contains (image placeholder, BOS, padding)
        self.generator = None
        if settings.do_sample:
            self.generator = torch.Generator(device=device)
            self.generator.manual_seed(settings.seed)

    def __call__(self, logits: torch.Tensor, previous: list[int]) -> int:
        import torch

        s = self.settings
        logits = logits.float().clone()  # a normal tensor (inference-mode tensors refuse in-place edits)
        if self.suppress:
            logits[self.suppress] = float("-inf")
        if s.repetition_penalty != 1.0 and previous:
            seen = torch.tensor(sorted(set(previous)), device=logits.device)
            values = logits[seen]
            logits[seen] = torch.where(
                values > 0, values / s.repetition_penalty, values * s.repetition_penalty
            )
        if not s.do_sample:
            return int(torch.argmax(logits))
        probs = torch.softmax(logits / s.temperature, dim=-1)
        if s.top_p < 1.0:
            sorted_probs, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_probs, dim=-1) - sorted_probs < s.top_p  # always keeps the first
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return int(torch.multinomial(probs, 1, generator=self.generator))


class TextStream:
    """Decode a growing list of token ids and hand out only the new text.

    The whole sequence is decoded each time so that tokenizers which merge pieces (SentencePiece spaces,
    byte-level BPE) give the same text as decoding at the end; a trailing replacement character (an
    unfinished multi-byte character) is held back until the next token completes it. A generation that ends
    inside a character drops it: ``text()`` is then what was streamed.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = ""

    def push(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd") or not text.startswith(self.sent):
            return ""
        delta, self.sent = text[len(self.sent):], text
        return delta

    def text(self) -> str:
        full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        held = full[len(self.sent):] if full.startswith(self.sent) else None
        return self.sent if held is not None and not held.strip("\ufffd") else full
