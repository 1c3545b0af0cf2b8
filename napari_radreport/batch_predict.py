"""Batch inference over a manifest: reports, answers and diagnoses, one JSON line per study, resumable.

The output's first line is ``{"_meta": {...}}`` (model, weights digest, tasks, decoding settings, manifest
digest, split, device); every other line is one study (format in docs/predict.md). Each study is appended
and flushed to disk when done, so an interrupted run loses at most the study in progress; a rerun skips the
studies already written, drops a line cut short by a kill, and refuses an output made with another model,
other tasks or other settings. With a batch size above 1, several studies' answers decode together
(engine/batched.py) into the same texts, and a batch's studies are written when the batch is done (the batch
size is not part of the ``_meta`` a rerun must match). Under ``accelerate launch`` each process takes every
N-th remaining study, writes ``<out>.part<rank>``, and the main process merges the parts in manifest order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TASKS = ("report", "answers", "diagnosis")
MATCHING_KEYS = ("weights_sha256", "quantization", "tasks", "settings", "manifest_sha256", "split")
MEANT_WHEN_ABSENT = {"quantization": "none"}  # files written before the key existed


class PredictionsMismatch(ValueError):
    """An existing output made differently from the run asked for."""


def read_predictions(path: str | Path) -> tuple[dict[str, Any], dict[str, dict]]:
    """(meta, predictions by study id) of a predictions file; a cut-short last line is ignored."""
    meta: dict[str, Any] = {}
    predictions: dict[str, dict] = {}
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break  # killed while writing this line: the study is simply not done
            raise ValueError(f"{path}:{number}: not a JSON line") from None
        if "_meta" in entry:
            meta = entry["_meta"]
        elif "id" in entry:
            predictions[str(entry["id"])] = entry
        else:
            raise ValueError(f"{path}:{number}: a prediction line needs an 'id'")
    return meta, predictions


def check_meta(path: Path, found: dict[str, Any], wanted: dict[str, Any]) -> None:
    """Refuse to mix studies predicted by another model, tasks or settings into one output."""
    for key in MATCHING_KEYS:
        if found.get(key, MEANT_WHEN_ABSENT.get(key)) != wanted.get(key):
            raise PredictionsMismatch(
                f"{path} was made with another {key.replace('_', ' ')} "
                f"({found.get(key)!r}, now {wanted.get(key)!r}); use --overwrite or another --out"
            )


def _rewrite_complete(path: Path, meta: dict, predictions: dict[str, dict]) -> None:
    """Rewrite ``path`` with its complete lines only (drops a line cut short by a kill)."""
    lines = [json.dumps({"_meta": meta})] + [json.dumps(p) for p in predictions.values()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def predict_study(engine, record, tasks: Sequence[str], settings) -> dict[str, Any]:
    """One study's predictions, with the study's verdict against the model's scope (``scope``: scoring runs
    every study, in scope or not); a study that cannot be read or run gets ``error`` instead."""
    from napari_radreport.common import one_line
    from napari_radreport.data.studies import read_record_study
    from napari_radreport.engine.prompts import LETTERS, REGIONS

    out: dict[str, Any] = {"id": record.id}
    try:
        study = read_record_study(record)
        out["scope"] = engine.scope_of(study).as_dict()
        if "report" in tasks:
            sections = dict(engine.report(study, sections=("findings", "impression"),
                                          settings=settings).sections)
            out["findings"], out["impression"] = sections.get("Findings", ""), sections.get("Impression", "")
            if record.regions:
                regional = dict(engine.report(study, sections=("findings",), regions=list(REGIONS),
                                              settings=settings).sections)
                out["regions"] = {r: regional.get(f"Findings ({r})", "") for r in REGIONS}
        if "answers" in tasks:
            out["answers"] = []
            for qa in record.qa:
                if qa.choices:
                    letter = engine.choose(study, qa.question, qa.choices).letter
                    out["answers"].append({"question": qa.question, "answer": letter,
                                           "choice_index": LETTERS.index(letter)})
                else:
                    answer = engine.ask(study, qa.question, settings=settings).text.strip()
                    out["answers"].append({"question": qa.question, "answer": answer})
        if "diagnosis" in tasks:
            declared = {label.lower() for label in engine.info.labels}  # the model answers only its own
            labels = [label for label in record.labels if label.lower() in declared]
            out["diagnosis"] = engine.diagnose(study, labels or None)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # recorded for this study; the run goes on
        return {"id": record.id, "error": one_line(exc)}
    return out


@dataclass
class RunPlace:
    """Where this process writes: its rank among ``world`` processes and its output file."""

    rank: int
    world: int
    local_rank: int

    @classmethod
    def from_environment(cls) -> RunPlace:
        env = os.environ
        return cls(int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0)))

    def output(self, out: Path) -> Path:
        return out if self.world == 1 else out.with_name(f"{out.name}.part{self.rank}")


def _outputs(out: Path) -> list[Path]:
    return [p for p in [out, *sorted(out.parent.glob(f"{out.name}.part*"))] if p.is_file()]


def _done_ids(out: Path, wanted_meta: dict) -> set[str]:
    """Study ids already predicted in ``out`` and its part files; checks each file's meta first."""
    done: set[str] = set()
    for path in _outputs(out):
        meta, predictions = read_predictions(path)
        check_meta(path, meta, wanted_meta)
        done.update(predictions)
    return done


def predicted_batches(engine, records: Sequence, tasks: Sequence[str], settings,
                      batch_size: int = 1) -> Iterator[list[dict[str, Any]]]:
    """The predictions of ``records`` in order, a list per batch of ``batch_size`` studies (one study a list
    when 1, or when ``batched.batch_refusal`` says the model or settings decode one study at a time); a
    batch's free-text answers decode together (engine/batched.py) into the texts one at a time writes."""
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    if batch_size > 1:
        from napari_radreport.engine.batched import Batcher, batch_refusal

        if not batch_refusal(engine, settings):
            batcher = Batcher(engine)
            for begin in range(0, len(records), batch_size):
                yield batcher.predict(records[begin:begin + batch_size],
                                      lambda record: predict_study(engine, record, tasks, settings))
            return
    for record in records:
        yield [predict_study(engine, record, tasks, settings)]


def run_predictions(engine, records, out: str | Path, meta: dict[str, Any], tasks: Sequence[str], settings, *,
                    overwrite: bool = False, place: RunPlace | None = None,
                    on_done: Callable[[dict, int, int], None] | None = None,
                    batch_size: int = 1) -> dict[str, int]:
    """Predict every record not yet in ``out`` (this process's share of them), ``batch_size`` studies at a
    time (``predicted_batches``; a batch's studies are written when it is done); returns counts."""
    out = Path(out)
    place = place or RunPlace.from_environment()
    if overwrite and place.rank == 0:
        for path in _outputs(out):
            path.unlink()
    if place.world > 1:
        _wait_for_everyone()
    remaining = [r for r in records if r.id not in _done_ids(out, meta)]
    if place.world > 1:
        _wait_for_everyone()  # nobody writes before everybody has read what is done
    mine = remaining[place.rank :: place.world]
    target = place.output(out)
    if target.is_file():
        existing_meta, existing = read_predictions(target)
        _rewrite_complete(target, existing_meta, existing)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps({"_meta": meta}) + "\n", encoding="utf-8")
    failed = index = 0
    with target.open("a", encoding="utf-8") as handle:
        for batch in predicted_batches(engine, mine, tasks, settings, batch_size):
            for prediction in batch:
                failed += "error" in prediction
                handle.write(json.dumps(prediction) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
            for prediction in batch:
                index += 1
                if on_done is not None:
                    on_done(prediction, index, len(mine))
    if place.world > 1:
        _wait_for_everyone()
        if place.rank == 0:
            merge_parts(out, records, meta)
    return {"predicted": len(mine), "failed": failed, "skipped": len(records) - len(remaining)}


def merge_parts(out: Path, records, meta: dict[str, Any]) -> None:
    """Join ``out`` and its part files into ``out`` in manifest order; remove the parts."""
    parts = sorted(out.parent.glob(f"{out.name}.part*"))
    merged: dict[str, dict] = {}
    for path in ([out] if out.is_file() else []) + parts:
        merged.update(read_predictions(path)[1])
    order = [r.id for r in records if r.id in merged]
    _rewrite_complete(out, meta, {i: merged[i] for i in order})
    for path in parts:
        path.unlink()


def _wait_for_everyone() -> None:
    from accelerate import PartialState

    from napari_radreport.engine.device import training_on_cpu

    state = PartialState(cpu=training_on_cpu())  # without cpu=True, CPU processes would not form a group
    if state.num_processes < 2:
        raise RuntimeError("launched as several processes, but accelerate formed no process group to wait on")
    state.wait_for_everyone()


def run_meta(info, tasks: Sequence[str], settings, manifest: str | Path, split: str) -> dict[str, Any]:
    """The predictions file's first line: how it was made, and what a resumed run must match
    (``MATCHING_KEYS``). Its keys are a file format of their own (``read_predictions``, ``radreport eval``),
    not the report ``Provenance`` fields, though both come from the same ``ModelInfo``."""
    from napari_radreport import __version__
    from napari_radreport.common import utc_now
    from napari_radreport.engine.provenance import file_sha256

    return {"model": info.path, "model_name": info.name, "weights_sha256": info.weights_sha256,
            "radreport_version": __version__, "tasks": list(tasks), "settings": asdict(settings),
            "manifest": str(manifest), "manifest_sha256": file_sha256(manifest), "split": split,
            "device": info.device, "dtype": info.dtype, "quantization": info.quantization,
            "created": utc_now()}
