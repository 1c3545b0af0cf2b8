"""A task's stages as the user sees them: what loads and its size first, then each stage with its count and
time (the engine's events, from tiny real models on real images), and the same job in napari's activity dock
(a real viewer), whose bar is closed however the job ends."""

from __future__ import annotations

import math
import re
import shutil
import threading
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from napari_radreport import load_study  # noqa: E402
from napari_radreport.engine import (  # noqa: E402
    Engine,
    GenerationSettings,
    Progress,
    stages,
)
from napari_radreport.modeling.catalog import human_bytes  # noqa: E402

WAIT_MS = 60_000
LIMIT = stages.MAX_UPDATES + 2  # events a stage may send: its start, its updates, its end


def _weights_of(folder: Path) -> tuple[int, int]:
    """(tensors, bytes in float32) of a folder's safetensors files, read with the safetensors library."""
    from safetensors import safe_open

    tensors = parameters = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), "pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (a safe_open handle is not a mapping)
                tensors += 1
                parameters += math.prod(handle.get_slice(name).get_shape())
    return tensors, 4 * parameters


def _runs(events: list) -> list[tuple[str, list[Progress]]]:
    """The Progress events grouped into runs of one stage, in order."""
    runs: list[tuple[str, list[Progress]]] = []
    for event in events:
        if isinstance(event, Progress):
            if runs and runs[-1][0] == event.stage:
                runs[-1][1].append(event)
            else:
                runs.append((event.stage, [event]))
    return runs


@pytest.fixture()
def every_step(monkeypatch):
    """No time between updates: each stage sends all the updates its step limit allows."""
    monkeypatch.setattr(stages, "MIN_INTERVAL_S", 0.0)


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RADREPORT_CACHE", str(tmp_path / "cache"))  # the weights' hash is not known yet


@pytest.mark.parametrize("kind", ["ct", "xray"])
def test_a_first_load_says_what_loads_then_each_stage_counts_up_with_its_time(
        kind, tiny_ct_model, tiny_xray_model, abdomen_nifti, shared_data, tmp_path, every_step, fresh_cache):
    folder = shutil.copytree(tiny_ct_model if kind == "ct" else tiny_xray_model, tmp_path / f"tiny-{kind}")
    study = load_study(abdomen_nifti if kind == "ct" else
                       shared_data / "xray" / "nih_00000001_000_cardiomegaly.png")
    engine = Engine()
    events: list = []
    try:
        engine.load(folder, device="cpu", dtype="float32", on_event=events.append)
        loaded = len(events)
        engine.report(study, sections=("findings",), settings=GenerationSettings(max_new_tokens=3),
                      on_event=events.append)
    finally:
        engine.shutdown()
    tensors, size = _weights_of(folder)
    assert events[0] == Progress("load", f"Loading tiny-{kind} ({tensors} tensors, {human_bytes(size)} in "
                                         "float32) on cpu", None, elapsed_s=0.0)
    runs = _runs(events)
    load_runs = [stage for stage, _ in _runs(events[:loaded])]
    assert load_runs == ["load", "weights", "load"], load_runs  # announced, read, hashed
    stage_order = [stage for stage, _ in runs[len(load_runs):]]
    assert stage_order[:4] == ["preprocess", "encode", "prefill", "decode"], stage_order
    counted: dict[str, list[Progress]] = {}  # each counted stage's first run
    for stage, run in runs:
        if stage in ("weights", "encode", "prefill"):
            counted.setdefault(stage, run)
    weights = counted["weights"]
    assert weights[-1].message.startswith(f"Loading the weights {tensors}/{tensors} tensors · ")
    hashing = runs[2][1]
    assert hashing[0].message.startswith("Hashing the weights for provenance 0")
    assert hashing[-1].fraction == 1.0
    blocks = 2  # the tiny models' vision towers and language models each have two
    assert [e.message.split(" · ")[0] for e in counted["encode"]] == [
        f"Encoding the image {n}/{blocks} blocks" for n in range(blocks + 1)]
    assert re.fullmatch(r"Encoding the image 2/2 blocks · \d+\.\d s", counted["encode"][-1].message)
    assert re.fullmatch(r"Reading the prompt \(\d+ tokens\) 2/2 layers · \d+\.\d s",
                        counted["prefill"][-1].message)
    for stage, run in runs:
        fractions = [e.fraction for e in run if e.fraction is not None]
        assert fractions == sorted(fractions), (stage, fractions)  # rising
        if stage in counted:
            assert fractions[0] == 0.0 and fractions[-1] == 1.0, (stage, fractions)
            assert run[-1].done == run[-1].total
        elapsed = [e.elapsed_s for e in run if e.elapsed_s is not None]
        assert elapsed == sorted(elapsed) and all(t >= 0 for t in elapsed), (stage, elapsed)
        assert len(run) <= LIMIT or stage not in counted, (stage, len(run))


def test_a_long_stage_sends_a_few_dozen_events_at_most(tiny_ct_model, every_step):
    sent: list = []
    stage = stages.Stage(sent.append, "weights", "Loading the weights", total=5000, unit="tensors")
    for done in range(1, 5001):
        stage.advance(done)
    stage.finish()
    assert len(sent) <= LIMIT and sent[-1].fraction == 1.0 and sent[-1].done == 5000
    assert [e.fraction for e in sent] == sorted(e.fraction for e in sent)

    engine, events = Engine(), []  # a real load of 53 tensors: every one counted, a few dozen events sent
    try:
        engine.load(tiny_ct_model, device="cpu", on_event=events.append)
    finally:
        engine.shutdown()
    weights = [e for e in events if e.stage == "weights"]
    assert 3 <= len(weights) <= LIMIT and weights[-1].fraction == 1.0


# -- napari's activity dock ------------------------------------------------------------------------------
@pytest.fixture()
def viewer_docks(docked, qtbot, tiny_ct_model, abdomen_nifti):
    """A real viewer with the docks and the abdomen CT open; the tiny CT model chosen, not loaded."""
    from napari_radreport.viewer import add_study

    session = docked["session"]
    session.update_settings(model_folder=str(tiny_ct_model), device="cpu", dtype="float32", max_new_tokens=4)
    add_study(docked["viewer"], load_study(abdomen_nifti))
    yield docked
    session.stop()
    qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)


@pytest.fixture()
def bars():
    """napari's open progress bars now (a set kept up to date) and every description one was added with."""
    from napari.utils.progress import progress

    before = set(progress._all_instances)
    added: list[str] = []

    def changed(event) -> None:
        added.extend(bar.desc for bar in event.added)

    progress._all_instances.events.changed.connect(changed)
    yield lambda: set(progress._all_instances) - before, added
    progress._all_instances.events.changed.disconnect(changed)


def _held_encoder(session, gate: threading.Event, error: Exception | None = None):
    """The loaded model's vision tower waits for ``gate`` (then raises ``error``, if given)."""
    def hold(*_args) -> None:
        assert gate.wait(30)
        if error is not None:
            raise error

    return session.engine.runner.model.vision_tower.register_forward_pre_hook(hold)


def _load(docks, qtbot) -> None:
    session = docks["session"]
    docks["Report"].load_model()
    qtbot.waitUntil(lambda: session.engine.loaded and not session.busy, timeout=WAIT_MS)


def _only_bar(open_bars):
    (bar,) = open_bars()
    return bar


def test_the_first_generate_says_what_loads_and_napari_shows_each_stage(viewer_docks, qtbot, bars,
                                                                       tiny_ct_model, monkeypatch):
    import napari_radreport.modeling.loading as loading

    report, session = viewer_docks["Report"], viewer_docks["session"]
    open_bars, added = bars
    gate, real = threading.Event(), loading.load_model

    def held_load(*args, **kwargs):
        assert gate.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(loading, "load_model", held_load)
    report.generate()  # no model yet: it loads first
    tensors, size = _weights_of(tiny_ct_model)
    said = f"Loading tiny-ct ({tensors} tensors, {human_bytes(size)} in float32) on cpu"
    qtbot.waitUntil(lambda: report.status.text() == said, timeout=WAIT_MS)
    qtbot.waitUntil(lambda: len(open_bars()) == 1 and _only_bar(open_bars).desc.startswith(said),
                    timeout=WAIT_MS)
    assert _only_bar(open_bars).total == 0  # indeterminate while the weights are not being read
    gate.set()
    qtbot.waitUntil(lambda: session.engine.loaded and not session.busy, timeout=WAIT_MS)  # then it drafts
    qtbot.waitUntil(lambda: not open_bars(), timeout=WAIT_MS)
    assert "FINDINGS:\n" in report.draft_for(session.study).ai_draft  # the draft was written
    # one bar per job: the load, the report, and the grounding that follows a report (napari may list the last
    # two in either order)
    assert sorted(added) == ["Drafting the report", "Loading the model", "Locating the findings"], added


def test_a_job_bar_follows_the_stages_and_closes_when_the_job_ends(viewer_docks, qtbot, bars):
    chat, session = viewer_docks["Chat"], viewer_docks["session"]
    _load(viewer_docks, qtbot)
    open_bars, _ = bars
    gate = threading.Event()
    hook = _held_encoder(session, gate)
    try:
        chat.ask("Is there a nodule?")
        qtbot.waitUntil(lambda: chat.status.text() == "Encoding the image 0/2 blocks", timeout=WAIT_MS)
        qtbot.waitUntil(lambda: len(open_bars()) == 1
                        and _only_bar(open_bars).desc == "Encoding the image 0/2 blocks: ", timeout=WAIT_MS)
        bar = _only_bar(open_bars)
        assert bar.total == 100 and bar.n == 0  # determinate: a count is known
        gate.set()
        qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    finally:
        gate.set()
        hook.remove()
    qtbot.waitUntil(lambda: not open_bars(), timeout=WAIT_MS)
    assert chat.turns(session.study), "the answer arrived"


def test_a_failed_job_closes_its_bar(viewer_docks, qtbot, bars):
    chat, session = viewer_docks["Chat"], viewer_docks["session"]
    _load(viewer_docks, qtbot)
    open_bars, _ = bars
    gate = threading.Event()
    hook = _held_encoder(session, gate, RuntimeError("the vision tower broke"))
    try:
        chat.ask("Is there a nodule?")
        qtbot.waitUntil(lambda: len(open_bars()) == 1, timeout=WAIT_MS)
        gate.set()
        qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    finally:
        gate.set()
        hook.remove()
    assert "the vision tower broke" in chat.status.text()
    qtbot.waitUntil(lambda: not open_bars(), timeout=WAIT_MS)


@pytest.mark.parametrize("stop", ["Stop", "napari's Cancel"])
def test_a_stopped_job_closes_its_bar(viewer_docks, qtbot, bars, stop):
    chat, session = viewer_docks["Chat"], viewer_docks["session"]
    _load(viewer_docks, qtbot)
    session.update_settings(max_new_tokens=2000)
    open_bars, _ = bars
    gate = threading.Event()
    hook = _held_encoder(session, gate)
    try:
        chat.ask("Is there a nodule?")
        qtbot.waitUntil(lambda: len(open_bars()) == 1, timeout=WAIT_MS)
        if stop == "Stop":
            chat.stop_button.click()
        else:
            _only_bar(open_bars).cancel()  # what napari's Cancel button on the bar does
        gate.set()
        qtbot.waitUntil(lambda: not session.busy, timeout=WAIT_MS)
    finally:
        gate.set()
        hook.remove()
    assert chat.turns(session.study)[-1][2] == " [stopped]"
    qtbot.waitUntil(lambda: not open_bars(), timeout=WAIT_MS)
