"""Reading checkpoint folders safely: safetensors by default, pickles only when asked, no hub access, and
only weights that fit the model.

``from_pretrained_checked`` loads a model with transformers' own account of what it did
(``output_loading_info``) and refuses weights that lack tensors the architecture needs, carry tensors it does
not have, or have tensors of the wrong shape, unless ``allow_partial`` (then it says what was wrong, one line
per kind). A cut or garbled safetensors file, or a tokenizer that cannot be read, is one line naming the file.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
SAFETENSORS_HEADER_LIMIT = 100_000_000  # bytes; the safetensors library refuses a longer header too
SHOWN_KEYS = 3  # how many tensor names a refusal names of each kind
TOKENIZER_JSON = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                  "processor_config.json", "preprocessor_config.json", "chat_template.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used; the message says which file and why."""


def require_local_folder(path: str | Path) -> Path:
    """A local folder, or a one-line error saying how to point at local weights (no hub is contacted)."""
    folder = Path(path).expanduser()
    if folder.is_dir():
        return folder
    looks_like_hub_id = (not folder.exists() and str(path).count("/") == 1
                         and not str(path).startswith((".", "/", "~")))
    if looks_like_hub_id:
        raise CheckpointError(
            f"{path}: not a local folder; napari-radreport never downloads weights. "
            "Download the checkpoint on a machine with network access and pass its local folder "
            "(config.json + *.safetensors)"
        )
    raise CheckpointError(f"{path}: no such checkpoint folder")


def read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{folder}: no config.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def weight_files(folder: Path, *, allow_pickle: bool = False) -> list[Path]:
    """The safetensors shards of a folder (via the index when present), each one's header checked
    (``safetensors_header``); pickles only with allow_pickle."""
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [folder / n for n in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise CheckpointError(f"{folder}: shards named in the index are missing: {', '.join(missing)}")
        for f in files:
            safetensors_header(f)
        return files
    files = sorted(folder.glob("*.safetensors"))
    if files:
        for f in files:
            safetensors_header(f)
        return files
    pickles = sorted(p for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not allow_pickle:
        raise CheckpointError(
            f"{folder}: only pickle weights ({pickles[0].name}); they can run arbitrary code when loaded. "
            "Convert them to safetensors, "
            "or pass allow_pickle=True (--allow-pickle) if you trust their source"
        )
    if pickles:
        warnings.warn(f"{folder}: loading pickle weights because allow_pickle was given", stacklevel=2)
        return pickles
    raise CheckpointError(f"{folder}: no weights (*.safetensors) found")


def iter_tensors(files: list[Path]) -> Iterator[tuple[Path, dict]]:
    """(file, {name: tensor}) for each weight file, one file in memory at a time."""
    import torch
    from safetensors.torch import load_file

    for f in files:
        if f.suffix == ".safetensors":
            yield f, load_file(str(f))
        else:
            yield f, torch.load(str(f), map_location="cpu", weights_only=True)


def safetensors_header(path: Path) -> dict:
    """The header of a safetensors file ({tensor name: dtype, shape, data_offsets}), checked against the
    file's size without reading a tensor: a cut or garbled file is a CheckpointError naming it (never a
    MemoryError from a garbage header length)."""
    def unreadable(reason: str) -> CheckpointError:
        return CheckpointError(f"{path}: not a readable safetensors file ({reason}); "
                               "copy or convert the weights again")

    size = path.stat().st_size
    with open(path, "rb") as handle:
        start = handle.read(8)
        if len(start) < 8:
            raise unreadable(f"{size} bytes, too short for the 8-byte header length")
        (length,) = struct.unpack("<Q", start)
        if length > min(size - 8, SAFETENSORS_HEADER_LIMIT):
            raise unreadable(f"the header says it is {length} bytes long, the file has {size - 8} after it")
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise unreadable("its header is not valid JSON") from exc
    if not isinstance(header, dict):
        raise unreadable("its header is not a table of tensors")
    end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            first, last = (int(n) for n in entry["data_offsets"])
            shape = [int(n) for n in entry["shape"]]
        except (TypeError, KeyError, ValueError) as exc:
            raise unreadable(f"tensor {name} has no valid shape and offsets") from exc
        if not 0 <= first <= last or min(shape, default=0) < 0:
            raise unreadable(f"tensor {name} has an invalid shape or offsets")
        end = max(end, last)
    data = size - 8 - length
    if end != data:
        state = "cut short" if end > data else "longer than its tensors"
        raise unreadable(f"{state}: its tensors take {end} bytes of data, the file holds {data}")
    return header


def _first(keys: list[str]) -> str:
    more = ", ..." if len(keys) > SHOWN_KEYS else ""
    return ", ".join(keys[:SHOWN_KEYS]) + more


@dataclass
class WeightReport:
    """What transformers did with a folder's weights (``from_pretrained(..., output_loading_info=True)``):
    tensors the model needs that the files lack (left randomly initialised), tensors in the files the model
    does not have (ignored), and tensors of the wrong shape (left randomly initialised, as
    ``ignore_mismatched_sizes=True`` lets transformers go on and report them). Weights a model ties
    (``lm_head.weight`` to the embeddings) or regenerates (non-persistent buffers such as rotary frequencies,
    the class's ``_keys_to_ignore_on_load_missing``) are never missing: transformers leaves them out."""

    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]]  # (name, in the file, in the model)

    @classmethod
    def from_loading_info(cls, info: dict, model: Any = None) -> WeightReport:
        tied = set(getattr(model, "all_tied_weights_keys", None) or {})  # set from their source tensors
        return cls(missing=sorted(set(info.get("missing_keys") or ()) - tied),
                   unexpected=sorted(info.get("unexpected_keys") or ()),
                   mismatched=sorted((str(name), tuple(stored), tuple(wanted))
                                     for name, stored, wanted in info.get("mismatched_keys") or ()))

    @property
    def intact(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def notes(self) -> list[str]:
        """One line per kind of problem, each with its count and first few tensor names; [] when intact."""
        notes = []
        if self.missing:
            notes.append(f"{len(self.missing)} missing tensor(s) ({_first(self.missing)})")
        if self.unexpected:
            notes.append(f"{len(self.unexpected)} unexpected tensor(s) ({_first(self.unexpected)})")
        if self.mismatched:
            shown = [f"{name} {list(stored)} in the file, {list(wanted)} in the model"
                     for name, stored, wanted in self.mismatched]
            notes.append(f"{len(self.mismatched)} tensor(s) of the wrong shape ({_first(shown)})")
        return notes


class _DropLoadReport(logging.Filter):
    """Drops transformers' load-report table: ``WeightReport`` says the same in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


@contextmanager
def _quiet_load_report() -> Iterator[None]:
    logger, drop = logging.getLogger("transformers.modeling_utils"), _DropLoadReport()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


WEIGHTS_LOOP = "Loading weights"  # the description of transformers' tqdm over the tensors it loads
_weight_listeners = threading.local()  # .listener: the calling thread's ``weight_progress`` callback


def _tqdm_dispatch(factory: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """transformers' tqdm hook (``transformers.utils.logging.set_tqdm_hook``): its "Loading weights" loop,
    in a thread inside ``weight_progress``, is counted for that thread's listener; every other bar, and that
    loop in other threads, is left as it was (a hook installed before ours still sees them)."""
    listener = getattr(_weight_listeners, "listener", None)
    desc = kwargs.get("desc", args[1] if len(args) > 1 else None)
    previous = _tqdm_dispatch.previous  # type: ignore[attr-defined]
    bar = previous(factory, args, kwargs) if previous is not None else factory(*args, **kwargs)
    if listener is None or desc != WEIGHTS_LOOP:
        return bar
    items = args[0] if args else kwargs.get("iterable")
    total = kwargs.get("total") or (len(items) if hasattr(items, "__len__") else 0)
    return _CountedBar(bar, listener, total)


_tqdm_dispatch.previous = None  # type: ignore[attr-defined]


class _CountedBar:
    """A tqdm bar whose iteration calls ``listener(done, total)`` after each item (the bar still draws)."""

    def __init__(self, bar: Any, listener: Callable[[int, int], None], total: int) -> None:
        self._bar, self._listener, self._total = bar, listener, total

    def __iter__(self) -> Iterator[Any]:
        self._listener(0, self._total)
        for done, item in enumerate(self._bar, 1):
            yield item
            self._listener(done, self._total)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bar, name)

    def __enter__(self) -> _CountedBar:
        self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> Any:
        return self._bar.__exit__(*exc)


@contextmanager
def weight_progress(listener: Callable[[int, int], None] | None) -> Iterator[None]:
    """While inside, ``listener(done, total)`` follows each tensor transformers' ``from_pretrained`` loads in
    this thread (its "Loading weights" loop: done 0 first, then one call per tensor), through transformers'
    public tqdm hook; other threads' loads and other progress bars are untouched. None: nothing to follow."""
    if listener is None:
        yield
        return
    from transformers.utils import logging as hf_logging

    install = getattr(hf_logging, "set_tqdm_hook", None)
    if install is None:  # a transformers without the hook: the load runs without counts
        yield
        return
    previous = install(_tqdm_dispatch)
    if previous is not _tqdm_dispatch:  # installed once; a hook set before ours keeps working behind it
        _tqdm_dispatch.previous = previous  # type: ignore[attr-defined]
    outer = getattr(_weight_listeners, "listener", None)
    _weight_listeners.listener = listener
    try:
        yield
    finally:
        _weight_listeners.listener = outer


TRANSFORMERS_LOAD_ERRORS = ("Error(s) in loading state_dict", "We encountered some issues during automatic")


def from_pretrained_checked(model_class: Any, folder: Path, pretrained: dict[str, Any], *,
                            allow_partial: bool = False) -> tuple[Any, list[str]]:
    """``model_class.from_pretrained(folder, **pretrained)`` that refuses weights that do not fit the model
    (a CheckpointError naming the folder, the count of each kind of problem and the first few tensors) unless
    ``allow_partial``; returns the model and ``WeightReport.notes`` (empty for intact weights)."""
    from safetensors import SafetensorError

    try:
        with _quiet_load_report():
            model, info = model_class.from_pretrained(str(folder), output_loading_info=True,
                                                      ignore_mismatched_sizes=True, **pretrained)
    except SafetensorError as exc:
        names = ", ".join(p.name for p in sorted(folder.glob("*.safetensors")))
        raise CheckpointError(f"{folder}: a weight file ({names}) cannot be read ({exc}); "
                              "copy or convert the weights again") from exc
    except RuntimeError as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        if not lines or not lines[0].startswith(TRANSFORMERS_LOAD_ERRORS):
            raise
        raise CheckpointError(f"{folder}: the weights could not be loaded into the model "
                              f"({' '.join(lines[:2])})") from exc
    report = WeightReport.from_loading_info(info, model)
    if not report.intact and not allow_partial:
        raise CheckpointError(f"{folder}: the weights do not fit the model: {'; '.join(report.notes())}. "
                              "Refusing to load it, as it would write text that reads as real "
                              "(allow_partial=True loads it anyway)")
    return model, report.notes()


def read_tokenizer(folder: Path, load: Callable[[], Any], what: str = "tokenizer") -> Any:
    """``load()`` (a tokenizer's or processor's ``from_pretrained``), or one line naming the file of
    ``folder`` that could not be read in place of the traceback (tokenizers raises plain Exceptions for a
    broken tokenizer.json)."""
    try:
        return load()
    except MemoryError:
        raise
    except Exception as exc:
        raise _tokenizer_error(folder, exc, what) from exc


def _tokenizer_error(folder: Path, exc: BaseException, what: str = "tokenizer") -> CheckpointError:
    """One line naming the tokenizer file of ``folder`` that could not be read (``exc``: what transformers or
    tokenizers raised), in place of their traceback; ``what``: how the message calls it."""
    for name in TOKENIZER_JSON:
        path = folder / name
        if path.is_file():
            try:
                json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as bad:
                where = f": {bad.msg} at line {bad.lineno}" if isinstance(bad, json.JSONDecodeError) else ""
                return CheckpointError(f"{path}: the {what} cannot be read (not valid JSON{where})")
    present = [folder / name for name in TOKENIZER_FILES if (folder / name).is_file()]
    if not present:
        return CheckpointError(f"{folder}: no {what} ({' or '.join(TOKENIZER_FILES[:2])})")
    reason = next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return CheckpointError(f"{present[0]}: the {what} cannot be read ({reason})")
