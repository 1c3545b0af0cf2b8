"""The engine: one loaded model, one job at a time, the tasks a radiologist asks for. No Qt.

Every task runs synchronously (``engine.report(study)``, waiting for it) or in the background
(``engine.start("report", study)`` -> ``Job``). Tasks report ``events`` through ``on_event`` and check the
``stop`` flag before each decoding step. A second job while one runs raises ``EngineBusy``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_radreport.engine import prompts
from napari_radreport.engine.decoding import GenerationSettings
from napari_radreport.engine.events import (
    EventCallback,
    Finished,
    Progress,
    ScopeChecked,
    SectionStarted,
    ignore,
)
from napari_radreport.engine.jobs import Job, WorkerThread
from napari_radreport.engine.stages import Stage

if TYPE_CHECKING:
    from napari_radreport.consistency import Conflict
    from napari_radreport.modeling.prompt_spec import PromptSpec
    from napari_radreport.modeling.scope import ScopeVerdict

DEMO_MODEL_DIR = Path(__file__).resolve().parents[1] / "demo_model"


class EngineBusy(RuntimeError):
    """Another job is running on this engine."""


# tasks on a study: its scope is checked first
STUDY_TASKS = ("report", "ask", "choose", "diagnose", "ground", "ground_answer", "ground_label")


class EngineError(RuntimeError):
    """A task could not run (no model, out of memory, ...); the message says why in one line."""


def default_model() -> Path | None:
    """The model shipped with the package (the demo model), if this install has one."""
    return DEMO_MODEL_DIR if (DEMO_MODEL_DIR / "config.json").is_file() else None


def cannot_read(source: str | Path | None, study) -> str:
    """Why the model at ``source`` (None: the demo model) cannot read ``study`` at all, from its config.json
    alone, before any weights load (a CT model given radiographs, or the reverse); "" when it can, or when
    the folder is not a model (its load says why). Always refused, whatever ``allow_out_of_scope`` says."""
    from napari_radreport.modeling.checkpoints import CheckpointError
    from napari_radreport.modeling.families import declared_scope
    from napari_radreport.modeling.scope import modality_mismatch

    folder = Path(source) if source is not None else default_model()
    if folder is None:
        return ""
    try:
        mismatch = modality_mismatch(declared_scope(folder), study)
    except (CheckpointError, ValueError, OSError):
        return ""
    return f"{folder.name}: {mismatch}" if mismatch else ""


def load_line(folder: Path, device: str, dtype: Any) -> str:
    """What a load is about to read, from the safetensors headers (``catalog.weight_summary``, as the model
    list counts them): "Loading tiny-ct (53 tensors, 12.3 MB in float32) on cpu"; without the size for a
    folder whose weights are not (all) safetensors (pickles, an M3D-LaMed folder converted on load)."""
    from napari_radreport.modeling.catalog import human_bytes, weight_summary
    from napari_radreport.modeling.checkpoints import CheckpointError, weight_files

    try:
        tensors, parameters = weight_summary(weight_files(folder))
    except (CheckpointError, OSError, ValueError):
        return f"Loading {folder.name} on {device}"
    name = str(dtype).removeprefix("torch.")
    size = human_bytes(parameters * dtype.itemsize)
    return f"Loading {folder.name} ({tensors} tensors, {size} in {name}) on {device}"


@dataclass
class ModelInfo:
    name: str
    path: str
    kind: str  # the model's family ("radreport", "image-text-to-text"): modeling/families.py
    modality: str  # "ct" or "xray": what the model reads
    device: str
    dtype: str  # the compute dtype
    quantization: str = "none"  # "int8" / "int4": weight-only layers (modeling/quantize.py)
    adapters: list[str] = field(default_factory=list)
    weights_sha256: str = ""
    labels: tuple[str, ...] = ()  # what diagnosis asks about, and all it answers
    reads_indication: bool = False  # whether report questions carry the clinical indication
    warnings: list[str] = field(default_factory=list)
    # What was wrong with the weights of a model loaded with allow_partial (one line per kind: missing,
    # unexpected, wrong shape); empty when they fit the model. Whatever such a model writes is unreliable.
    incomplete: list[str] = field(default_factory=list)

    @property
    def precision(self) -> str:
        """'float32', or 'float32, 8-bit weights' for a quantized model."""
        from napari_radreport.modeling.quantize import LABELS

        return self.dtype if self.quantization == "none" else f"{self.dtype}, {LABELS[self.quantization]}"


@dataclass
class ReportResult:
    text: str  # each section's heading then its text, exactly as the events streamed them
    sections: list[tuple[str, str]]  # (title, text stripped of surrounding white space)
    stop_reason: str  # "eos", "length" or "stopped" (of the last section run)
    timings: dict[str, float] = field(default_factory=dict)
    scope: ScopeVerdict | None = None  # the study against the model's scope
    # The model's own diagnosis of the study (label -> P(yes); empty for a model without labels or a stopped
    # report) and where the text contradicts itself or that diagnosis (napari_radreport/consistency.py).
    diagnosis: dict[str, float] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    # The question each section answered (section name -> question; the first region's for regional
    # Findings): what grounding scores the section's sentences against.
    questions: dict[str, str] = field(default_factory=dict)


@dataclass
class Choice:
    letter: str
    probabilities: dict[str, float]
    scope: ScopeVerdict | None = None


class OutOfScope(EngineError):
    """The study is outside what the model was made for (``Engine.allow_out_of_scope`` runs it anyway)."""


class Engine:
    """Load a model, then report, ask, choose and diagnose on studies."""

    def __init__(self) -> None:
        self._busy = threading.Lock()
        self.runner = None
        self.info: ModelInfo | None = None
        self.job: Job | None = None
        self._worker = WorkerThread()  # every task runs on this one thread (see jobs.py for why)
        # A study outside the model's scope is refused (OutOfScope) unless this is set; its verdict is then
        # reported (a ScopeChecked event) and attached to the result either way.
        self.allow_out_of_scope = False
        self._grounder = None  # engine/grounding.py's Grounder for the loaded model (its heatmap cache)

    # -- model ----------------------------------------------------------------------------
    @property
    def thread_alive(self) -> bool:
        """Whether the engine's thread is running (it starts with the first task, ends at ``shutdown``)."""
        return self._worker.alive

    @property
    def loaded(self) -> bool:
        return self.runner is not None

    def _load(self, source: str | Path | None = None, *, device: str = "auto", dtype: str = "auto",
              quantization: str = "none", adapters: dict[str, str | Path] | None = None,
              allow_pickle: bool = False, allow_partial: bool = False, on_event: EventCallback = ignore,
              stop=None) -> ModelInfo:
        """Load a model (``quantization``: "none", or "int8" / "int4" weight-only layers,
        ``modeling/quantize.py``, made after its adapters load and before it moves to ``device``)."""
        from napari_radreport.engine import device as dev
        from napari_radreport.modeling.checkpoints import require_local_folder
        from napari_radreport.modeling.quantize import check_quantization

        check_quantization(quantization)

        if source is None:
            source = default_model()
            if source is None:
                raise EngineError("no model chosen and this install has no demo model; choose a model folder")
        folder = require_local_folder(source)
        self._unload()
        device_name = dev.resolve_device(device)
        torch_dtype = dev.resolve_dtype(device_name, dtype)
        Stage(on_event, "load", load_line(folder, device_name, torch_dtype))  # before the heavy imports
        from napari_radreport.engine.provenance import weights_sha256
        from napari_radreport.engine.runner import ModelRunner
        from napari_radreport.modeling.loading import load_model
        from napari_radreport.modeling.lora import load_adapter, use_adapter
        from napari_radreport.modeling.quantize import LABELS, quantization_summary, quantize_model

        precision = torch_dtype if quantization == "none" else quantization
        warnings = [w for w in [dev.memory_warning(folder, device_name, precision)] if w]
        for w in warnings:
            on_event(Progress("load", w))
        weights: list[Stage] = []

        def read(done: int, total: int) -> None:  # transformers' "Loading weights" loop, one call a tensor
            if done == 0:  # a loop begins (a family may load more than one part)
                weights[:] = [Stage(on_event, "weights", "Loading the weights", total=total, unit="tensors")]
            elif weights:
                weights[0].advance(done)

        found = {p.parent.name: p.parent for p in sorted(folder.glob("adapters/*/adapter_config.json"))}
        adapters = {**found, **(adapters or {})}
        # quantized as the weights load (the peak: the quantized model), unless adapters must wrap the
        # float layers first (then after them, from the model at full precision)
        on_load = quantization if not adapters else "none"
        if quantization != "none":
            when = " as they load" if on_load != "none" else " after the adapters"
            Stage(on_event, "load", f"Weights to {LABELS[quantization]}{when}")
        loaded = load_model(folder, allow_pickle=allow_pickle, allow_partial=allow_partial,
                            dtype=dev.loading_dtype(folder, torch_dtype, quantization), quantization=on_load,
                            quantize_for=device_name, on_weights=read)
        if loaded.incomplete:
            warnings.append(f"{folder.name} was loaded with weights that do not fit it "
                            f"({'; '.join(loaded.incomplete)}): whatever it writes is unreliable")
            on_event(Progress("load", warnings[-1]))
        for name, path in adapters.items():
            loaded.model = load_adapter(loaded.model, path, name, allow_pickle=allow_pickle)
        if adapters:
            use_adapter(loaded.model, next(iter(adapters)))
        if quantization != "none" and on_load == "none":
            quantize_model(loaded.model, quantization, device_name)
        if quantization != "none":
            loaded.model.to(torch_dtype)  # what stays float, loaded as stored (device.loading_dtype)
            summary = quantization_summary(loaded.model, quantization, torch_dtype.itemsize)
            on_event(Progress("load", f"Quantized {summary.line()}"))
        if device_name != "cpu":
            Stage(on_event, "load", f"Moving the weights to {device_name}")
            loaded.model.to(device_name)
        self.runner = ModelRunner(loaded, device_name)
        family = loaded.family
        self.info = ModelInfo(name=folder.name, path=str(folder), kind=family.name, modality=family.modality,
                              device=device_name, dtype=str(torch_dtype).removeprefix("torch."),
                              quantization=quantization,
                              adapters=list(getattr(loaded.model, "peft_config", {}) or {}),
                              weights_sha256=weights_sha256(folder, on_event),
                              labels=family.prompt_spec.labels, warnings=warnings,
                              reads_indication=family.prompt_spec.indication_template is not None,
                              incomplete=list(loaded.incomplete))
        return self.info

    def _unload(self, on_event: EventCallback = ignore, stop=None) -> None:
        from napari_radreport.engine.device import release_memory

        if self.runner is not None:
            self.runner.clear()
            self.runner.loaded.model = None
            self.runner = None
            self.info = None
            self._grounder = None
            release_memory()

    # -- tasks ----------------------------------------------------------------------------
    def scope_of(self, study) -> ScopeVerdict:
        """The loaded model's verdict on ``study``: is it what the model was made for (modeling/scope.py)?"""
        from napari_radreport.modeling.scope import scope_verdict

        return scope_verdict(self._runner().family.scope, study)

    def _runner(self):
        if self.runner is None:
            raise EngineError("no model is loaded; load one first")
        return self.runner

    def _spec(self) -> PromptSpec:
        """The loaded model's prompt spec (parsed once, when it loaded)."""
        return self._runner().family.prompt_spec

    def _adapter_for(self, task: str) -> None:
        from napari_radreport.modeling.lora import use_adapter

        model = self._runner().model
        names = list(getattr(model, "peft_config", {}) or {})
        if task in names:
            use_adapter(model, task)

    def _report(self, study, *, sections=prompts.SECTIONS, regions=None,
                settings: GenerationSettings | None = None, indication: str = "",
                on_event: EventCallback = ignore, stop=None) -> ReportResult:
        runner = self._runner()
        settings = settings or GenerationSettings()
        try:
            parts, found = self._report_parts(study, sections, regions, indication, on_event, stop)
        except InterruptedError:
            return ReportResult("", [], "stopped", {})
        done: list[tuple[str, str]] = []
        text = ""
        timings: dict[str, float] = {}
        reason = "eos"
        for index, (section, region, question) in enumerate(parts):
            if stop is not None and stop.is_set():
                reason = "stopped"
                break
            started = SectionStarted(prompts.section_title(section, region), index)
            on_event(started)
            self._adapter_for(section)
            finished = runner.generate(study, question, settings, on_event=on_event, stop=stop)
            done.append((started.title, finished.text.strip()))
            text += started.heading + finished.text
            reason = finished.stop_reason
            total = timings.get("total_s", 0.0) + finished.timings["total_s"]
            timings = {**(timings or finished.timings), "total_s": total}  # first section's split, total sum
            if reason == "stopped":
                break
        questions: dict[str, str] = {}
        for section, _region, question in parts:
            questions.setdefault(section, question)
        result = ReportResult(text, done, reason, timings, questions=questions)
        return self._checked(result, study, found, on_event, stop)

    def _report_parts(self, study, sections=prompts.SECTIONS, regions=None, indication: str = "",
                      on_event: EventCallback = ignore, stop=None
                      ) -> tuple[list[tuple[str, str | None, str]], dict[str, float]]:
        """The (section, region, question) a report asks in order, and the model's diagnosis when its reports
        are guided by it (asked first; InterruptedError when stopped during it)."""
        from napari_radreport.modeling.scope import study_modality

        runner, spec = self._runner(), self._spec()
        positives, found = None, {}
        if spec.report_guidance == "diagnosis":
            found = self._diagnose(study, on_event=on_event, stop=stop)
            positives = [label for label in self.info.labels if found[label] >= prompts.DIAGNOSIS_THRESHOLD]
        # a model that reads several kinds of study ("ct+xray") is asked about the kind on screen
        modality = runner.family.modality if "+" not in runner.family.modality else study_modality(study)
        parts: list[tuple[str, str | None, str]] = []
        for section in sections:
            for region in (regions or [None]) if section == "findings" else [None]:
                question = prompts.section_prompt(spec.tasks, section, modality, region)
                if positives is not None:
                    question = prompts.guided_section_prompt(question, positives)
                question = prompts.with_indication(spec.indication_template, question, indication)
                parts.append((section, region, question))
        return parts, found

    def _checked(self, result: ReportResult, study, found: dict[str, float], on_event: EventCallback,
                 stop) -> ReportResult:
        """``result`` with the model's diagnosis of ``study`` (run now unless the report was guided by it)
        and the report's conflicts with itself and with it; a stopped report is not checked."""
        from napari_radreport.consistency import find_conflicts

        if result.stop_reason == "stopped":
            return result
        if not found and self.info.labels:
            on_event(Progress("check", "Checking the report against the model's diagnosis"))
            try:
                found = self._diagnose(study, on_event=on_event, stop=stop)
            except InterruptedError:
                return result
        return replace(result, diagnosis=dict(found), conflicts=find_conflicts(result.text, found))

    def _ask(self, study, question: str, *, history=(), settings: GenerationSettings | None = None,
             on_event: EventCallback = ignore, stop=None) -> Finished:
        if not question.strip():
            raise EngineError("the question is empty")
        self._adapter_for("vqa")
        return self._runner().generate(study, question.strip(), settings or GenerationSettings(),
                                       history=history, on_event=on_event, stop=stop)

    def _choose(self, study, question: str, choices: list[str], *, on_event: EventCallback = ignore,
                stop=None) -> Choice:
        import torch

        self._adapter_for("vqa")
        spec, runner, letters = self._spec(), self._runner(), prompts.LETTERS[:len(choices)]
        text = prompts.choice_prompt(spec.tasks, question, choices)
        if spec.choice_answer == "text":
            scores = runner.answer_logprobs(study, text, choices, on_event=on_event, stop=stop)
            odds = torch.softmax(scores, dim=0)
            probabilities = dict(zip(letters, odds.tolist()))
        else:
            logprobs = runner.next_token_logprobs(study, [text], on_event=on_event, stop=stop)[0]
            scores = {letter: _mass(logprobs, self._variants(letter)) for letter in letters}
            total = sum(scores.values()) or 1.0
            probabilities = {k: v / total for k, v in scores.items()}
        return Choice(max(probabilities, key=probabilities.get), probabilities)

    def _declared(self, labels) -> list[str]:
        """The model's own spelling of each asked label (case and surrounding spaces aside); an EngineError
        names the labels it does not declare: it was never taught them, and its answer would be noise."""
        declared = self.info.labels
        known = {label.strip().casefold(): label for label in declared}
        asked = [labels] if isinstance(labels, str) else [str(label) for label in labels]
        unknown = [label for label in asked if label.strip().casefold() not in known]
        if unknown:
            raise EngineError(f"{self.info.name} does not declare the label(s) {', '.join(unknown)}; "
                              f"it answers only for its own: {', '.join(declared) or '(none)'}")
        return list(dict.fromkeys(known[label.strip().casefold()] for label in asked))

    def _diagnose(self, study, labels=None, *, on_event: EventCallback = ignore,
                  stop=None) -> dict[str, float]:
        """P(yes) for each label from the model's answer to "Does this image show signs of {label}?".

        Only labels the model declares (``ModelInfo.labels``, from its prompt spec) are answered, keyed by
        the model's spelling; asking for another is an EngineError naming it."""
        self._runner()
        labels = self._declared(labels) if labels else list(self.info.labels)
        self._adapter_for("vqa")
        tasks = self._spec().tasks
        logprobs = self._runner().next_token_logprobs(
            study, [prompts.diagnosis_prompt(tasks, label) for label in labels], on_event=on_event, stop=stop)
        yes, no = self._variants("Yes"), self._variants("No")
        result = {}
        for label, row in zip(labels, logprobs):
            p_yes, p_no = _mass(row, yes), _mass(row, no)
            result[label] = p_yes / (p_yes + p_no) if p_yes + p_no > 0 else 0.5
        return result

    def _variants(self, word: str) -> list[int]:
        """First token ids of a word as the model may start an answer with it (case, leading space)."""
        tokenizer = self._runner().family.tokenizer
        ids = set()
        for text in (word, " " + word, word.lower(), " " + word.lower()):
            pieces = tokenizer(text, add_special_tokens=False)["input_ids"]
            if pieces and pieces[0] != tokenizer.unk_token_id:
                ids.add(pieces[0])
        if not ids:
            raise EngineError(f"the tokenizer has no token for {word!r}")
        return sorted(ids)

    # -- grounding (engine/grounding.py) ----------------------------------------------------------------
    def _grounding(self, method: str | None):
        """The engine's Grounder for ``method`` (None: the model's default, engine/grounding.py)."""
        from napari_radreport.engine.grounding import Grounder, default_method

        method = method or default_method(self._runner())
        grounder = self._grounder
        if grounder is None or grounder.method != method or grounder.runner is not self.runner:
            self._grounder = Grounder(self._runner(), method)
        return self._grounder

    def _ground(self, study, text: str, *, questions: dict[str, str] | None = None,
                method: str | None = None, indication: str = "", on_event: EventCallback = ignore,
                stop=None) -> list:
        """Every sentence of a report's ``text`` (``GroundedSentence``), those of its Findings and Impression
        that state a finding located in the study. ``questions`` (section -> question, a ReportResult's) are
        what the sections answered; without them they are asked as a report would ask them now."""
        from napari_radreport.engine.grounding import ground_report

        if questions is None:
            parts, _found = self._report_parts(study, indication=indication, on_event=on_event, stop=stop)
            questions = {}
            for section, _region, question in parts:
                questions.setdefault(section, question)
        return ground_report(self._grounding(method), study, text, questions, on_event, self._adapter_for)

    def _ground_answer(self, study, question: str, answer: str, *, history=(),
                       method: str | None = None, on_event: EventCallback = ignore, stop=None) -> list:
        """Every sentence of a chat answer, those stating a finding located."""
        from napari_radreport.engine.grounding import ground_answer

        self._adapter_for("vqa")
        return ground_answer(self._grounding(method), study, question.strip(), answer, history, on_event)

    def _ground_label(self, study, label: str, *, method: str | None = None,
                      on_event: EventCallback = ignore, stop=None):
        """Where the model's "Yes" to its diagnosis question for ``label`` comes from (a Findings row)."""
        from napari_radreport.engine.grounding import ground_label

        (label,) = self._declared([label])
        self._adapter_for("vqa")
        question = prompts.diagnosis_prompt(self._spec().tasks, label)
        return ground_label(self._grounding(method), study, label, question, on_event)

    def region_question(self, study, low_lps, high_lps) -> str:
        """The loaded model's question about what is in a patient-space box (LPS mm corners; a box drawn in
        napari), the box written in the model's own format; an EngineError when the model does not read
        boxes or the box misses what it sees of the study. Cheap: no model pass."""
        from napari_radreport.engine.grounding import writes_boxes
        from napari_radreport.grounding.locate import model_box_of_patient_box
        from napari_radreport.modeling.m3d_boxes import Box, format_box
        from napari_radreport.modeling.processor import model_grid

        runner = self._runner()
        if not writes_boxes(runner):
            raise EngineError("this model was not trained to read boxes (M3D-LaMed's <bx_start>...<bx_end>); "
                              "ask about the region in words")
        grid = model_grid(study, runner.family.preprocess)
        found = model_box_of_patient_box(low_lps, high_lps, grid)
        if found is None:
            raise EngineError("the box lies outside the part of the study the model sees")
        box = format_box(Box(tuple(found[0]), tuple(found[1])), grid.model_shape)
        return self._spec().tasks["region"].format(box=box)

    # -- running --------------------------------------------------------------------------
    TASKS = ("load", "unload", "report", "ask", "choose", "diagnose", "ground", "ground_answer",
             "ground_label")

    def _guarded(self, name: str) -> Callable[..., Any]:
        method = getattr(self, "_" + name)

        def run(*args, **kwargs):
            from napari_radreport.engine.device import is_out_of_memory, release_memory

            try:
                if name not in STUDY_TASKS:
                    return method(*args, **kwargs)
                prior = (getattr(args[0], "extra", None) or {}).get("prior")
                if prior is not None and not self._runner().family.reads_prior:
                    raise EngineError(f"{self.info.name} does not compare a study with a prior one; ask "
                                      "without the prior study")
                verdict = self.scope_of(args[0])
                kwargs["on_event"](ScopeChecked(verdict))
                if not verdict.readable:
                    raise OutOfScope(verdict.warning())
                if not verdict.in_scope and not self.allow_out_of_scope:
                    raise OutOfScope(f"{verdict.warning()} To run it anyway: --allow-out-of-scope, or "
                                     f"\"Allow studies outside the model's scope\" in Settings")
                return _with_scope(method(*args, **kwargs), verdict)
            except BaseException as exc:
                if not is_out_of_memory(exc):
                    raise
                if self.runner is not None:
                    self.runner.clear()
                release_memory()
                where = self.info.device if self.info else "this device"
                raise EngineError(f"out of memory on {where} during {name}; caches were freed. Try fewer new "
                                  f"tokens, a smaller model or another device") from exc
        return run

    def start(self, task: str, *args: Any, **kwargs: Any) -> Job:
        """Run a task on the engine's thread; ``EngineBusy`` if a job is already running."""
        if task not in self.TASKS:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(self.TASKS)}")
        if not self._busy.acquire(blocking=False):
            raise EngineBusy("the model is busy with another request; wait for it or press Stop")
        try:
            self.job = Job(self._guarded(task), *args, on_done=lambda _job: self._busy.release(),
                           on_event=kwargs.pop("on_event", None), stop_event=kwargs.pop("stop", None),
                           **kwargs).start(self._worker)
        except BaseException:
            self._busy.release()
            raise
        return self.job

    def run(self, task: str, *args: Any, **kwargs: Any) -> Any:
        """Run a task and wait for it (scripts and the command line).

        ``on_event`` is called on the engine's thread as each event happens (so setting ``stop`` there takes
        effect before the next step). Interrupted here (Ctrl-C), the task is stopped and waited for first.
        """
        kwargs.setdefault("on_event", ignore)
        job = self.start(task, *args, **kwargs)
        try:
            job.join()
        except BaseException:
            job.stop()
            job.join()
            raise
        return job.result()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` run on the engine's thread between tasks, its result returned here.

        For scripts that drive the loaded model themselves (the benchmarks): they then share the thread, and
        the CPU thread team, of the engine's own work.
        """
        if not self._busy.acquire(blocking=False):
            raise EngineBusy("the model is busy with another request; wait for it or press Stop")
        try:
            job = Job(lambda on_event, stop: fn(*args, **kwargs),
                      on_done=lambda _job: self._busy.release()).start(self._worker)
        except BaseException:
            self._busy.release()
            raise
        return job.result()

    def load(self, source=None, **kwargs: Any) -> ModelInfo:
        return self.run("load", source, **kwargs)

    def unload(self) -> None:
        self.run("unload")

    def report(self, study, **kwargs: Any) -> ReportResult:
        return self.run("report", study, **kwargs)

    def ask(self, study, question: str, **kwargs: Any) -> Finished:
        return self.run("ask", study, question, **kwargs)

    def choose(self, study, question: str, choices: list[str], **kwargs: Any) -> Choice:
        return self.run("choose", study, question, choices, **kwargs)

    def diagnose(self, study, labels=None, **kwargs: Any) -> dict[str, float]:
        return self.run("diagnose", study, labels, **kwargs)

    def ground(self, study, text: str, **kwargs: Any) -> list:
        return self.run("ground", study, text, **kwargs)

    def ground_answer(self, study, question: str, answer: str, **kwargs: Any) -> list:
        return self.run("ground_answer", study, question, answer, **kwargs)

    def ground_label(self, study, label: str, **kwargs: Any):
        return self.run("ground_label", study, label, **kwargs)

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop a running job and end the engine's thread once it is done (a later task starts a new one);
        True when the thread has ended within ``timeout`` seconds."""
        if self.job is not None:
            self.job.stop()
        return self._worker.close(timeout)


def _with_scope(result: Any, verdict: ScopeVerdict) -> Any:
    """``result`` carrying ``verdict`` where it has a ``scope`` field (a report, an answer, a choice)."""
    has_scope = hasattr(result, "__dataclass_fields__") and "scope" in {f.name for f in fields(result)}
    return replace(result, scope=verdict) if has_scope else result


def _mass(logprobs, ids: list[int]) -> float:
    import torch

    return float(torch.logsumexp(logprobs[ids], dim=0).exp())
