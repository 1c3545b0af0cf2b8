"""Decoding while another busy process shares the cores, against idle (issue 24: threads that never collapse).

Each policy is measured in a fresh process, so OpenMP starts with that process's settings: the engine's own
(``engine/threads.py``: the usable cores, passive waiting, asked for as the entry points ask), and as a
baseline torch's defaults (a thread per CPU, OpenMP's default spinning). The competitor is another torch job
with torch's defaults: a matrix-product loop on every usable core, started once and paused (SIGSTOP) or
resumed between answers, so idle and loaded answers alternate round by round and a burst of other load on the
machine slows both. Decoding speed is the engine's own figure for an answer (``Finished.timings
["tokens_per_s"]``: the tokens after the first over their time), so the prompt's cost is left out.

    python -m napari_radreport.bench.thread_bench MODEL [--quick]        # the run's JSON on stdout
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

CHECK = "decode speed under load / idle"
# what decides threads and waiting; the measuring and competing processes start without the caller's values
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "MKL_NUM_THREADS",
                    "OPENBLAS_NUM_THREADS", "RADREPORT_THREADS")
BUSY_SIZE = 256  # the competitor's matrices: many short parallel regions a second, as a model's kernels are
_BUSY = ("import torch\na = torch.rand({n}, {n})\nb = a @ a\nprint('ready', flush=True)\n"
         "while True:\n    b = a @ a\n")
RAMP_S = 0.3  # after resuming the competitor, before the loaded answer starts
QUESTION = "Describe the findings of this chest CT."
WARM_UP_TOKENS = 4  # one short answer first, in each condition: imports, caches and thread teams up


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without its thread settings, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    return {**env, **extra}


class Competitor:
    """A torch job with torch's defaults looping over matrix products; ``resume`` / ``pause`` it between
    answers (SIGCONT / SIGSTOP; where there are no such signals, started and ended each time)."""

    def __init__(self, size: int = BUSY_SIZE):
        self.size = size
        self.process: subprocess.Popen | None = None
        self._signals = hasattr(signal, "SIGSTOP")

    def _start(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", _BUSY.format(n=self.size)], env=child_env(),
                                        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if self.process.stdout.readline().strip() != "ready":
            self.close()
            raise RuntimeError("the competing busy process did not start")

    def resume(self) -> None:
        if self.process is None:
            self._start()
        else:
            self.process.send_signal(signal.SIGCONT)
        time.sleep(RAMP_S)

    def pause(self) -> None:
        if self._signals and self.process is not None:
            self.process.send_signal(signal.SIGSTOP)
        else:
            self.close()

    def close(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def measure(model: Path, tokens: int, repeats: int, baseline: bool) -> dict[str, Any]:
    """In this fresh process: the engine's decoding speed (tokens/s) idle and beside the competitor, under
    the engine's thread policy, or under torch's defaults (``baseline``: torch imported before the engine
    could ask for passive waiting, and its default thread count kept)."""
    if baseline:
        import torch

        os.environ["RADREPORT_THREADS"] = str(torch.get_num_threads())
    else:
        from napari_radreport.engine.threads import prefer_passive_waiting

        prefer_passive_waiting()  # what the command line and the docks do first
    from napari_radreport.bench.memory_bench import synthetic_study
    from napari_radreport.engine.engine import Engine
    from napari_radreport.engine.threads import thread_policy
    from napari_radreport.modeling.checkpoints import read_config

    study = synthetic_study(read_config(model)["preprocess"]["target_shape"])
    engine, competitor = Engine(), Competitor()
    try:
        engine.load(model, device="cpu")
        rates = _alternate(engine, study, competitor, tokens, repeats)
        import torch

        threads = engine.call(torch.get_num_threads)
    finally:
        competitor.close()
        engine.shutdown()
    idle, loaded = (statistics.median(rates[k]) for k in ("idle", "loaded"))
    return {"idle_tokens_per_s": round(idle, 2), "under_load_tokens_per_s": round(loaded, 2),
            "ratio": round(loaded / idle, 3), "threads": threads,
            "idle_runs": rates["idle"], "under_load_runs": rates["loaded"], "policy": thread_policy()}


def _answer_rate(engine, study, tokens: int) -> float:
    from napari_radreport.engine.decoding import GenerationSettings

    finished = engine.ask(study, QUESTION, settings=GenerationSettings(max_new_tokens=tokens))
    if finished.n_tokens != tokens:
        raise RuntimeError(f"asked for {tokens} tokens, the engine wrote {finished.n_tokens}")
    return round(finished.timings["tokens_per_s"], 2)


def _alternate(engine, study, competitor: Competitor, tokens: int, repeats: int) -> dict[str, list[float]]:
    """Tokens/s of ``repeats`` answers idle and as many beside the competitor, one of each per round."""
    rates: dict[str, list[float]] = {"idle": [], "loaded": []}
    for index in range(repeats + 1):  # round 0 warms up
        size = WARM_UP_TOKENS if index == 0 else tokens
        rate = _answer_rate(engine, study, size)
        competitor.resume()
        try:
            loaded = _answer_rate(engine, study, size)
        finally:
            competitor.pause()
        if index:
            rates["idle"].append(rate)
            rates["loaded"].append(loaded)
    return rates


def _measure_in_child(model: Path, tokens: int, repeats: int, baseline: bool) -> dict[str, Any]:
    command = [sys.executable, "-m", "napari_radreport.bench.thread_bench", str(model), "--measure",
               "--tokens", str(tokens), "--repeats", str(repeats)] + (["--baseline"] if baseline else [])
    done = subprocess.run(command, env=child_env(), capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"measuring decoding ({'torch defaults' if baseline else 'ours'}) failed: {last}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(model_folder: Path, quick: bool) -> dict[str, Any]:
    """The engine's decoding idle and beside a busy torch job: with its thread policy (the check's ratio),
    and with torch's defaults (the full run repeats it once: it collapses under load; the quick run's small
    model decodes 64 tokens in well under a second, so three repeats keep one scheduling hiccup from deciding
    the ratio)."""
    tokens, repeats, default_repeats = (64, 3, 3) if quick else (64, 3, 1)
    ours = _measure_in_child(Path(model_folder), tokens, repeats, baseline=False)
    default = _measure_in_child(Path(model_folder), tokens, default_repeats, baseline=True)
    return {**ours, "tokens": tokens,
            "competitor": f"torch {BUSY_SIZE}x{BUSY_SIZE} matrix products; torch's default threads, waiting",
            "baseline_default_threads": default,
            "under_load_ours_over_default": round(ours["under_load_tokens_per_s"]
                                                  / default["under_load_tokens_per_s"], 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="decoding speed idle and beside a busy process")
    parser.add_argument("model", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--measure", action="store_true", help="one policy, measured in this process")
    parser.add_argument("--baseline", action="store_true", help="torch's default threads and waiting")
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    if args.measure:
        result = measure(args.model, args.tokens, args.repeats, args.baseline)
    else:
        result = run(args.model, args.quick)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
