"""M3D-LaMed's box text: ``<bx_start>[d0, h0, w0, d1, h1, w1]<bx_end>`` <-> boxes in the model's pixel space.

The format, as M3D builds its positioning data (BAAI-DCAI/M3D ``LaMed/src/utils/utils.py`` ``mask2box``, used
by ``LaMed/src/dataset/multi_dataset.py`` for referring expression comprehension answers and generation
questions): six numbers in a Python list's text (``str(list)``: ``[a, b, c, d, e, f]``), the box's first voxel
index on each spatial axis of the model's input (D, H, W: the order of ``pixel_values``' axes 2, 3, 4), then
its last voxel index (inclusive), each divided by that axis's size and rounded to 3 decimals. Its benchmark
reads a box back with the six-number list pattern (``Bench/utils.py`` ``extract_box_from_text``).

Here a ``Box`` holds continuous voxel indices on the model's grid (``shape``: the model's (D, H, W) input
size, ``vision_config.image_size``): ``start`` and ``end`` are the first and last voxel centres the box covers
(``end`` inclusive, as M3D's), so its extent in voxel edges is ``start - 0.5`` to ``end + 0.5``. Parsing
multiplies each number by its axis size; formatting divides and rounds as M3D does, so a round trip moves
each end by at most half of 0.001 of its axis. Pure Python: no torch.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

BOX_START = "<bx_start>"
BOX_END = "<bx_end>"
DECIMALS = 3  # M3D rounds each normalised coordinate to 3 decimals
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_LIST = re.compile(r"^\s*\[\s*(.*?)\s*\]\s*$", re.S)
_BARE_LIST = re.compile(r"\[\s*" + r"\s*,\s*".join([f"({_NUMBER})"] * 6) + r"\s*\]")
_MARKED = re.compile(re.escape(BOX_START) + r"(.*?)" + re.escape(BOX_END), re.S)


class BoxFormatError(ValueError):
    """Box text that is not M3D's six-number box; the message quotes it and says why."""


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in the model's pixel index space, (D, H, W) order, continuous voxel indices:
    ``start`` the first and ``end`` the last (inclusive) voxel centre it covers."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", tuple(float(v) for v in self.start))
        object.__setattr__(self, "end", tuple(float(v) for v in self.end))
        if len(self.start) != 3 or len(self.end) != 3:
            raise ValueError(f"a box needs three start and three end indices (D, H, W), got {self}")
        if any(a > b for a, b in zip(self.start, self.end)):
            raise ValueError(f"a box's start must not pass its end on any axis, got {self}")


def _shape(shape: Sequence[int]) -> tuple[int, int, int]:
    sizes = tuple(int(n) for n in shape)
    if len(sizes) != 3 or min(sizes) < 1:
        raise ValueError(f"shape must be the model's three input sizes (D, H, W), got {tuple(shape)!r}")
    return sizes  # type: ignore[return-value]


def box_from_numbers(numbers: Sequence[float], shape: Sequence[int], text: str = "") -> Box:
    """The box of M3D's six normalised numbers (first voxel / size per axis, then last voxel / size)."""
    sizes = _shape(shape)
    where = f" in {text!r}" if text else ""
    if len(numbers) != 6:
        raise BoxFormatError(f"an M3D box has six numbers, got {len(numbers)}{where}")
    if any(not 0.0 <= v <= 1.0 for v in numbers):
        raise BoxFormatError(f"an M3D box's numbers lie in 0..1 (index / axis size), "
                             f"got {list(numbers)}{where}")
    if any(a > b for a, b in zip(numbers[:3], numbers[3:])):
        raise BoxFormatError(f"an M3D box's first three numbers are its start, the last three its end; "
                             f"a start passes its end in {list(numbers)}{where}")
    return Box(tuple(v * n for v, n in zip(numbers[:3], sizes)),  # type: ignore[arg-type]
               tuple(v * n for v, n in zip(numbers[3:], sizes)))  # type: ignore[arg-type]


def box_numbers(box: Box, shape: Sequence[int]) -> list[float]:
    """M3D's six numbers for a box: each index / axis size, rounded to 3 decimals (start, then end). The box
    must lie within the grid's extent (indices -0.5 .. size - 0.5, the outer voxels' edges); a start before
    the first voxel centre writes 0.0."""
    sizes = _shape(shape)
    for name, corner in (("start", box.start), ("end", box.end)):
        if any(not -0.5 <= v <= n - 0.5 for v, n in zip(corner, sizes)):
            raise ValueError(f"the box's {name} {tuple(corner)} lies outside the model's grid {sizes} "
                             "(voxel indices -0.5 .. size - 0.5)")
    return [max(0.0, round(float(v) / n, DECIMALS)) for v, n in zip((*box.start, *box.end), sizes * 2)]


def _numbers(inside: str, text: str) -> list[float]:
    match = _LIST.match(inside)
    if match is None:
        raise BoxFormatError(f"an M3D box is a bracketed list of six numbers, got {text!r}")
    parts = [p.strip() for p in match.group(1).split(",")]
    if any(re.fullmatch(_NUMBER, p) is None for p in parts):
        raise BoxFormatError(f"an M3D box is a bracketed list of six numbers, got {text!r}")
    return [float(p) for p in parts]


def parse_boxes(text: str, shape: Sequence[int], *, markers: bool = True) -> list[Box]:
    """Every box in generated text, in order, as ``Box`` on the model's grid ``shape`` (D, H, W).

    ``markers``: boxes stand between ``<bx_start>`` and ``<bx_end>`` (decode with
    ``skip_special_tokens=False``: they are special tokens); a start without its end, or anything but six
    numbers in 0..1 between them, is one ``BoxFormatError`` quoting it. ``markers=False`` reads text decoded
    without special tokens as M3D's benchmark does: each bracketed list of exactly six numbers is a box.
    Text without boxes gives [].
    """
    if not markers:
        return [box_from_numbers([float(v) for v in m.groups()], shape, m.group(0))
                for m in _BARE_LIST.finditer(text)]
    boxes = []
    for match in _MARKED.finditer(text):
        boxes.append(box_from_numbers(_numbers(match.group(1), match.group(0)), shape, match.group(0)))
    rest = _MARKED.sub("", text)
    for marker in (BOX_START, BOX_END):
        if marker in rest:
            at = rest.index(marker)
            raise BoxFormatError(f"{marker} without its {BOX_END if marker == BOX_START else BOX_START} "
                                 f"in {rest[max(0, at - 20):at + 60]!r}")
    return boxes


def format_box(box: Box, shape: Sequence[int]) -> str:
    """M3D's box text for a box on the model's grid: ``<bx_start>[d0, h0, w0, d1, h1, w1]<bx_end>``, each
    number index / axis size rounded to 3 decimals and written as Python writes a float (``str(list)``), as
    M3D's positioning questions put a box ("What is in the region <bx_start>[...]<bx_end>?")."""
    return BOX_START + str(box_numbers(box, shape)) + BOX_END


def boxes_with_spans(text: str, shape: Sequence[int]) -> list[tuple[tuple[int, int], Box]]:
    """Every well-formed box in an answer as the engine shows it, with its character span in ``text``: six
    numbers in 0..1 between brackets, with or without M3D's markers around them (the markers are special
    tokens, dropped when text is decoded for reading). A list that is not a box (a start past its end, a
    number outside 0..1) is left as text: an answer is read, not refused."""
    found = []
    for match in _BARE_LIST.finditer(text):
        try:
            box = box_from_numbers([float(v) for v in match.groups()], shape, match.group(0))
        except BoxFormatError:
            continue
        start, end = match.span()
        if text[max(0, start - len(BOX_START)):start] == BOX_START:
            start -= len(BOX_START)
        if text[end:end + len(BOX_END)] == BOX_END:
            end += len(BOX_END)
        found.append(((start, end), box))
    return found


def reads_boxes(tokenizer) -> bool:
    """Whether a model's tokenizer holds M3D's box markers as tokens of their own (M3D-LaMed's do): only such
    a model was trained to read and write boxes."""
    vocab = tokenizer.get_vocab()
    return BOX_START in vocab and BOX_END in vocab
