"""The training loop on accelerate: one process or many (``accelerate launch``), CPU or GPU.

Per optimizer step every process takes its slice of a global batch (``batch_size`` studies x processes x
``grad_accum`` micro-batches); gradients are averaged by DDP (or FSDP / DeepSpeed from an accelerate config).
The data order depends only on (seed, epoch), so a checkpoint needs only the step: ``--resume`` restores
model, optimizer, scheduler and random states (``accelerator.save_state``) and continues exactly where it
stopped.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from napari_radreport.training import history
from napari_radreport.training.config import TrainConfig
from napari_radreport.training.data import RankBatches, collate


class TrainingError(RuntimeError):
    """A run that cannot start or go on; the message says why in one line."""


def _lr_lambda(config: TrainConfig, total: int):
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, total - config.warmup_steps)
        return (config.min_lr_ratio
                + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))

    return factor


def latest_checkpoint(folder: Path) -> Path | None:
    done = sorted(p.parent for p in folder.glob("step-*/trainer_state.json"))
    return done[-1] if done else None


def _accelerator(mixed_precision: str, cpu: bool):
    """accelerate's Accelerator; a second run in one process (tests, a notebook) may
    change the mixed precision.

    accelerate keeps one state per process and refuses a different precision later. In a single process
    nothing else shares that state, so it is cleared; under a launcher (several processes) the refusal stands.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, PartialState

    try:
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)
    except ValueError as exc:
        if "already been initialized" not in str(exc):
            raise
        if PartialState().num_processes != 1:
            raise TrainingError("this process already trained with another mixed precision; "
                                f"start a new process for mixed_precision {mixed_precision!r}") from exc
        AcceleratorState._reset_state()
        return Accelerator(mixed_precision=mixed_precision, cpu=cpu)


class Trainer:
    def __init__(self, config: TrainConfig, parts, out: Path, *, quiet: bool = False):
        from accelerate.utils import set_seed

        from napari_radreport.engine.device import training_on_cpu, training_precision

        self.config, self.parts, self.out, self.quiet = config, parts, Path(out), quiet
        self.accelerator = _accelerator(training_precision(config.mixed_precision), training_on_cpu())
        set_seed(config.seed)
        acc = self.accelerator
        self.batches = RankBatches(len(parts.train_data), config.batch_size, acc.process_index,
                                   acc.num_processes, config.seed)
        self.steps_per_epoch = self.batches.batches_per_epoch() // config.grad_accum
        if self.steps_per_epoch < 1:
            raise TrainingError(
                f"{len(parts.train_data)} training studies are fewer than one optimizer step needs "
                f"({config.batch_size} per process x {acc.num_processes} process(es) "
                f"x {config.grad_accum} accumulation)"
            )
        self.total_steps = config.max_steps or config.epochs * self.steps_per_epoch
        params = [p for p in parts.objective.parameters() if p.requires_grad]
        betas = (0.9, 0.95) if config.stage == "mae" else (0.9, 0.999)
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=betas)
        # The scheduler is stepped here once per optimizer step (not prepared: accelerate would step it once
        # per process), and saved with the checkpoints.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, self.total_steps))
        self.objective, self.optimizer = acc.prepare(parts.objective, optimizer)
        acc.register_for_checkpointing(self.scheduler)
        self.checkpoints = self.out / "checkpoints" / config.run_name
        self.history_path = self.out / f"history-{config.run_name}.jsonl"
        self.pad_id = self._pad_id()
        self.step = 0

    def _pad_id(self) -> int:
        loaded = self.parts.loaded
        if loaded is None:
            return 0
        tok = loaded.tokenizer
        return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    def _batch(self, indices: list[int], dataset) -> dict[str, torch.Tensor]:
        if self.parts.collate is not None:
            batch = self.parts.collate([dataset[i] for i in indices])
        elif self.parts.loaded is None:
            batch = {"pixel_values": torch.cat([dataset[i] for i in indices])}
        else:
            batch = collate([dataset[i] for i in indices], self.pad_id)
        return {k: v.to(self.accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()}

    # -- checkpoints ------------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        folder = self.checkpoints / f"step-{self.step:07d}"
        acc.save_state(str(folder))
        if acc.is_main_process:
            state = {"step": self.step, "config": self.config.to_dict(), "processes": acc.num_processes}
            (folder / "trainer_state.json").write_text(json.dumps(state, indent=1))
            done = sorted(p.parent for p in self.checkpoints.glob("step-*/trainer_state.json"))
            for old in done[: -self.config.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
        acc.wait_for_everyone()
        return folder

    def resume(self) -> int:
        folder = latest_checkpoint(self.checkpoints)
        if folder is None:
            return 0
        state = json.loads((folder / "trainer_state.json").read_text())
        if state.get("processes") != self.accelerator.num_processes:
            raise TrainingError(f"{folder} was saved by {state.get('processes')} process(es); "
                                f"resume with as many (this run has {self.accelerator.num_processes})")
        self.accelerator.load_state(str(folder))
        self.step = int(state["step"])
        if self.accelerator.is_main_process:
            history.truncate(self.history_path, self.step)
        return self.step

    # -- evaluation -------------------------------------------------------------------------------
    def evaluate(self) -> float | None:
        """Mean loss on the first ``eval_studies`` validation studies (the training
        random state is untouched)."""
        data = self.parts.eval_data
        if data is None or len(data) == 0:
            return None
        model = self.objective  # the prepared module: works for DDP and for sharded (FSDP) parameters alike
        model.eval()
        losses = []
        devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices), self.accelerator.autocast():
            torch.manual_seed(self.config.seed)
            for i in range(min(len(data), self.config.eval_studies)):
                losses.append(float(model(**self._batch([i], data))))
        model.train()
        return sum(losses) / len(losses)

    # -- the loop ---------------------------------------------------------------------------------
    def micro_batches(self):
        """(epoch, indices) for each micro-batch from the current step on."""
        epoch, start_step = divmod(self.step, self.steps_per_epoch)
        start = start_step * self.config.grad_accum
        while True:
            self.parts.train_data.epoch = epoch
            limit = self.steps_per_epoch * self.config.grad_accum
            for i, indices in enumerate(self.batches.iterate(epoch, start)):
                if start + i >= limit:
                    break
                yield epoch, indices
            epoch, start = epoch + 1, 0

    def train(self) -> dict[str, Any]:
        from tqdm.auto import tqdm

        acc, config = self.accelerator, self.config
        if self.step == 0:
            if acc.is_main_process:
                self.history_path.unlink(missing_ok=True)
            start_loss = self.evaluate()  # step 0: the loss before any training, for the curve and the tests
            if start_loss is not None and acc.is_main_process:
                history.append(self.history_path, {"step": 0, "eval_loss": start_loss})
        bar = tqdm(total=self.total_steps, initial=self.step, desc=config.run_name,
                   disable=self.quiet or not acc.is_main_process)
        batches = self.micro_batches()
        started = time.perf_counter()
        last_loss, eval_loss = float("nan"), None
        while self.step < self.total_steps:
            total = torch.zeros((), device=acc.device)
            for k in range(config.grad_accum):
                epoch, indices = next(batches)
                batch = self._batch(indices, self.parts.train_data)
                sync = k == config.grad_accum - 1
                with (acc.no_sync(self.objective) if not sync else nullcontext()), acc.autocast():
                    loss = self.objective(**batch) / config.grad_accum
                acc.backward(loss)
                total += loss.detach()
            if config.max_grad_norm:
                acc.clip_grad_norm_(self.objective.parameters(), config.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            last_loss = float(acc.reduce(total, reduction="mean"))
            entry: dict[str, Any] = {"step": self.step, "epoch": epoch, "loss": last_loss,
                                     "lr": self.scheduler.get_last_lr()[0],
                                     "elapsed_s": round(time.perf_counter() - started, 3)}
            if (config.eval_every and self.step % config.eval_every == 0) or self.step == self.total_steps:
                eval_loss = self.evaluate()
                if eval_loss is not None:
                    entry["eval_loss"] = eval_loss
            if acc.is_main_process and (self.step % config.log_every == 0 or "eval_loss" in entry):
                history.append(self.history_path, entry)
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.4f}")
            if config.save_every and self.step % config.save_every == 0:
                self.save_checkpoint()
        bar.close()
        if acc.is_main_process:
            history.plot_loss(history.read(self.history_path), self.out / f"loss-{config.run_name}.png",
                              config.run_name)
        return {"steps": self.step, "loss": last_loss, "eval_loss": eval_loss}
