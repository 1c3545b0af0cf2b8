"""``radreport report | ask | diagnose``: the engine from the command line.

Tokens stream to stdout as they are decoded; progress and warnings go to stderr. Ctrl-C stops the
generation cleanly (the partial draft is still written, marked incomplete) and exits with 130; Ctrl-C
while the model loads ends the command at once (``LoadAbandoned``). ``--out`` is checked before anything
is read or loaded.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from napari_radreport.cli.model_flags import add_precision_flags
from napari_radreport.cli.study import add_mixed_patients_flag
from napari_radreport.engine.prompts import REGIONS
from napari_radreport.export.formats import FORMATS


class LoadAbandoned(KeyboardInterrupt):
    """Ctrl-C while the model loads. A load does not stop midway (``Engine.run`` would stop the job, then
    wait minutes for a large model), so ``main`` ends the process at once instead of waiting for it."""

    exit_now = True


def _engine_and_study(args: argparse.Namespace, paths: list[str], check_study=None):
    from napari_radreport.cli.study import load_paths
    from napari_radreport.engine import Engine, OutOfScope, Progress
    from napari_radreport.engine.engine import cannot_read

    study = load_paths(paths, series=args.series, allow_mixed_patients=args.allow_mixed_patients)
    if getattr(args, "prior", None):  # a prior radiograph set to compare with (MedGemma 1.5)
        from napari_radreport.modeling.medgemma import with_prior

        prior = load_paths(args.prior, allow_mixed_patients=args.allow_mixed_patients)
        study = with_prior(study, prior)
    refusal = cannot_read(args.model, study)  # from config.json: nothing loads for a study it cannot read
    if refusal:
        raise OutOfScope(f"{refusal}; the model was not loaded")
    if check_study is not None:  # the command's own refusals of this study, before the model loads
        check_study(study)
    engine = Engine()
    engine.allow_out_of_scope = args.allow_out_of_scope

    def progress(event: Any) -> None:
        # a stage's start and end, not its updates (a terminal is no progress bar)
        if isinstance(event, Progress) and event.stage == "load" and event.done in (None, 0, event.total):
            print(f"radreport: {event.message}", file=sys.stderr)

    try:  # engine.load, except that an interrupt does not wait for the load to end
        job = engine.start("load", args.model, device=args.device, dtype=args.dtype,
                           quantization=args.quantize, allow_partial=args.allow_partial, on_event=progress)
        job.join()
    except KeyboardInterrupt as exc:
        if engine.thread_alive:  # the load runs on the engine's thread and cannot be stopped
            engine.shutdown(timeout=0)
            raise LoadAbandoned() from exc
        raise
    job.result()  # the load's error, if any
    return engine, study


def _stream(engine, task: str, *args: Any, **kwargs: Any):
    """Run a task in the background, print its tokens; Ctrl-C asks it to stop. Returns
    (result, interrupted)."""
    from napari_radreport.engine import SectionStarted, Token

    job = engine.start(task, *args, **kwargs)
    interrupted = False
    while True:
        try:
            for event in job.events():
                if isinstance(event, Token):
                    print(event.text, end="", flush=True)
                elif isinstance(event, SectionStarted):
                    print(event.heading, end="", flush=True)
                else:
                    _warn_scope(event)
            break
        except KeyboardInterrupt:
            interrupted = True
            job.stop()
            print("\nradreport: stopping…", file=sys.stderr)
    print(flush=True)
    return job.result(), interrupted


def _warn_scope(event: Any) -> None:
    """A scope verdict's warning on stderr, before anything is written about the study."""
    from napari_radreport.engine import ScopeChecked

    if isinstance(event, ScopeChecked) and event.verdict.warning():
        print(f"radreport: {event.verdict.warning()}", file=sys.stderr, flush=True)


def _generation(args: argparse.Namespace):
    from napari_radreport.engine import GenerationSettings

    return GenerationSettings(max_new_tokens=args.max_new_tokens, do_sample=args.temperature > 0,
                              temperature=args.temperature or 0.7, seed=args.seed)


def cmd_report(args: argparse.Namespace) -> int:
    from napari_radreport.engine.provenance import report_provenance, report_task
    from napari_radreport.export import ReportRecord, StudyReference, export_report

    sections = ("findings", "impression") if args.task == "both" else (args.task,)
    regions = None
    if args.region:
        regions = list(REGIONS) if args.region == "all" else [r.strip() for r in args.region.split(",")]
        unknown = sorted(set(regions) - set(REGIONS))
        if unknown:
            raise ValueError(f"unknown region(s) {', '.join(unknown)}; use {', '.join(REGIONS)} or all")
    if args.out:
        _check_out(args)
    engine, study = _engine_and_study(args, args.paths, check_study=lambda s: _check_export(args, s))
    settings = _generation(args)
    result, interrupted = _stream(engine, "report", study, sections=sections, regions=regions,
                                  settings=settings)
    for conflict in result.conflicts:
        print(f"radreport: conflict in the report: {conflict.message}", file=sys.stderr)
    grounding = _grounding(engine, study, result) if args.ground and result.stop_reason != "stopped" else []
    if args.out:
        provenance = report_provenance(engine.info, report_task(sections, regions), settings, result.scope)
        record = ReportRecord(final_text=result.text, ai_draft=result.text,
                              study=StudyReference.from_study(study), provenance=provenance,
                              stop_reason=result.stop_reason, include_paths=args.include_paths,
                              diagnosis=result.diagnosis, grounding=grounding)
        written = export_report(record, args.out, fmt=args.format, overwrite=args.overwrite)
        print(f"radreport: wrote {written}" + (" (stopped early)" if result.stop_reason == "stopped" else ""),
              file=sys.stderr)
    return 130 if interrupted else 0


def _grounding(engine, study, result) -> list[dict[str, Any]]:
    """Each sentence of the report with its location (``--ground``), one line per stated finding on stderr."""
    from napari_radreport.grounding.location import peak_words

    sentences = engine.ground(study, result.text, questions=result.questions)
    if result.scope is not None and not result.scope.in_scope:
        print("radreport: the study is outside the model's scope: these locations are as meaningless as the "
              "draft", file=sys.stderr)
    for s in (s for s in sentences if s.finding):
        where = f"peak at {peak_words(s.location.as_dict())}" if s.location else f"no location ({s.why_none})"
        print(f"radreport: {s.section}: {s.text!r}: {where}", file=sys.stderr)
    return [s.as_dict() for s in sentences]


def _check_out(args: argparse.Namespace) -> None:
    """Refuse ``--out`` before the study is read and the model loaded: the export's own checks (format and
    suffix agree, folder exists and is writable, not a folder, no file there unless ``--overwrite``)."""
    from napari_radreport.export import ExportExists, check_target

    try:
        check_target(args.out, args.format, overwrite=args.overwrite)
    except ExportExists as exc:
        raise ExportExists(f"{args.out} exists; pass --overwrite to replace it") from exc


def _check_export(args: argparse.Namespace, study) -> None:
    """A DICOM SR of a study of several patients is refused once the study is read, before the model loads."""
    from napari_radreport.export import ReportRecord, StudyReference
    from napari_radreport.export.dicom_sr import one_patient
    from napari_radreport.export.writers import format_for

    if args.out and format_for(args.out, args.format) == "sr":
        one_patient(ReportRecord(final_text="", study=StudyReference.from_study(study)))


def cmd_ask(args: argparse.Namespace) -> int:
    *paths, question = args.items
    if not paths:
        raise ValueError("give the study's path(s) then the question in quotes")
    engine, study = _engine_and_study(args, paths)
    settings = _generation(args)
    if args.choices:
        choice = engine.choose(study, question, args.choices, on_event=_warn_scope)
        if args.json:
            _print_answer(engine, "choose", settings, choice.scope, letter=choice.letter,
                          probabilities=choice.probabilities)
            return 0
        print(choice.letter)
        probabilities = ", ".join(f"{k} {v:.1%}" for k, v in choice.probabilities.items())
        print(f"radreport: {probabilities}", file=sys.stderr)
        return 0
    if args.json:  # one object on stdout, nothing streamed; Ctrl-C ends with 130 as anywhere
        answer = engine.ask(study, question, settings=settings, on_event=_warn_scope)
        _print_answer(engine, "ask", settings, answer.scope, answer=answer.text.strip(),
                      token_ids=answer.token_ids, stop_reason=answer.stop_reason)
        return 0
    _result, interrupted = _stream(engine, "ask", study, question, settings=settings)
    return 130 if interrupted else 0


def _print_answer(engine, task: str, settings, scope, **answer: Any) -> None:
    """``radreport ask --json``: the answer, then the model, the scope verdict and the provenance."""
    from napari_radreport.engine.provenance import report_provenance

    provenance = report_provenance(engine.info, task, settings, scope).as_dict()
    print(json.dumps({**answer, "model": engine.info.name, "scope": provenance["scope"] or None,
                      "provenance": provenance}, indent=2))


def cmd_diagnose(args: argparse.Namespace) -> int:
    engine, study = _engine_and_study(args, args.paths)
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    checked = []
    result = engine.diagnose(study, labels, on_event=lambda e: (_warn_scope(e), checked.append(e)))
    if args.json:
        scope = next((e.verdict.as_dict() for e in checked if hasattr(e, "verdict")), None)
        print(json.dumps({"model": engine.info.name, "weights_sha256": engine.info.weights_sha256,
                          "scope": scope, "probabilities": result}, indent=2))
        return 0
    width = max(map(len, result))
    for label, p in sorted(result.items(), key=lambda kv: -kv[1]):
        print(f"{label:<{width}}  {p:6.1%}")
    return 0


def add_task_commands(sub, common: argparse.ArgumentParser) -> None:
    model = argparse.ArgumentParser(add_help=False, parents=[common])
    model.add_argument("--model", help="model folder (default: the demo model shipped with the package)")
    model.add_argument("--device", default="auto",
                       help="auto (CUDA, then MPS, then CPU), cuda, cuda:N, mps or cpu")
    add_precision_flags(model)
    model.add_argument("--series", help="series index or SeriesInstanceUID (default: the main CT series)")
    model.add_argument("--allow-out-of-scope", action="store_true",
                       help="run a study the model was not made for (its outputs say so) instead of refusing")
    model.add_argument("--prior", nargs="+", metavar="PATH",
                       help="an earlier radiograph set of the same patient to compare with (models that read "
                            "priors: MedGemma 1.5)")
    model.add_argument("--allow-partial", action="store_true",
                       help="load a model whose weights miss tensors (every output is marked incomplete)")
    add_mixed_patients_flag(model)
    generation = argparse.ArgumentParser(add_help=False)
    generation.add_argument("--max-new-tokens", type=int, default=256)
    generation.add_argument("--temperature", type=float, default=0.0, help="0 (default) decodes greedily")
    generation.add_argument("--seed", type=int, default=0, help="sampling seed")

    report = sub.add_parser("report", parents=[model, generation],
                            help="write a report draft (streams to stdout)")
    report.add_argument("paths", nargs="+", help="NIfTI file, DICOM folder/files, or radiographs")
    report.add_argument("--task", default="both", choices=["both", "findings", "impression"])
    report.add_argument("--region", help="CT findings per region: all, or a list such as chest,abdomen")
    report.add_argument("--format", choices=FORMATS, help="default: from --out's suffix")
    report.add_argument("--out", help="also write the report to this file")
    report.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    report.add_argument("--ground", action="store_true",
                        help="locate each finding sentence in the image (CT; the JSON export carries them)")
    report.add_argument("--include-paths", action="store_true",
                        help="keep the study's source file and folder paths in a JSON --out (left out by "
                             "default: folder names often hold patient names)")
    report.set_defaults(func=cmd_report)

    ask = sub.add_parser("ask", parents=[model, generation], help="ask a question about a study")
    ask.add_argument("items", nargs="+", metavar="PATH... QUESTION",
                     help="the study's path(s), then the question")
    ask.add_argument("--choices", nargs="+",
                     help="options of a multiple-choice question (answered with a letter)")
    ask.add_argument("--json", action="store_true",
                     help="print one JSON object: the answer, its token ids (or the letter and each option's "
                          "probability), the model, the scope verdict and the provenance")
    ask.set_defaults(func=cmd_ask)

    diagnose = sub.add_parser("diagnose", parents=[model], help="probability of each abnormality")
    diagnose.add_argument("paths", nargs="+")
    diagnose.add_argument("--labels", help="comma-separated labels (default: the model's, e.g. CT-RATE's 18)")
    diagnose.add_argument("--json", action="store_true", help="print JSON")
    diagnose.set_defaults(func=cmd_diagnose)
