"""Driving a napari mouse-drag callback (a generator) as napari does, without a real mouse."""

from __future__ import annotations

from types import SimpleNamespace

import pytest


def press_and_release(callback, source, world_position, moves: int = 0) -> None:
    """A press at ``world_position``, ``moves`` mouse moves, then the release, through ``callback(source,
    event)``; the callback must end with the release."""
    event = SimpleNamespace(type="mouse_press", modifiers=(), position=tuple(world_position))
    steps = callback(source, event)
    next(steps)
    for _ in range(moves):
        event.type = "mouse_move"
        next(steps)
    event.type = "mouse_release"
    with pytest.raises(StopIteration):
        next(steps)
