"""The engine's CPU threads: usable cores (affinity, cgroup quota), the override, applied on the engine's
thread, and OpenMP's passive waiting asked for at the entry points before torch loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_radreport.engine import threads
from napari_radreport.engine.threads import ThreadPlan, cgroup_cores, thread_plan, usable_cores

ROOT = Path(__file__).resolve().parents[1]
AFFINITY = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "RADREPORT_THREADS")


def _cgroup(tmp_path: Path, files: dict[str, str], own: str = "0::/") -> tuple[Path, Path]:
    """A cgroup tree with ``files`` (relative path -> text) and a /proc/self/cgroup naming ``own``."""
    root = tmp_path / "cgroup"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text + "\n")
    root.mkdir(exist_ok=True)
    proc = tmp_path / "proc-self-cgroup"
    proc.write_text(own + "\n")
    return root, proc


def test_no_cgroup_quota_means_the_affinity(tmp_path):
    root, proc = _cgroup(tmp_path, {})
    assert cgroup_cores(root, proc) is None
    assert usable_cores(root, proc) == AFFINITY


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity") or AFFINITY < 2, reason="needs 2 CPUs and affinity")
def test_usable_cores_follow_the_real_affinity(tmp_path):
    root, proc = _cgroup(tmp_path, {})
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})  # this thread only, restored below
    try:
        assert usable_cores(root, proc) == 1
    finally:
        os.sched_setaffinity(0, before)


@pytest.mark.parametrize(("text", "cores"), [("150000 100000", 2), ("250000 100000", 3), ("100000 100000", 1),
                                             ("max 100000", None), ("1000 100000", 1)])
def test_cgroup_v2_quota_rounds_up(tmp_path, text, cores):
    root, proc = _cgroup(tmp_path, {"cpu.max": text})
    assert cgroup_cores(root, proc) == cores


@pytest.mark.parametrize(("quota", "period", "cores"), [("200000", "100000", 2), ("50000", "100000", 1),
                                                        ("-1", "100000", None)])
def test_cgroup_v1_quota(tmp_path, quota, period, cores):
    root, proc = _cgroup(tmp_path, {"cpu/cpu.cfs_quota_us": quota, "cpu/cpu.cfs_period_us": period},
                         own="4:cpu,cpuacct:/")
    assert cgroup_cores(root, proc) == cores


@pytest.mark.skipif(AFFINITY < 2, reason="needs 2 CPUs")
def test_a_quota_below_the_affinity_caps_the_cores(tmp_path):
    root, proc = _cgroup(tmp_path, {"cpu.max": "100000 100000"})
    assert usable_cores(root, proc) == 1
    root, proc = _cgroup(tmp_path / "wide", {"cpu.max": f"{(AFFINITY + 8) * 100000} 100000"})
    assert usable_cores(root, proc) == AFFINITY


def test_a_quota_above_the_process_cgroup_applies(tmp_path):
    root, proc = _cgroup(tmp_path, {"a/b/cpu.max": "max 100000", "a/cpu.max": "120000 100000"}, own="0::/a/b")
    assert cgroup_cores(root, proc) == 2
    v1, proc1 = _cgroup(tmp_path / "v1", {"cpu/docker/x/cpu.cfs_quota_us": "300000",
                                          "cpu/docker/x/cpu.cfs_period_us": "100000"}, own="3:cpu:/docker/x")
    assert cgroup_cores(v1, proc1) == 3


def test_the_plan_follows_the_override_then_omp_then_the_cores():
    assert thread_plan({"RADREPORT_THREADS": "3", "OMP_NUM_THREADS": "1"}, cores=2) == ThreadPlan(
        3, "RADREPORT_THREADS")
    assert thread_plan({"OMP_NUM_THREADS": "1"}, cores=2).threads is None  # torch read the user's value
    assert thread_plan({}, cores=5).threads == 5
    assert thread_plan({}).threads == usable_cores()
    for wrong in ("0", "two", "-1"):
        with pytest.raises(ValueError, match="RADREPORT_THREADS must be a whole number"):
            thread_plan({"RADREPORT_THREADS": wrong})


def test_passive_waiting_is_not_asked_for_once_torch_is_imported():
    pytest.importorskip("torch")
    environ: dict[str, str] = {}
    assert threads.prefer_passive_waiting(environ) is False
    assert environ == {}


def test_passive_waiting_leaves_a_users_choice():
    probe = ("import json\nfrom napari_radreport.engine.threads import prefer_passive_waiting\n"
             "mine = [{}, {'OMP_WAIT_POLICY': 'ACTIVE'}, {'GOMP_SPINCOUNT': '1000'}]\n"
             "print(json.dumps([[prefer_passive_waiting(e), e] for e in mine]))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60)
    expected = [{"OMP_WAIT_POLICY": "PASSIVE", "RADREPORT_WAIT_DEFAULTED": "1"},
                {"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "1000"}]
    assert json.loads(done.stdout) == [[True, e] for e in expected], done.stderr[-2000:]


def test_the_engine_applies_its_plan_on_its_thread(monkeypatch):
    torch = pytest.importorskip("torch")
    from napari_radreport.engine import Engine

    before = torch.get_num_threads()
    wanted = before + 1  # differs from what this process runs, so only applying it passes
    monkeypatch.setenv("RADREPORT_THREADS", str(wanted))
    engine = Engine()
    try:
        assert engine.call(torch.get_num_threads) == wanted
    finally:
        engine.shutdown()
        torch.set_num_threads(before)


def test_a_wrong_override_fails_the_task_in_one_line(monkeypatch):
    from napari_radreport.engine import Engine

    monkeypatch.setenv("RADREPORT_THREADS", "many")
    engine = Engine()
    try:
        with pytest.raises(ValueError, match="RADREPORT_THREADS must be"):
            engine.call(lambda: None)
    finally:
        engine.shutdown()


_ENTRY = """
import json, os, sys
from napari_radreport.cli.parser import main
try:
    main(["--help"])
except SystemExit:
    pass
assert "torch" not in sys.modules
import torch
from napari_radreport.engine import Engine
from napari_radreport.engine.threads import usable_cores
engine = Engine()
print(json.dumps({"policy": os.environ.get("OMP_WAIT_POLICY"), "threads": engine.call(torch.get_num_threads),
                  "usable": usable_cores()}))
engine.shutdown()
"""


def _entry(**env: str) -> tuple[dict, str]:
    """Run the CLI entry, then torch and an engine task, in a fresh process; (its JSON, OpenMP's settings)."""
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    done = subprocess.run([sys.executable, "-c", _ENTRY], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={**clean, "OMP_DISPLAY_ENV": "VERBOSE", **env})
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def test_the_command_line_asks_openmp_for_passive_waiting_before_torch_loads():
    pytest.importorskip("torch")
    found, openmp = _entry()
    assert found["policy"] == "PASSIVE"
    assert "GOMP_SPINCOUNT = '0'" in openmp  # OpenMP itself read it: its helpers never spin
    assert found["threads"] == found["usable"]


def test_a_users_own_settings_win():
    pytest.importorskip("torch")
    found, openmp = _entry(OMP_WAIT_POLICY="ACTIVE", RADREPORT_THREADS="1")
    assert found["policy"] == "ACTIVE"
    assert "GOMP_SPINCOUNT = '0'" not in openmp
    assert found["threads"] == 1


def test_the_docks_package_asks_for_passive_waiting():
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    probe = "import os, napari_radreport.widgets; print(os.environ.get('OMP_WAIT_POLICY'))"
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=clean)
    assert done.stdout.strip() == "PASSIVE", done.stderr[-2000:]


def test_training_is_left_to_spin():
    """`radreport train` does not ask for passive waiting (it costs a training step a fifth of its speed on a
    machine of its own), and the bench's training step drops only the waiting we chose, never a user's."""
    from napari_radreport.engine.threads import WAIT_DEFAULTED, prefer_passive_waiting, without_wait_default

    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    probe = ("import os\nfrom napari_radreport.cli.parser import main\ntry:\n    main(['train', '--help'])\n"
             "except SystemExit:\n    pass\nprint(os.environ.get('OMP_WAIT_POLICY'))")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=clean)
    assert done.stdout.strip().splitlines()[-1] == "None", done.stderr[-2000:]
    ours: dict[str, str] = {}
    if "torch" not in sys.modules:
        prefer_passive_waiting(ours)
        assert ours == {"OMP_WAIT_POLICY": "PASSIVE", WAIT_DEFAULTED: "1"}
    assert "OMP_WAIT_POLICY" not in without_wait_default({"OMP_WAIT_POLICY": "PASSIVE", WAIT_DEFAULTED: "1"})
    assert without_wait_default({"OMP_WAIT_POLICY": "PASSIVE"}) == {"OMP_WAIT_POLICY": "PASSIVE"}
