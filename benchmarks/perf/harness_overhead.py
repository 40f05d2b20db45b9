"""Performance against what users would run instead: steady-state training samples/s of transferbench vs a
hand-written Accelerate loop vs Hugging Face's `transformers.Trainer`, for the same model, data, batch and steps.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python benchmarks/perf/harness_overhead.py [--repeats 5] [--cases ...]

- transferbench: `runners.orchestrate.execute.execute(plan)`, the very call `run_suite` makes per run (fresh Accelerator,
  peak memory, scheduler, gradient clipping, NaN check, progress bar, FLOPs count, final evaluation);
- hand loop: the same `hf_loop.setup` (data subset, model, mode), `accelerator.prepare`, then forward / backward /
  clip / step / scheduler step / zero_grad and nothing else: what a careful user writes by hand (fused AdamW,
  the same warm-up schedule and clipping, so the optimisation is the same);
- Trainer: `transformers.Trainer` configured to the same work: the same subset (the `Subset` from `hf_loop.setup`)
  and collator, the same model object as built by `setup`, per-device batch, `max_steps`, learning rate, warm-up
  steps, scheduler, weight decay, max_grad_norm, fp32, seed, one evaluation at the end at the same eval batch,
  its default optimizer (fused torch AdamW), no checkpoints, no logging integrations.

All three are timed alike: a timestamp at the start of every training forward (a forward pre-hook on the model,
training mode with gradients only); samples/s over the forwards WARMUP .. WARMUP+STEPS, so loading, prepare, the
first (slow) steps and the final evaluation are excluded. The sides alternate in one process, each round in a
rotated order (tb, hand, trainer / trainer, tb, hand / hand, trainer, tb, ...) so a slow drift of the machine
hits all alike. Ratios: transferbench / Trainer and transferbench / hand loop, of the medians and per round
(paired); also of the medians of samples per CPU-second of the process (user + system time of all its threads),
which other processes sharing the machine inflate far less than wall time. Prints a table and writes results/perf/harness_overhead.{json,csv} and results/perf/README.md.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")

import torch  # noqa: E402

from transferbench import provenance  # noqa: E402
from transferbench.config import parse_suite  # noqa: E402
from transferbench.runners.orchestrate import execute, stages  # noqa: E402
from transferbench.runners.orchestrate.plan import plan_runs  # noqa: E402
from transferbench.runners.train import hf_loop  # noqa: E402
from transferbench.tasks import get_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STAGES = stages.SHIPPED_STAGES


def _stage(name: str) -> str:
    return str(next(STAGES.glob(f"{name}-*")))


# name -> (benchmark entry of a suite, warm-up forwards, measured forwards)
CASES = {
    "text-minilm": (dict(task="text-classification", dataset="builtin:topics", models=["all-minilm-l6-v2"],
                         task_args={"max_length": 32}, modes={"finetune": {"lr": 1e-4}}, train_samples=[256]), 3, 10),
    "image-resnet": (dict(task="image-classification", dataset="builtin:digits", models=[_stage("glyphs-resnet")],
                          modes={"finetune": {"lr": 1e-3}}, train_samples=[512]), 10, 120),
    "image-vit": (dict(task="image-classification", dataset="builtin:digits", models=[_stage("glyphs-vit")],
                       modes={"finetune": {"lr": 1e-3}}, train_samples=[512]), 10, 150),
}


def spec_for(case: str, batch_size: int):
    bench, warmup, steps = CASES[case]
    # eval_every far beyond the run: every side evaluates once, after the measured window, on 200 examples
    suite = parse_suite({"name": "perf", "defaults": {"seeds": [0], "batch_size": batch_size, "eval_every": 1000,
                                                      "eval_samples": 200, "max_steps": warmup + steps + 1},
                         "benchmarks": [bench]})
    (plan,) = plan_runs(suite)
    return plan, warmup, steps


class Stamps:
    """Timestamps (and batch sizes) of training forwards: the task's loss_and_logits wrapped (transferbench, hand
    loop), or a forward pre-hook on the model (Trainer, which calls the model itself)."""

    def __init__(self, task_cls):
        self.times: list[tuple[float, int]] = []
        original = task_cls.loss_and_logits

        def stamped(task, model, batch):
            if torch.is_grad_enabled():  # training, not evaluation
                self.times.append((time.perf_counter(), len(batch["labels"]), time.process_time()))
            return original(task, model, batch)

        task_cls.loss_and_logits = stamped

    def hook(self, model) -> None:
        def pre(module, args, kwargs):
            if torch.is_grad_enabled() and module.training:
                self.times.append((time.perf_counter(), len(kwargs["labels"]), time.process_time()))

        model.register_forward_pre_hook(pre, with_kwargs=True)

    def rate(self, warmup: int, steps: int, clock: int = 0) -> float:
        """Samples per second of wall time (clock 0) or of this process's CPU time (clock 2: user + system of
        all its threads, which other processes on a shared machine inflate far less than wall time)."""
        window = self.times[warmup: warmup + steps + 1]
        assert len(window) == steps + 1, f"{len(self.times)} forwards recorded, {warmup + steps + 1} needed"
        samples = sum(w[1] for w in window[:-1])
        return samples / (window[-1][clock] - window[0][clock])


def harness(plan, stamps) -> None:
    res = execute.execute(plan)
    if res.status != "ok":
        raise SystemExit(f"harness run {res.status}: {res.error}")


def _schedule(spec, optimizer, total_steps: int):
    from transformers import get_scheduler

    return get_scheduler(spec.hyper.scheduler, optimizer, num_warmup_steps=int(spec.hyper.warmup_ratio * total_steps),
                         num_training_steps=total_steps)


def hand_loop(plan, stamps) -> None:
    spec = plan.spec
    """The minimal Accelerate loop: what a careful user writes by hand (fused AdamW, warm-up schedule, clipping)."""
    task = get_task(spec.task)(spec.task_args)
    data, train_set, model = hf_loop.setup(spec, task, spec.model)
    accelerator = execute.accelerator_for(spec)
    loader = torch.utils.data.DataLoader(train_set, batch_size=spec.hyper.batch_size, shuffle=True,
                                         collate_fn=data.collate, generator=torch.Generator().manual_seed(spec.seed))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.hyper.lr,
                                  weight_decay=spec.hyper.weight_decay, fused=True)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    scheduler = _schedule(spec, optimizer, spec.hyper.max_steps)
    model.train()
    done = 0
    while done < spec.hyper.max_steps:
        for batch in loader:
            loss, _ = task.loss_and_logits(model, batch)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), spec.hyper.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            done += 1
            if done == spec.hyper.max_steps:
                break


def trainer(plan, stamps) -> None:
    """`transformers.Trainer` configured to the same work as the transferbench run of `plan`."""
    spec = plan.spec
    import tempfile

    from transformers import Trainer, TrainingArguments

    task = get_task(spec.task)(spec.task_args)
    data, train_set, model = hf_loop.setup(spec, task, spec.model)  # same subset, model, mode and seed
    stamps.hook(model)
    h = spec.hyper
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=h.batch_size,
            per_device_eval_batch_size=max(2 * h.batch_size, hf_loop.EVAL_BATCH), max_steps=h.max_steps,
            learning_rate=h.lr, warmup_steps=int(h.warmup_ratio * h.max_steps), lr_scheduler_type=h.scheduler,
            weight_decay=h.weight_decay, max_grad_norm=h.max_grad_norm, bf16=False, fp16=False,
            use_cpu=not torch.cuda.is_available(), seed=spec.seed, data_seed=spec.seed,
            eval_strategy="steps", eval_steps=h.max_steps, save_strategy="no", report_to="none",
            logging_strategy="no", disable_tqdm=True, dataloader_num_workers=0)

        def metrics(pred):
            return task.compute_metrics(pred.predictions.argmax(-1).tolist(), pred.label_ids.tolist())

        t = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=data.eval,
                    data_collator=data.collate, compute_metrics=metrics)
        assert t.args.optim.value == "adamw_torch_fused", t.args.optim
        t.train()


SIDES = {"transferbench": harness, "hand": hand_loop, "trainer": trainer}


def measure(case: str, repeats: int, batch_size: int, sides: list[str]) -> dict:
    plan, warmup, steps = spec_for(case, batch_size)
    spec = plan.spec
    stamps = Stamps(get_task(spec.task))
    rates = {side: [] for side in sides}
    cpu_rates = {side: [] for side in sides}
    walls = {side: [] for side in sides}
    for i in range(repeats):  # each round a rotation of the sides, every other one reversed
        k = i % len(sides)
        order = sides[k:] + sides[:k]
        for side in (order if (i // len(sides)) % 2 == 0 else order[::-1]):
            stamps.times.clear()
            t0 = time.perf_counter()
            SIDES[side](plan, stamps)
            walls[side].append(time.perf_counter() - t0)
            rates[side].append(stamps.rate(warmup, steps))
            cpu_rates[side].append(stamps.rate(warmup, steps, clock=2))
            print(f"  {case} round {i} {side:13s} {rates[side][-1]:9.1f} samples/s, {cpu_rates[side][-1]:9.1f} "
                  f"samples/CPU-s (call {walls[side][-1]:.1f} s)", flush=True)
    tb = rates["transferbench"]
    row = dict(case=case, model=spec.model if not spec.model.startswith(str(STAGES)) else
               "transferbench/stages/" + Path(spec.model).name, task=spec.task, mode=spec.mode,
               batch_size=batch_size, warmup_steps=warmup, measured_steps=steps, repeats=repeats)
    for side in sides:
        row.update({f"{side}_median": statistics.median(rates[side]), f"{side}_min": min(rates[side]),
                    f"{side}_max": max(rates[side]), f"{side}_call_seconds_median": statistics.median(walls[side])})
    for other in sides[1:]:
        paired = sorted(a / b for a, b in zip(tb, rates[other]))  # the rounds in which both ran
        row.update({f"ratio_vs_{other}": statistics.median(tb) / statistics.median(rates[other]),
                    f"paired_vs_{other}_median": statistics.median(paired), f"paired_vs_{other}_min": paired[0],
                    f"paired_vs_{other}_max": paired[-1],
                    f"cpu_ratio_vs_{other}": statistics.median(cpu_rates["transferbench"])
                    / statistics.median(cpu_rates[other])})
    for side in sides:
        row[f"{side}_cpu_median"] = statistics.median(cpu_rates[side])
    row["samples_per_second"] = rates
    row["samples_per_cpu_second"] = cpu_rates
    row["call_seconds"] = walls
    return row


NAMES = {"hand": "hand loop", "trainer": "Trainer"}


def table(rows: list[dict]) -> str:
    others = [k[len("ratio_vs_"):] for k in rows[0] if k.startswith("ratio_vs_")]
    head = ("| case | model | mode | batch | measured steps | transferbench samples/s | "
            + " | ".join(f"{NAMES[o]} samples/s" for o in others) + " | "
            + " | ".join(f"tb / {NAMES[o]}: ratio of medians | tb / {NAMES[o]}: paired [min, max]" for o in others)
            + " |")
    head = head[:-1] + "".join(f"| tb / {NAMES[o]}: ratio of CPU-time medians " for o in others) + "|"
    lines = [head, "|" + "---|" * (6 + 4 * len(others))]
    fmt = lambda r, side: f"{r[side + '_median']:.1f} [{r[side + '_min']:.1f}, {r[side + '_max']:.1f}]"  # noqa: E731
    for r in rows:
        cells = [r["case"], r["model"], r["mode"], str(r["batch_size"]), str(r["measured_steps"]),
                 fmt(r, "transferbench"), *(fmt(r, o) for o in others)]
        for o in others:
            cells += [f"{r['ratio_vs_' + o]:.3f}", f"{r['paired_vs_' + o + '_median']:.3f} "
                      f"[{r['paired_vs_' + o + '_min']:.3f}, {r['paired_vs_' + o + '_max']:.3f}]"]
        cells += [f"{r['cpu_ratio_vs_' + o]:.3f}" for o in others]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="rounds (each runs every side once; default 5)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["text-minilm", "image-resnet"])
    p.add_argument("--out", default=str(ROOT / "results" / "perf"))
    args = p.parse_args(argv)
    sides = list(SIDES)
    device = provenance.device_name(execute.process_state().device)
    rows = []
    for case in args.cases:
        print(f"{case}: {args.repeats} rounds of {', '.join(sides)}, rotating", flush=True)
        rows.append(measure(case, args.repeats, args.batch_size, sides))
    print("\n" + table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        load = os.getloadavg()
    except OSError:
        load = None
    meta = dict(device=device, torch_threads=torch.get_num_threads(), cpus=os.cpu_count(),
                versions=provenance.versions(), git_commit=provenance.git_commit(), platform=platform.platform())
    command = "python benchmarks/perf/harness_overhead.py " + " ".join(argv or sys.argv[1:])
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for r in rows:
        r.update(command=command, date=date, load_average_after=load)
    # a case measured again replaces its row; the others keep theirs (each row says when and how). Rows of the
    # older two-way format (no Trainer side) are dropped: the table's columns are the three-way ones.
    previous = out / "harness_overhead.json"
    if previous.exists():
        kept = [r for r in json.loads(previous.read_text())["rows"]
                if r["case"] not in {x["case"] for x in rows} and "ratio_vs_trainer" in r]
        rows = kept + rows
    text = table(rows)
    (out / "harness_overhead.json").write_text(json.dumps(dict(meta, rows=rows), indent=1) + "\n")
    flat = [{k: v for k, v in r.items() if not isinstance(v, dict)} for r in rows]
    with open(out / "harness_overhead.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
    commands = "\n".join(f"  - {r['case']}: `HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 {r['command']}` ({r['date']}, "
                         f"load average after {r['load_average_after']})" for r in rows)
    readme = out / "README.md"
    # the sections after KEEP are other scripts' (head_init.py, ...): rewritten by them, kept here
    kept = readme.read_text().partition(KEEP)[2] if readme.exists() else ""
    readme.write_text(README.format(table=text, commands=commands, **meta, versions_text=", ".join(
        f"{k} {v}" for k, v in meta["versions"].items())) + (KEEP + kept if kept else ""))
    return 0


KEEP = "\n<!-- other benchmarks: the sections below are kept when harness_overhead.py rewrites the part above -->\n"


README = """# results/perf: transferbench vs a hand-written Accelerate loop vs transformers.Trainer

Steady-state training samples/s of transferbench (`runners.orchestrate.execute.execute`, as `transferbench run` calls it), of a
hand-written Accelerate loop (prepare; forward / backward / clip / fused AdamW step / scheduler step / zero_grad)
and of `transformers.Trainer` configured to the same work (same subset, collator, model, batch, steps, learning
rate, warm-up, scheduler, weight decay, max_grad_norm 1.0, fp32, seed; one evaluation at the end; its default
optimizer, fused torch AdamW). The sides alternate in one process, each round in a rotated order. Timed from
the start of the first measured training forward to the start of the forward after the last one; warm-up
forwards, model loading, `prepare` and evaluation are excluded. Ratios are transferbench over the other side:
of the medians, and per round (paired); the last columns use samples per CPU-second of the process instead of
per wall second (CPU time is what other processes on a shared machine inflate least). Acceptance (issue 17): tb / Trainer >= 1.0 on the text case, tb / hand
loop >= 0.97 on both. How it works: `benchmarks/perf/harness_overhead.py` (docstring).

- hardware: {device}, {cpus} CPUs, {torch_threads} torch threads ({platform}); git commit {git_commit} (plus the
  working tree's changes of issue 17)
- versions: {versions_text}
- commands and dates (UTC):
{commands}

{table}

Raw per-round samples/s, samples/CPU-s and each call's wall seconds: `harness_overhead.json`
(`rows[].samples_per_second`, `rows[].samples_per_cpu_second`, `rows[].call_seconds`); flat: `harness_overhead.csv`.

Caveat: on this 2-core VM other processes may share the CPU while a case is measured; the load average after
each case is in the commands above (about 1 is the benchmark alone, 2 and more means shared). Under shared load
repeat-to-repeat noise is about +-15% or more, so the ratios are medians of alternating rounds, and a case
measured on an idle machine is the better number.
No GPU was lent to this task: the GPU cases (ViT-B/16, BERT-base, bf16, MFU) are not measured.
"""


if __name__ == "__main__":
    sys.exit(main())
