"""Mid-run checkpoints of the HF loop (`checkpoint_every: {steps: N}` / `{minutes: M}`): a run killed mid-way
resumes on the next invocation where its last checkpoint was, and ends as an uninterrupted run would.

The way accelerate's own examples checkpoint: `Accelerator.save_state` writes the prepared model, optimizer, the
scheduler (registered with `register_for_checkpointing`) and every RNG state; `load_state` restores them. What
accelerate does not know is kept beside it in `loop_state.json`: the step and epoch counters, the position in the
epoch's data order (with the data generator's state at the epoch's start, `data_order.pt`, so the epoch's
permutation is drawn again and its first batches skipped with `skip_first_batches`), the curve, the losses, the
clocks. A checkpoint is written to its own `step-K` folder; `latest.json`, replaced atomically, names the complete
one, so a kill while saving leaves the previous checkpoint in force.

They live in the run's folder (`<results>/work/<run_id>/checkpoint`) and are removed once the run's record is
written (`remove`, called by the suite's driver). A checkpoint made under other settings (the batch split after an
out-of-memory retry, another number of processes, another learning rate chosen) is not resumed: the run starts over.
The same loop state, kept in memory instead of on disk, pauses a learning-rate search's candidate at its first rung
until the search knows whether to promote it (`Paused`). This module imports torch only inside the functions that
train (`remove` runs in a torch-free driver).
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional

FOLDER = "checkpoint"  # under the run's folder
MARKER = "latest.json"  # names the last complete checkpoint; written last, atomically

_place: contextvars.ContextVar[Optional[Path]] = contextvars.ContextVar("checkpoint_place", default=None)
logger = logging.getLogger("transferbench")


@contextlib.contextmanager
def place(work_dir: Optional[Path]):
    """While a run trains: its folder, where `MidRun.open` keeps the checkpoints (None: the run has none)."""
    token = _place.set(Path(work_dir) / FOLDER if work_dir is not None else None)
    try:
        yield
    finally:
        _place.reset(token)


def remove(work_dir: Path) -> None:
    """The run's checkpoints, once its record is written (nothing to resume any more)."""
    shutil.rmtree(Path(work_dir) / FOLDER, ignore_errors=True)


def marker(work_dir: Path) -> Path:
    """The file that exists once a first checkpoint is complete (what a test waits for)."""
    return Path(work_dir) / FOLDER / MARKER


class MidRun:
    """One run's checkpoints: `resume` once before the first step, `due`/`save` after each optimizer step."""

    def __init__(self, rule, folder: Path, accelerator, identity: dict):
        self.rule, self.folder, self.accelerator, self.identity = rule, folder, accelerator, identity
        self.last_saved = time.perf_counter()

    @classmethod
    def open(cls, spec, accelerator, search: bool) -> Optional["MidRun"]:
        """The run's checkpoints, or None: no `checkpoint_every`, no run folder (a stage without one), or a
        learning-rate search's candidate / plateau phase (short by design: the final training is what checkpoints).
        Objects an earlier phase prepared on this accelerator (search candidates) are released first, so
        save_state holds this training's model, optimizer and loaders only."""
        folder = _place.get()
        if spec.hyper.checkpoint_every is None or folder is None or search:
            return None
        accelerator.free_memory()
        return cls(spec.hyper.checkpoint_every, folder, accelerator, {"run_id": spec.run_id})

    def register(self, scheduler, optimizer, **identity) -> None:
        """The scheduler stepped by hand joins save_state (the prepared optimizer is in it already); `identity`: the
        settings a checkpoint must match."""
        self.accelerator.register_for_checkpointing(scheduler)
        self.identity.update(identity)

    def stops_at(self, step: int) -> bool:  # a checkpointed run goes on after saving
        return False

    def resume(self, generator) -> Optional[dict]:
        """Restore the last checkpoint: accelerate's state loaded, the data generator set to its epoch's start;
        returns the loop's state (None: nothing to resume, or a checkpoint made under other settings, removed)."""
        import torch

        try:
            latest = json.loads((self.folder / MARKER).read_text())
            where = self.folder / latest["dir"]
            state = json.loads((where / "loop_state.json").read_text())
        except (OSError, ValueError, KeyError):
            return None
        if state.get("identity") != self.identity:
            logger.warning(f"run {self.identity['run_id']}: its checkpoint at step {state.get('step')} was made under "
                           f"other settings ({_differences(state.get('identity') or {}, self.identity)}); "
                           f"training from the start")
            self.accelerator.wait_for_everyone()
            if self.accelerator.is_main_process:
                shutil.rmtree(self.folder, ignore_errors=True)
            return None
        self.accelerator.load_state(str(where))
        generator.set_state(torch.load(where / "data_order.pt", weights_only=True))
        logger.info(f"run {self.identity['run_id']}: resuming from its checkpoint at optimizer step {state['step']} "
                    f"of {self.identity['total_steps']}")
        self.last_saved = time.perf_counter()
        return state

    def due(self, step: int) -> bool:
        """Whether to checkpoint after optimizer step `step`. Minutes are the main process's clock, read every
        10 steps under several processes (one broadcast), so every process decides alike."""
        if self.rule.steps and step % self.rule.steps == 0:
            return True
        if not self.rule.minutes:
            return False
        if self.accelerator.num_processes == 1:
            return time.perf_counter() - self.last_saved >= 60 * self.rule.minutes
        if step % 10:
            return False
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([time.perf_counter() - self.last_saved >= 60 * self.rule.minutes])[0]

    def save(self, state: dict, epoch_start) -> None:
        """Write a checkpoint of the loop at `state["step"]`: accelerate's state, the generator's state at the
        epoch's start (`epoch_start`), the loop's state; then point `latest.json` at it and drop the older ones."""
        import torch

        acc = self.accelerator
        name = f"step-{state['step']}"
        where = self.folder / name
        try:
            acc.save_state(str(where))  # every process: its RNG state; the main process writes the rest
            if acc.is_main_process:
                torch.save(epoch_start, where / "data_order.pt")
                (where / "loop_state.json").write_text(json.dumps({**state, "identity": self.identity}))
                tmp = self.folder / f".{MARKER}.tmp"
                tmp.write_text(json.dumps({"dir": name, "step": state["step"]}))
                os.replace(tmp, self.folder / MARKER)  # the new checkpoint is complete: it now is the one in force
                for old in self.folder.glob("step-*"):
                    if old.name != name:
                        shutil.rmtree(old, ignore_errors=True)
        except OSError as err:  # a full disk: the run goes on without this checkpoint (the last one stays in force)
            logger.warning(f"run {self.identity['run_id']}: checkpoint at step {state['step']} not written to {where} "
                           f"({err.strerror or err}); training goes on")
            shutil.rmtree(where, ignore_errors=True)
        acc.wait_for_everyone()
        self.last_saved = time.perf_counter()


class Paused:
    """A learning-rate search's candidate stopped after optimizer step `at` (successive halving's first rung,
    runners/train/lr_search.py) and kept in memory, so that a promoted candidate goes on from there instead of
    training its first steps again: what `MidRun` writes to disk (optimizer, scheduler, every RNG state, the epoch's
    data order, the loop's own state), kept as objects, with the trained model in `model`. Trained again with this
    object, the candidate ends exactly as one trained straight through (it is kept before its rung's evaluation,
    whose loader draws a seed from torch's generator)."""

    def __init__(self, at: int):
        self.at, self.model, self.kept = at, None, None

    def register(self, scheduler, optimizer, **identity) -> None:
        self.scheduler, self.optimizer = scheduler, optimizer

    def resume(self, generator) -> Optional[dict]:
        if self.kept is None:
            return None
        optimizer, scheduler, rng, epoch_start, state = self.kept
        self.optimizer.load_state_dict(optimizer)
        self.scheduler.load_state_dict(scheduler)
        restore_random_state(rng)
        generator.set_state(epoch_start)
        return state

    def stops_at(self, step: int) -> bool:
        return self.kept is None and step == self.at

    def due(self, step: int) -> bool:  # kept where it stops (the loop calls save then), nowhere else
        return False

    def save(self, state: dict, epoch_start) -> None:
        # the optimizer's state tensors are the paused run's own, which nothing changes until it goes on: not copied
        self.kept = (self.optimizer.state_dict(), self.scheduler.state_dict(), random_state(), epoch_start, state)


def random_state() -> tuple:
    """Python's, numpy's, torch's and every CUDA device's random state."""
    import random

    import numpy as np
    import torch

    return (random.getstate(), np.random.get_state(), torch.random.get_rng_state(),
            torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None)


def restore_random_state(state: tuple) -> None:
    import random

    import numpy as np
    import torch

    random.setstate(state[0])
    np.random.set_state(state[1])
    torch.random.set_rng_state(state[2])
    if state[3] is not None:
        torch.cuda.set_rng_state_all(state[3])


def _differences(old: dict, new: dict) -> str:
    return ", ".join(f"{k} {old.get(k)} -> {new.get(k)}" for k in new if old.get(k) != new.get(k)) or "unknown"


def snapshot(out, losses: list, marks: list, loss_sum, stopper, epoch: int, batch: int, elapsed: float) -> dict:
    """The loop's own state after an optimizer step: counters, position in the data order, curve, losses, clocks
    (`elapsed`: seconds since the first step, evaluations included)."""
    return {"step": out.optimizer_steps, "epoch": epoch, "batch": batch, "elapsed": elapsed,
            "samples_seen": out.samples_seen, "flops": out.flops, "eval_seconds": out.eval_seconds,
            "eval_samples": out.eval_samples, "curve": out.curve, "metrics": out.metrics,
            "time_to_target_s": out.time_to_target_s, "losses": [float(x) for x in losses], "marks": marks,
            "loss_sum": float(loss_sum), "stopper": stopper and {"best": stopper.best, "waited": stopper.waited}}


def restore(state: dict, out, losses: list, marks: list, loss_sum, stopper) -> tuple[int, int, float]:
    """`snapshot`'s state put back into the loop's objects; (epoch, batches of it trained, elapsed seconds)."""
    import torch

    out.optimizer_steps, out.samples_seen, out.flops = state["step"], state["samples_seen"], state["flops"]
    out.eval_seconds, out.eval_samples, out.curve = state["eval_seconds"], state["eval_samples"], state["curve"]
    out.metrics, out.time_to_target_s = state["metrics"], state["time_to_target_s"]
    out.resumed_at_step = state["step"]
    if state["losses"]:  # float32 values kept as Python floats: exact both ways
        losses.extend(torch.tensor(state["losses"], dtype=torch.float32, device=loss_sum.device).unbind())
    marks.extend(state["marks"])
    loss_sum.fill_(state["loss_sum"])
    if stopper is not None and state["stopper"]:
        stopper.best, stopper.waited = state["stopper"]["best"], state["stopper"]["waited"]
    return state["epoch"], state["batch"], state["elapsed"]
