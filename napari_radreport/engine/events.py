"""Typed events an engine job reports while it runs (the docks turn them into widget updates)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_radreport.modeling.scope import ScopeVerdict


@dataclass(frozen=True)
class Progress:
    """A stage started or moved on: 'load' (what loads, its size, warnings, hashing), 'weights' (tensors
    read), 'preprocess', 'encode', 'prefill', 'decode', 'diagnose', 'check'.

    ``message`` is the whole line a dock shows ("Encoding the image 3/12 blocks · 4.2 s"); ``done`` of
    ``total`` (in the message's unit) and ``elapsed_s`` (seconds since the stage began) are its parts, for
    code that wants them. A stage sends a few dozen events at most (``engine/stages.py``).
    """

    stage: str
    message: str = ""
    fraction: float | None = None  # 0..1 where it is known
    elapsed_s: float | None = None
    done: int | None = None
    total: int | None = None


@dataclass(frozen=True)
class SectionStarted:
    """A report section (e.g. 'Findings', 'Findings (chest)', 'Impression') begins; tokens follow.

    ``heading`` is the text that goes before the section's tokens ("Findings:\n", with a blank line before it
    after the first section): a report's text is each section's heading followed by its tokens, as they come.
    """

    title: str
    index: int

    @property
    def heading(self) -> str:
        return ("\n\n" if self.index else "") + f"{self.title}:\n"


@dataclass(frozen=True)
class Token:
    """One decoded token: its id and the text it added (may be empty while a character is incomplete)."""

    token_id: int
    text: str
    count: int  # tokens decoded so far in this generation
    tokens_per_s: float


@dataclass(frozen=True)
class ScopeChecked:
    """Before a task on a study: whether the study is within the model's scope, and why not."""

    verdict: ScopeVerdict


@dataclass(frozen=True)
class Finished:
    """A generation ended: why ('eos', 'length', 'stopped'), its text, and where the time went."""

    text: str
    stop_reason: str
    n_tokens: int
    timings: dict[str, float] = field(default_factory=dict)
    scope: ScopeVerdict | None = None  # the study against the model's scope (ScopeChecked's verdict)
    token_ids: list[int] = field(default_factory=list)  # the generated ids, end of text not included


Event = Progress | ScopeChecked | SectionStarted | Token | Finished
EventCallback = Callable[[Any], None]


def ignore(_event: Any) -> None:
    """The default callback: drop events."""
