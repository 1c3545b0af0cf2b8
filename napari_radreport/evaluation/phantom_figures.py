"""The phantom preset's figures: present and absent findings apart, per finding sensitivity and specificity,
each with a bootstrap interval over studies and the blind baseline beside it.

Most phantom findings are absent (each is present with probability 0.35), so plain accuracy mostly counts the
easy "absent" case. Per part (Findings, Impression, diagnosis) this module gives: accuracy on all findings, on
the present ones (*fully right*: presence and side / lobe / nodule size) and on the absent ones (denied);
sensitivity (stated present among truly present, side / lobe / size aside); per finding its accuracy,
sensitivity, specificity (denied among truly absent) and share fully right when present (for the nodule: side,
lobe and size within 4 mm all right). The questions keep accuracy per kind.

The **blind baseline** reads no image: for every study it states each finding's majority answer on the scored
studies (absent where the finding's prevalence there is below 0.5, present otherwise) and answers each yes/no
question the same way; stating present, it is credited with the right side / lobe / size (an upper bound).
It has no answer to the other question kinds. Intervals are percentile intervals over seeded resamples of the
studies (``bootstrap.bootstrap_ratios``); model and blind are scored on the same draws.
"""

from __future__ import annotations

import textwrap
from typing import Any

import numpy as np

from napari_radreport.data.phantoms import reports
from napari_radreport.evaluation.bootstrap import Interval, bootstrap_ratios, ratios
from napari_radreport.evaluation.phantoms import DENIED, PARTS, PRESENT, PhantomScores

BLIND = ("reads no image: states each finding's majority answer on the scored studies (absent where its "
         "prevalence is below 0.5) for every study, credited with side / lobe / size when it states present; "
         "answers yes/no questions the same way and has no answer to the other kinds")
FINDING_FIGURES = ("accuracy", "sensitivity", "specificity", "fully_right_when_present")

Columns = dict[str, tuple[np.ndarray, np.ndarray]]  # figure path -> per-study (numerator, denominator)


def _arrays(scores: PhantomScores, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(truth, stated, right) of one part, each (studies, findings)."""
    shape = (len(scores.studies), len(reports.FINDING_NAMES))
    truth = np.array([s.truth[part] for s in scores.studies], dtype=bool).reshape(shape)
    stated = np.array([s.stated[part] for s in scores.studies], dtype=np.int8).reshape(shape)
    right = np.array([s.right[part] for s in scores.studies], dtype=bool).reshape(shape)
    return truth, stated, right


def blind_outcomes(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(majority answer per finding, what the blind system states, whether it is right) on ``truth``."""
    majority = truth.mean(0) >= 0.5
    stated = np.broadcast_to(np.where(majority, PRESENT, DENIED).astype(np.int8), truth.shape)
    return majority, stated, truth == majority


def part_columns(truth: np.ndarray, stated: np.ndarray, right: np.ndarray) -> Columns:
    """Numerator and denominator per study of every figure of one part."""
    absent, said_present, denied = ~truth, stated == PRESENT, stated == DENIED
    ones = np.ones(len(truth))
    columns: Columns = {
        "accuracy": (right.sum(1), np.full(len(truth), truth.shape[1])),
        "present": ((right & truth).sum(1), truth.sum(1)),
        "absent": ((right & absent).sum(1), absent.sum(1)),
        "sensitivity": ((said_present & truth).sum(1), truth.sum(1))}
    for j, name in enumerate(reports.FINDING_NAMES):
        columns[f"{name}/accuracy"] = (right[:, j], ones)
        columns[f"{name}/sensitivity"] = ((said_present & truth)[:, j], truth[:, j])
        columns[f"{name}/specificity"] = ((denied & absent)[:, j], absent[:, j])
        columns[f"{name}/fully_right_when_present"] = ((right & truth)[:, j], truth[:, j])
    return columns


def question_columns(scores: PhantomScores, majority: dict[str, bool],
                     truth: dict[str, np.ndarray]) -> tuple[Columns, Columns]:
    """(model, blind) numerator and denominator per study of the questions' accuracy, overall and per kind;
    the blind system only for yes/no kinds (``majority`` and ``truth``: per finding)."""
    kinds = list(dict.fromkeys(kind for s in scores.studies for kind, _, _ in s.answers))
    n = len(scores.studies)
    right, asked, blind = (np.zeros((n, len(kinds))) for _ in range(3))
    blind_kinds = {kind for s in scores.studies for kind, _, finding in s.answers if finding is not None}
    for i, study in enumerate(scores.studies):
        for kind, ok, finding in study.answers:
            j = kinds.index(kind)
            right[i, j] += ok
            asked[i, j] += 1
            if finding is not None:
                blind[i, j] += bool(truth[finding][i]) == majority[finding]
    model: Columns = {"accuracy": (right.sum(1), asked.sum(1))}
    model.update({f"{kind}/accuracy": (right[:, j], asked[:, j]) for j, kind in enumerate(kinds)})
    blind_columns = {f"{kind}/accuracy": (blind[:, j], asked[:, j]) for j, kind in enumerate(kinds)
                     if kind in blind_kinds}
    return model, blind_columns


def _figure(interval: Interval, numerator: np.ndarray, denominator: np.ndarray) -> dict[str, Any]:
    def number(x: float) -> float | None:
        return None if np.isnan(x) else float(x)

    return {"value": number(interval.value), "low": number(interval.low), "high": number(interval.high),
            "right": int(numerator.sum()), "n": int(denominator.sum())}


def _nest(flat: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """{"accuracy": ..., "nodule/sensitivity": ...} -> {"accuracy": ..., "by_finding": {"nodule": {...}}}."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        if "/" in path:
            kind, name = path.rsplit("/", 1)
            out.setdefault("by_kind", {}).setdefault(kind, {})[name] = value
        else:
            out[path] = value
    return out


def phantom_figures(scores: PhantomScores, *, resamples: int = 1000, seed: int = 0,
                    level: float = 0.95) -> dict[str, Any]:
    """Every figure of every part for the model and the blind baseline, with intervals (``resamples`` 0:
    none), as JSON-ready dicts: ``{part: {figure: {"model": {...}, "blind": {...}}, "by_kind": ...}}``."""
    if not scores.studies:
        raise ValueError("no studies to score")
    if resamples < 0:
        raise ValueError(f"resamples must be 0 or more, got {resamples}")
    columns: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}  # (part, system, figure)
    prevalence, majority_of, truth_of = {}, {}, {}
    for part in PARTS:
        truth, stated, right = _arrays(scores, part)
        majority, blind_stated, blind_right = blind_outcomes(truth)
        prevalence[part] = dict(zip(reports.FINDING_NAMES, truth.mean(0).tolist(), strict=True))
        if part == "findings":
            majority_of = dict(zip(reports.FINDING_NAMES, majority.tolist(), strict=True))
            truth_of = {name: truth[:, j] for j, name in enumerate(reports.FINDING_NAMES)}
        for system, (s, r) in (("model", (stated, right)), ("blind", (blind_stated, blind_right))):
            columns.update({(part, system, k): v for k, v in part_columns(truth, s, r).items()})
    model_q, blind_q = question_columns(scores, majority_of, truth_of)
    columns.update({("questions", "model", k): v for k, v in model_q.items()})
    columns.update({("questions", "blind", k): v for k, v in blind_q.items()})
    keys = list(columns)
    numerators = np.stack([np.asarray(columns[k][0], dtype=float) for k in keys], axis=1)
    denominators = np.stack([np.asarray(columns[k][1], dtype=float) for k in keys], axis=1)
    if resamples > 0:
        found = bootstrap_ratios(numerators, denominators, resamples=resamples, seed=seed, level=level)
    else:
        values = ratios(numerators.sum(0), denominators.sum(0))
        found = [Interval(float(v), float("nan"), float("nan")) for v in values]
    flat: dict[str, dict[str, dict[str, Any]]] = {part: {} for part in (*PARTS, "questions")}
    for j, (part, system, figure) in enumerate(keys):
        entry = flat[part].setdefault(figure, {"model": None, "blind": None})
        entry[system] = _figure(found[j], numerators[:, j], denominators[:, j])
    out: dict[str, Any] = {"n_studies": len(scores.studies), "resamples": resamples, "seed": seed,
                           "level": level, "blind": BLIND, "prevalence": prevalence,
                           "blind_states_present": {part: [n for n, p in prevalence[part].items() if p >= 0.5]
                                                    for part in PARTS}}
    for part, flat_part in flat.items():
        nested = _nest(flat_part)
        if part != "questions":
            nested["by_finding"] = nested.pop("by_kind")
        out[part] = nested
    return out


def _percent(figure: dict[str, Any] | None, interval: bool = True) -> str:
    if figure is None or figure["value"] is None:
        return "n/a"
    text = f"{100 * figure['value']:.1f}"
    if interval and figure["low"] is not None:
        text += f" [{100 * figure['low']:.1f}, {100 * figure['high']:.1f}]"
    return text


def format_figures(figures: dict[str, Any]) -> str:
    """A short table: per part, the model's figure [low, high] beside the blind baseline's, in %."""
    lines = [f"phantom preset, {figures['n_studies']} studies; % [low, high]: "
             + (f"{100 * figures['level']:g} % interval over {figures['resamples']} resamples of the studies "
                f"(seed {figures['seed']})" if figures["resamples"] else "no intervals (--bootstrap 0)"),
             *textwrap.wrap(f"blind: {figures['blind']}", 110, subsequent_indent="  ")]
    rows = {"accuracy": "accuracy, all findings", "present": "present findings, fully right",
            "absent": "absent findings, denied", "sensitivity": "sensitivity (presence only)"}
    for part in PARTS:
        block = figures[part]
        lines += ["", f"{part:<34}{'model':<24}blind"]
        lines += [f"  {label:<32}{_percent(block[key]['model']):<24}{_percent(block[key]['blind'])}"
                  for key, label in rows.items()]
        lines.append("  per finding: sensitivity / specificity / fully right when present (model | blind)")
        for name, row in block["by_finding"].items():
            model = " / ".join(_percent(row[k]["model"]) for k in FINDING_FIGURES[1:])
            blind = " / ".join(_percent(row[k]["blind"], interval=False) for k in FINDING_FIGURES[1:])
            lines.append(f"    {name:<22}{model} | {blind}")
    questions = figures["questions"]
    lines += ["", f"{'questions':<34}{'model':<24}blind",
              f"  {'all kinds':<32}{_percent(questions['accuracy']['model']):<24}n/a"]
    for kind, row in questions.get("by_kind", {}).items():
        figure = row["accuracy"]
        lines.append(f"  {kind:<32}{_percent(figure['model']):<24}{_percent(figure['blind'])}")
    nodule = figures["findings"]["by_finding"]["nodule"]["fully_right_when_present"]
    lines += ["", f"nodules whose side, lobe and size (within 4 mm) the Findings state right: "
                  f"{_percent(nodule['model'])} of {nodule['model']['n']} "
                  f"(blind {_percent(nodule['blind'])})"]
    return "\n".join(lines)
