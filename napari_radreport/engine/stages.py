"""A task's stages as ``Progress`` events: a start, a few dozen updates at most, an end; and where their
fractions come from (a forward hook per block of the vision tower or the language model). No torch at import.

``Stage(on_event, "encode", "Encoding the image", total=12, unit="blocks")`` sends "Encoding the image 0/12
blocks"; ``advance(3)`` sends "Encoding the image 3/12 blocks · 4.2 s" unless it is too close to the last
update (``MAX_UPDATES``, ``MIN_INTERVAL_S``: the docks poll every 25 ms and redraw on each event);
``finish()`` sends the last step if it was held back. A stage of unknown length sends its start alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from napari_radreport.engine.events import EventCallback, Progress

MAX_UPDATES = 24  # updates per stage at most (each at least 1/MAX_UPDATES of it further), start and end aside
MIN_INTERVAL_S = 0.1  # and at least this far apart in time (tests set 0 to see every step)


class Stage:
    """One stage of a task: sends its ``Progress`` events through ``on_event``, starting now.

    ``total``: how many ``unit`` the stage has (None or 0: unknown, indeterminate); ``counts(done, total)``
    writes "3/12" (``byte_counts`` writes bytes: "1.2/4.2 GB", with no ``unit``).
    """

    def __init__(self, on_event: EventCallback, stage: str, label: str, *, total: int | None = None,
                 unit: str = "", counts: Callable[[int, int], str] = lambda done, total: f"{done}/{total}",
                 ) -> None:
        self.on_event, self.stage, self.label = on_event, stage, label
        self.total = total if total else None
        self.unit, self.counts = unit, counts
        self.started = time.perf_counter()
        self._sent: int | None = None  # the last ``done`` sent
        self._sent_at = self.started
        self._send(0 if self.total else None, 0.0)

    def message(self, done: int | None, elapsed: float | None = None) -> str:
        """"Label 3/12 unit · 4.2 s" (the count where the total is known, the time where it is given)."""
        text = self.label
        if self.total and done is not None:
            text += f" {self.counts(done, self.total)}" + (f" {self.unit}" if self.unit else "")
        return text if elapsed is None else f"{text} · {elapsed:.1f} s"

    def _send(self, done: int | None, elapsed: float) -> None:
        shown = elapsed if done else None  # the start says no time: it is 0
        fraction = None if done is None or not self.total else done / self.total
        self.on_event(Progress(self.stage, self.message(done, shown), fraction, elapsed_s=elapsed, done=done,
                               total=self.total))
        self._sent, self._sent_at = done, time.perf_counter()

    def advance(self, done: int) -> None:
        """``done`` of ``total`` are done: an update if it is far enough from the last, or the last step."""
        if not self.total:
            return
        done = max(0, min(done, self.total))
        now, last = time.perf_counter(), self._sent or 0
        if done == last:
            return
        if done == self.total or ((done - last) * MAX_UPDATES >= self.total
                                  and now - self._sent_at >= MIN_INTERVAL_S):
            self._send(done, now - self.started)

    def finish(self) -> None:
        """The stage is over: its last step, if it has a total that was not sent yet."""
        if self.total:
            self.advance(self.total)

    def counter(self) -> Callable[..., None]:
        """A callback (any arguments: a forward hook) that advances the stage by one on each call."""
        calls = [0]

        def step(*_args: Any) -> None:
            calls[0] += 1
            self.advance(calls[0])

        return step


def byte_counts(done: int, total: int) -> str:
    """"1.2/4.2 GB": both counts in the unit that suits the total (``catalog.human_bytes``)."""
    from napari_radreport.modeling.catalog import human_bytes

    shown = human_bytes(total)
    value, unit = shown.split(" ")
    scale = {"GB": 1e9, "MB": 1e6, "kB": 1e3}.get(unit, 1.0)
    return f"{done / scale:.{len(value.partition('.')[2])}f}/{shown}"


def blocks(model: Any, root: str) -> tuple[list[Any], int]:
    """The blocks of the first submodule of ``model`` called ``root`` ("vision_tower", "language_model"): the
    items of its outermost ``nn.ModuleList``s of blocks (modules made of modules, each called as a whole, as a
    transformer's layers; not e.g. a list of Linear layers whose weights are used directly), and how many of
    them one forward runs ([], 0 when there is no such submodule). Under a peft ``modules_to_save`` wrapper
    every copy is listed (the original and each adapter's), but one forward runs one copy: the count is one
    copy's."""
    from torch import nn

    def of_blocks(items: nn.ModuleList) -> bool:
        containers = nn.ModuleList | nn.ModuleDict
        return len(items) > 0 and all(next(item.children(), None) is not None
                                      and not isinstance(item, containers) for item in items)

    found = next((m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] == root), None)
    if found is None:
        return [], 0
    lists: list[tuple[str, Any]] = []
    for name, module in found.named_modules():
        if (isinstance(module, nn.ModuleList) and of_blocks(module)
                and not any(name.startswith(f"{outer}.") for outer, _ in lists)):
            lists.append((name, module))
    copies: dict[str, int] = {}  # peft copy ("original_module", "modules_to_save.NAME", "") -> its blocks
    for name, module in lists:
        parts = name.split(".")
        at = next((i for i, part in enumerate(parts) if part in ("original_module", "modules_to_save")), None)
        copy = "" if at is None else ".".join(parts[at:at + (2 if parts[at] == "modules_to_save" else 1)])
        copies[copy] = copies.get(copy, 0) + len(module)
    shared = copies.pop("", 0)
    return [block for _, module in lists for block in module], shared + max(copies.values(), default=0)


@contextmanager
def hooked(modules: list[Any], callback: Callable[..., None]) -> Iterator[None]:
    """``callback`` runs after each forward of each of ``modules`` while inside (the hooks go on leaving)."""
    handles = [module.register_forward_hook(callback) for module in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
