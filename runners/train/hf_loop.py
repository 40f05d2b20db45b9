"""The HF loop: Accelerate, AdamW, a warm-up schedule, periodic evaluation.

Shape of the Accelerate examples: prepare, then `with accelerator.accumulate(model)`, backward, step.
Evaluation gathers with gather_for_metrics, so under N processes every eval example counts exactly once.
Time-to-target counts from the first optimizer step and includes evaluation (MLPerf convention).

Training ends at the first of: the epochs (or `max_steps`, which replaces them), `max_seconds`, and, when the
target says `stop: true`, the first evaluation that reaches it; `stop_reason` says which.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Optional

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from transferbench import energy, sources, speed
from transferbench.modes import adapter_bytes, apply, get_mode, parameter_counts
from transferbench.outcome import Diverged, TrainOutcome
from transferbench.speed import batch_channels_last

from . import cell_search, choose, features, lr_search, midrun, plateau, trackers
from .hf_eval import EVAL_BATCH, EarlyStop, eval_values, evaluate_point, train_mode
from .progress import PlainLines, StepLog, bar_label, quiet
from .hf_save import save_checkpoint, save_final
from .steps import planned_steps, schedule_steps
from ..signals import check_stop

LOG_EVERY = 10  # optimizer steps between divergence checks / progress-bar updates (each one syncs a GPU)


def warm_up() -> None:
    """What `run` imports on its first call (the suite calls this before its first run)."""
    import accelerate.utils  # noqa: F401
    import transformers.optimization  # noqa: F401 - get_scheduler



def run(plan, task, model_ref: str, accelerator, save_to: Optional[Path] = None, work_dir=None,
        model_dir: Optional[Path] = None, search_dir: Optional[Path] = None) -> TrainOutcome:
    """One run (a RunPlan) through the Accelerate loop: the budget's subset, the mode applied to the model, training
    and evaluation; `save_to`: the main process saves the trained model there (a pretrain stage's output);
    `model_dir`: the final weights saved there the model's own way (save_models: final); `search_dir`: where a
    cell's learning-rate search is recorded for its other seeds (runners/train/cell_search.py). The accelerator's
    trackers (report_to) get one run, closed however this one ends."""
    tracking = trackers.start(accelerator, plan.spec)
    try:
        with midrun.place(work_dir):  # where the final training keeps its checkpoints (checkpoint_every)
            return _run(plan.spec, plan.search, task, model_ref, accelerator, save_to, model_dir, search_dir)
    finally:
        if tracking:
            accelerator.end_training()


def _run(spec, search, task, model_ref: str, accelerator, save_to: Optional[Path],
         model_dir: Optional[Path], search_dir: Optional[Path] = None) -> TrainOutcome:
    t0 = time.perf_counter()
    data, train_set, held = load(spec, task, model_ref, search)
    key = (model_ref, data.identity, spec.dataset.model_dump_json(), repr(spec.task_args), spec.hyper.eval_samples)
    initial = Initial(task, model_ref, data)
    kept = {}  # (seed, rate, steps) -> a search candidate paused at its first rung (midrun.Paused)
    t1 = time.perf_counter()
    spec, choice = choose.before_training(
        spec, search, task, data, train_set, held, key,
        lambda c, scoring, fit, k, watch, **rung: _candidate(c, task, initial, scoring, fit, accelerator, k, watch,
                                                             kept, **rung),
        lambda hyper, n: planned_steps(hyper, n, accelerator.num_processes),
        inputs=lambda seed: load(spec.model_copy(update={"seed": seed}), task, model_ref, search)[1:],
        share=None if search is None or search.by is None else
        functools.partial(cell_search.chosen, search.by, search_dir, accelerator=accelerator))
    kept.clear()  # candidates left paused at a rung, not promoted
    if choice.searched is not None and accelerator.device.type != "cpu":  # once per search, not per candidate:
        accelerator.free_memory()  # its full gc costs ~0.5 s; the final training keeps none of the candidates
    search_seconds = time.perf_counter() - t1  # charged in wall time and cost, not in setup/train/eval seconds
    model = initial(spec)
    params_total, params_trainable, trainable_bytes = parameter_counts(model)
    adapter = adapter_bytes(model, trainable_bytes)  # from the tensors' sizes, which training does not change
    setup_seconds = time.perf_counter() - t0 - search_seconds
    if spec.hyper.cached_features:  # head-only modes only (hf_check refuses the others before training)
        out = features.train_head(spec, task, model, train_set, data, accelerator, key, train)
    else:
        out = train(spec, task, model, train_set, data, accelerator, params_total)
    out.setup_seconds += setup_seconds
    out.lr, out.lr_search, out.plateau = spec.hyper.lr, choice.searched, choice.plateau
    out.stop_reason = choice.stop_reason or out.stop_reason  # a plateau run ends where its plateau phase said
    out.charged_seconds += choice.charged
    out.dataset, out.train_samples = data.identity, len(train_set)
    out.params_total, out.params_trainable, out.adapter_bytes = params_total, params_trainable, adapter
    out.data = data
    if save_to is not None:
        save_checkpoint(task, out.model, data, save_to, accelerator)
    if model_dir is not None:
        out.saved_model = save_final(task, out.model, data, Path(model_dir), accelerator, model_ref)
    return out


def setup(spec, task, ref: str):
    """(data, the budget's training subset, the model with its mode and speed options applied): everything
    the loop is given. Also used by benchmarks/perf, so the hand-written loop trains the very same thing."""
    data, train_set, _ = load(spec, task, ref)
    return data, train_set, build(spec, task, ref, data)


def load(spec, task, ref: str, search=None):
    """(data, the budget's training subset, the examples beyond it that a learning-rate search scores on, or None
    without a search)."""
    data = task.load_data(spec.dataset, ref)
    if spec.hyper.eval_samples and spec.hyper.eval_samples < len(data.eval):  # seed 0: one subset for all runs
        keep = sorted(sources.subset_indices(len(data.eval), 0, spec.hyper.eval_samples))
        data = dataclasses.replace(data, eval=torch.utils.data.Subset(data.eval, keep))
    pool = list(range(len(data.train)))
    if spec.hyper.early_stopping:  # carved before the budget is drawn: disjoint from every budget's subset
        held, pool = sources.validation_split(len(data.train), spec.hyper.early_stopping.validation_samples)
        data = dataclasses.replace(data, validation=torch.utils.data.Subset(data.train, held))
    size = sources.budget_size(len(pool), spec.train_samples, spec.train_fraction)
    extra = search.rule.validation_samples if search and search.rule.validation == "beyond" else 0
    # the budget is a prefix of the seed's permutation of the pool; a search scores on the examples after it
    order = sources.subset_indices(len(pool), spec.seed, min(len(pool), size + extra))
    train_set = torch.utils.data.Subset(data.train, [pool[i] for i in order[:size]])
    if not extra:
        return data, train_set, None
    lr_search.check_pool(search, size, len(pool))  # preflight's check, for a caller that skipped it
    return data, train_set, torch.utils.data.Subset(data.train, [pool[i] for i in order[size:]])


def build(spec, task, ref: str, data):
    """The model with its mode and speed options applied, initialised from the run's seed."""
    from accelerate.utils import set_seed

    mode = get_mode(spec.mode, spec.hyper)
    set_seed(spec.seed)  # same seed -> same head/scratch init, dropout and shuffling
    model = task.build_model(ref, data.labels, pretrained=mode.pretrained)
    if spec.hyper.gradient_checkpointing:  # on the task's model, before peft wraps it
        speed.enable_gradient_checkpointing(model)
    model = apply(mode, model, task, spec.hyper)
    if spec.hyper.channels_last:  # after peft, so LoRA's own convolutions are converted too
        model = speed.to_channels_last(model)
    return model


class Initial:
    """A run's initial model, built once per seed and copied for each candidate of its search or plateau phase and
    for its final training: the weights are read once, and the copy with the random state restored to just after
    the build is exactly what building anew would give (same head init, dropout and shuffling)."""

    def __init__(self, task, ref: str, data):
        self.task, self.ref, self.data, self.built = task, ref, data, {}

    def __call__(self, spec):
        import copy

        if spec.seed not in self.built:  # the mode and its options are the run's own: only the seed differs
            model = build(spec, self.task, self.ref, self.data)
            self.built[spec.seed] = (model, midrun.random_state())
        model, state = self.built[spec.seed]
        midrun.restore_random_state(state)
        return copy.deepcopy(model)


def _candidate(spec, task, initial: Initial, data, train_set, accelerator, key: tuple,
               watch: Optional[plateau.Watch] = None, kept: Optional[dict] = None, until: Optional[int] = None,
               forget=()) -> TrainOutcome:
    """One candidate of a learning-rate search or a plateau phase: built and trained as the run would be at that
    rate, scored on data.eval (validation examples) with its loss. `until`: stop after that optimizer step and keep
    the candidate in `kept` (a first rung); a later call for the same candidate goes on from it; `forget`: the
    rates whose kept candidates the search no longer needs."""
    for lr in forget:
        kept.pop((spec.seed, lr, spec.hyper.max_steps), None)
    which = (spec.seed, spec.hyper.lr, spec.hyper.max_steps)
    if until is not None:
        paused = kept[which] = midrun.Paused(until)
    else:
        paused = kept.pop(which, None) if kept is not None else None
    model = paused.model if paused is not None and paused.kept is not None else initial(spec)
    loop = functools.partial(train, search=True, watch=watch, paused=paused)
    if spec.hyper.cached_features:
        out = features.train_head(spec, task, model, train_set, data, accelerator, key, loop)
    else:
        out = loop(spec, task, model, train_set, data, accelerator, parameter_counts(model)[0])
    if paused is not None:
        paused.model = out.model
    return out


def train(spec, task, model, train_set, data, accelerator, params_total: int, search: bool = False,
          watch: Optional[plateau.Watch] = None, paused: Optional[midrun.Paused] = None) -> TrainOutcome:
    """Train `model` on `train_set` (the budget's subset of data.train), evaluating on data.eval; `search`: a
    learning-rate search's candidate (evaluations with their loss, nothing sent to the trackers); `watch`: a
    plateau phase (data.eval is the budget's validation part; it stops at the plateau or at the cap); `paused`: a
    candidate that stops at its first rung, or goes on from it (midrun.Paused, kept in memory)."""
    t_enter = time.perf_counter()
    hyper = spec.hyper
    per_device = hyper.per_device_batch(accelerator.num_processes)
    pin = accelerator.device.type == "cuda"  # page-locked batches copy to the GPU faster; no use on CPU
    mid = paused or midrun.MidRun.open(spec, accelerator, search or watch is not None)  # before anything is prepared
    data_order = torch.Generator().manual_seed(spec.seed)  # each epoch's shuffle (a checkpoint keeps its state)
    train_dl = DataLoader(train_set, batch_size=per_device, shuffle=True, collate_fn=data.collate,
                          generator=data_order, pin_memory=pin)
    # inference keeps no activations for backward: larger batches, fewer Python steps (as Trainer's eval batch)
    eval_dl = DataLoader(data.eval, batch_size=max(2 * per_device, EVAL_BATCH),
                         collate_fn=data.eval_collate or data.collate,
                         pin_memory=pin)
    # The fused kernel (HF Trainer's default): one pass over all parameters instead of a Python loop over them
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=hyper.lr,
                                  weight_decay=hyper.weight_decay, fused=True)
    stopper = EarlyStop(hyper.early_stopping, task, accelerator.prepare(DataLoader(  # scored like the eval split
        data.validation, batch_size=eval_dl.batch_size, collate_fn=eval_dl.collate_fn, pin_memory=pin))) \
        if hyper.early_stopping and data.validation is not None else None
    model, optimizer, train_dl, eval_dl = accelerator.prepare(model, optimizer, train_dl, eval_dl)

    # Counted per process after prepare (each process sees 1/N of the batches).
    steps_per_epoch, total_steps = schedule_steps(hyper, len(train_dl))
    eval_interval = max(1, round(hyper.eval_every * steps_per_epoch))
    if watch is not None:
        total_steps, eval_interval = watch.rule.max_steps, watch.rule.eval_steps
    from transformers import get_scheduler  # stepped by hand once per optimizer step: no process scaling

    scheduler = get_scheduler(hyper.scheduler, optimizer, num_warmup_steps=int(hyper.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    if mid is not None:  # a checkpoint resumes only under the settings it was made with
        mid.register(scheduler, optimizer, lr=hyper.lr, total_steps=total_steps, batches_per_epoch=len(train_dl),
                     per_device_batch=per_device, processes=accelerator.num_processes)
    target = spec.target
    clip = hyper.max_grad_norm or None  # 0 or None: no clipping
    out = TrainOutcome(flops=0.0, per_device_batch=per_device, grad_accum=hyper.grad_accum, max_grad_norm=clip)
    label = bar_label(spec, len(train_set)) + (f" lr search {hyper.lr:g}" if search else "")
    bar = tqdm(total=total_steps, desc=label, leave=False, dynamic_ncols=True,
               disable=None if accelerator.is_main_process and not quiet() else True)  # None: off when not a TTY
    lines = None if search or watch is not None else \
        PlainLines.instead_of(bar, accelerator.is_main_process, label, total_steps, steps_per_epoch)
    # The sum of every loss so far: NaN or infinite as soon as one loss is (one in-place add per step, no sync;
    # finite losses would need to exceed 3e38 together to overflow it). Read every LOG_EVERY steps.
    loss_sum = torch.zeros((), dtype=torch.float32, device=accelerator.device)
    losses = []  # on the device; read once at the end (no sync per step)
    log = StepLog(accelerator, losses) if accelerator.is_main_process and accelerator.trackers and not search else None
    marks = []  # batches trained when each curve point was evaluated: its train_loss is the mean since the last
    train_mode(model)
    start = time.perf_counter()  # time-to-target and train time count from the first optimizer step
    out.setup_seconds = start - t_enter
    epoch, skip = 0, 0  # epochs begun before this one; batches of it already trained (a resumed run skips them)
    resumed = mid.resume(data_order) if mid is not None else None
    if resumed:
        epoch, skip, elapsed = midrun.restore(resumed, out, losses, marks, loss_sum, stopper)
        start -= elapsed  # the clocks go on from the checkpoint (this invocation's setup is not train time)
        bar.update(out.optimizer_steps)
        if log is not None:
            log.read = len(losses)
    while out.stop_reason is None:
        epoch_start = data_order.get_state() if mid is not None else None
        in_epoch, batches = skip, accelerator.skip_first_batches(train_dl, skip) if skip else train_dl
        skip = 0
        for batch in batches:
            in_epoch += 1
            if hyper.channels_last:
                batch = batch_channels_last(batch)
            with accelerator.accumulate(model):
                loss, _ = task.loss_and_logits(model, batch)
                accelerator.backward(loss)
                if clip and accelerator.sync_gradients:  # on the accumulated gradients, unscaled (fp16), as Trainer
                    accelerator.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
                optimizer.zero_grad()
            loss_sum.add_(loss.detach())
            losses.append(loss.detach())
            n = len(batch["labels"]) * accelerator.num_processes
            out.samples_seen += n
            flops = task.flops_per_batch(params_total, batch)
            out.flops = None if flops is None or out.flops is None else out.flops + flops * accelerator.num_processes
            check_stop()
            if not accelerator.sync_gradients:
                continue
            if log is not None:
                log.step(out.optimizer_steps + 1, scheduler.get_last_lr()[0])  # the rate this step used
            scheduler.step()
            out.optimizer_steps += 1
            step = out.optimizer_steps
            bar.update()
            if step >= total_steps:
                out.stop_reason = "cap" if watch is not None else "max_steps" if hyper.max_steps else "epochs"
            elif hyper.max_seconds is not None and time.perf_counter() - start >= hyper.max_seconds:
                out.stop_reason = "max_seconds"
            elif mid is not None and mid.stops_at(step):  # a search candidate's first rung: kept, then evaluated
                out.stop_reason = "rung"  # (kept first: an evaluation draws from the RNG, a straight run has none here)
                mid.save(midrun.snapshot(out, losses, marks, loss_sum, stopper, epoch, in_epoch,
                                         time.perf_counter() - start), epoch_start)
            if step % LOG_EVERY == 0 or out.stop_reason or step % eval_interval == 0:
                _check_finite(loss_sum, loss, step, accelerator)  # every process agrees, so all stop together
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
                energy.poll()  # a wrapping energy counter is re-read every few seconds (one clock read otherwise)
                if log is not None:
                    log.flush()
            if step % eval_interval == 0 or out.stop_reason:
                if evaluate_point(model, eval_dl, task, accelerator, out, start, target, search or watch is not None):
                    out.stop_reason = out.stop_reason or "target"
                if watch is not None and watch.update(step, out.metrics[task.metric_name], out.metrics.get("loss")):
                    out.stop_reason = out.stop_reason or "plateau"
                marks.append(len(losses))
                if lines is not None:
                    lines.evaluated(out, task.metric_name, loss.item())
                if stopper is not None and stopper.done(model, accelerator, out):
                    out.stop_reason = out.stop_reason or "early_stopping"
                if log is not None:
                    log.flush()
                    accelerator.log(eval_values(out, task), step=step)
            if mid is not None and not out.stop_reason and mid.due(step):
                mid.save(midrun.snapshot(out, losses, marks, loss_sum, stopper, epoch, in_epoch,
                                              time.perf_counter() - start), epoch_start)
            if out.stop_reason:
                break
        epoch += 1
    bar.close()
    out.train_seconds = time.perf_counter() - start - out.eval_seconds
    out.losses = torch.stack(losses).float().tolist() if losses else []
    for point, begin, end in zip(out.curve, [0] + marks, marks):
        window = out.losses[begin:end]
        point["train_loss"] = sum(window) / len(window) if window else None
    out.epochs_run = out.optimizer_steps / steps_per_epoch
    out.model = accelerator.unwrap_model(model, keep_torch_compile=False)
    return out


def _check_finite(loss_sum, loss, step: int, accelerator) -> None:
    if not torch.isfinite(accelerator.gather(loss_sum.reshape(1))).all().item():
        raise Diverged(f"training loss became NaN or infinite by step {step} (last: {loss.item()})")
