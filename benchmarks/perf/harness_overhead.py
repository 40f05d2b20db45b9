"""Harness overhead: steady-state samples/s of transferbench's training loop vs a minimal hand-written Accelerate
loop, for the same model, data, batch and steps.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python benchmarks/perf/harness_overhead.py [--repeats 5] [--cases ...]

- harness: `runners.execute.execute(spec)`, the very call `run_suite` makes per run (fresh Accelerator, peak
  memory (the kernel's resettable high-water mark on CPU, no sampling thread; transferbench/memory.py), scheduler,
  NaN check, progress bar, FLOPs count, final evaluation);
- hand loop: the same `hf_loop.setup` (data subset, model, mode), the same AdamW, `accelerator.prepare`, then
  forward / backward / step / zero_grad and nothing else.

Both are timed alike: a timestamp at the start of every training forward (the task's `loss_and_logits`, wrapped
for both sides); samples/s over the forwards WARMUP .. WARMUP+STEPS, so loading, prepare, the first (slow) steps
and the harness's final evaluation are excluded. The two sides alternate in one process in ABBA order
(harness, hand, hand, harness, ...) so a slow drift of the machine hits both alike. Prints a table and writes
results/perf/harness_overhead.{json,csv} and results/perf/README.md.
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
from transferbench.runners import execute, hf_loop, stages, suite as runner  # noqa: E402
from transferbench.tasks import get_task  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
STAGES = stages.SHIPPED_STAGES


def _stage(name: str) -> str:
    return str(next(STAGES.glob(f"{name}-*")))


# name -> (benchmark entry of a suite, warm-up forwards, measured forwards)
CASES = {
    "text-minilm": (dict(task="text-classification", dataset="builtin:topics", models=["all-minilm-l6-v2"],
                         task_args={"max_length": 32}, modes={"finetune": {"lr": 1e-4}}, train_samples=[256]), 3, 12),
    "image-resnet": (dict(task="image-classification", dataset="builtin:digits", models=[_stage("glyphs-resnet")],
                          modes={"finetune": {"lr": 1e-3}}, train_samples=[512]), 10, 300),
    "image-vit": (dict(task="image-classification", dataset="builtin:digits", models=[_stage("glyphs-vit")],
                       modes={"finetune": {"lr": 1e-3}}, train_samples=[512]), 10, 150),
}


def spec_for(case: str, batch_size: int):
    bench, warmup, steps = CASES[case]
    # eval_every far beyond the run: the harness evaluates once, after the measured window
    suite = parse_suite({"name": "perf", "defaults": {"seeds": [0], "batch_size": batch_size, "eval_every": 1000,
                                                      "max_steps": warmup + steps + 1}, "benchmarks": [bench]})
    (spec,) = runner.expand_runs(suite)
    return spec, warmup, steps


class Stamps:
    """Timestamps (and batch sizes) of training forwards, recorded by wrapping the task's loss_and_logits."""

    def __init__(self, task_cls):
        self.times: list[tuple[float, int]] = []
        original = task_cls.loss_and_logits

        def stamped(task, model, batch):
            if torch.is_grad_enabled():  # training, not evaluation
                self.times.append((time.perf_counter(), len(batch["labels"])))
            return original(task, model, batch)

        task_cls.loss_and_logits = stamped

    def rate(self, warmup: int, steps: int) -> float:
        window = self.times[warmup: warmup + steps + 1]
        assert len(window) == steps + 1, f"{len(self.times)} forwards recorded, {warmup + steps + 1} needed"
        samples = sum(n for _, n in window[:-1])
        return samples / (window[-1][0] - window[0][0])


def harness(spec) -> None:
    res = execute.execute(spec)
    if res.status != "ok":
        raise SystemExit(f"harness run {res.status}: {res.error}")


def hand_loop(spec) -> None:
    """The minimal Accelerate loop: what a careful user writes by hand."""
    task = get_task(spec.task)(spec.task_args)
    data, train_set, model = hf_loop.setup(spec, task, spec.model)
    accelerator = execute.accelerator_for(spec)
    loader = torch.utils.data.DataLoader(train_set, batch_size=spec.hyper.batch_size, shuffle=True,
                                         collate_fn=data.collate, generator=torch.Generator().manual_seed(spec.seed))
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=spec.hyper.lr,
                                  weight_decay=spec.hyper.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    model.train()
    done = 0
    while done < spec.hyper.max_steps:
        for batch in loader:
            loss, _ = task.loss_and_logits(model, batch)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            done += 1
            if done == spec.hyper.max_steps:
                break


def measure(case: str, repeats: int, batch_size: int) -> dict:
    spec, warmup, steps = spec_for(case, batch_size)
    stamps = Stamps(get_task(spec.task))
    rates = {"harness": [], "hand": []}
    order = [side for i in range(repeats) for side in (("harness", "hand") if i % 2 == 0 else ("hand", "harness"))]
    for side in order:
        stamps.times.clear()
        (harness if side == "harness" else hand_loop)(spec)
        rates[side].append(stamps.rate(warmup, steps))
        print(f"  {case} {side:8s} {rates[side][-1]:9.1f} samples/s", flush=True)
    h, m = rates["harness"], rates["hand"]
    # pairs in the order they ran (ABBA: each harness repeat next to one hand repeat)
    paired = sorted(a / b for a, b in zip(h, m))
    return dict(case=case, model=spec.model if not spec.model.startswith(str(STAGES)) else
                "transferbench/stages/" + Path(spec.model).name, task=spec.task, mode=spec.mode,
                batch_size=batch_size, warmup_steps=warmup, measured_steps=steps, repeats=repeats,
                harness_median=statistics.median(h), harness_min=min(h), harness_max=max(h),
                hand_median=statistics.median(m), hand_min=min(m), hand_max=max(m),
                ratio=statistics.median(h) / statistics.median(m), paired_ratio_median=statistics.median(paired),
                paired_ratio_min=paired[0], paired_ratio_max=paired[-1], harness=h, hand=m)


def table(rows: list[dict]) -> str:
    lines = ["| case | model | mode | batch | measured steps | harness samples/s: median [min, max] | "
             "hand loop samples/s: median [min, max] | ratio of medians | paired ratios: median [min, max] |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['model']} | {r['mode']} | {r['batch_size']} | {r['measured_steps']} | "
                     f"{r['harness_median']:.1f} [{r['harness_min']:.1f}, {r['harness_max']:.1f}] | "
                     f"{r['hand_median']:.1f} [{r['hand_min']:.1f}, {r['hand_max']:.1f}] | {r['ratio']:.3f} | "
                     f"{r['paired_ratio_median']:.3f} [{r['paired_ratio_min']:.3f}, {r['paired_ratio_max']:.3f}] |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="repeats per side (default 5)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["text-minilm", "image-resnet"])
    p.add_argument("--out", default=str(ROOT / "results" / "perf"))
    args = p.parse_args(argv)
    device = provenance.device_name(execute.process_state().device)
    rows = []
    for case in args.cases:
        print(f"{case}: {args.repeats} repeats per side, alternating", flush=True)
        rows.append(measure(case, args.repeats, args.batch_size))
    print("\n" + table(rows))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    meta = dict(device=device, torch_threads=torch.get_num_threads(), cpus=os.cpu_count(),
                versions=provenance.versions(), git_commit=provenance.git_commit(), platform=platform.platform())
    command = "python benchmarks/perf/harness_overhead.py " + " ".join(argv or sys.argv[1:])
    date = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    for r in rows:
        r.update(command=command, date=date)
    # a case measured again replaces its row; the others keep theirs (each row says when and how)
    previous = out / "harness_overhead.json"
    if previous.exists():
        kept = [r for r in json.loads(previous.read_text())["rows"] if r["case"] not in {x["case"] for x in rows}]
        rows = kept + rows
    text = table(rows)
    (out / "harness_overhead.json").write_text(json.dumps(dict(meta, rows=rows), indent=1) + "\n")
    with open(out / "harness_overhead.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[k for k in rows[0] if k not in ("harness", "hand")])
        writer.writeheader()
        writer.writerows({k: v for k, v in r.items() if k not in ("harness", "hand")} for r in rows)
    commands = "\n".join(f"  - {r['case']}: `HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 {r['command']}` ({r['date']})"
                         for r in rows)
    (out / "README.md").write_text(README.format(table=text, commands=commands, **meta, versions_text=", ".join(
        f"{k} {v}" for k, v in meta["versions"].items())))
    return 0


README = """# results/perf: harness overhead

Steady-state training samples/s of transferbench's loop (`runners.execute.execute`, as `transferbench run` calls it)
vs a minimal hand-written Accelerate loop (prepare; forward / backward / step / zero_grad), same model, data,
batch and steps, alternating in one process (ABBA order). Timed from the start of the first measured forward
to the start of the forward after the last one; warm-up forwards, model loading, `prepare` and evaluation are
excluded. Ratio = harness / hand loop (acceptance: >= 0.97). Paired ratios: each harness repeat over the hand
repeat run next to it. How it works: `benchmarks/perf/harness_overhead.py` (docstring).

- hardware: {device}, {cpus} CPUs, {torch_threads} torch threads ({platform}); git commit {git_commit}
- versions: {versions_text}
- commands and dates (UTC):
{commands}

{table}

Raw per-repeat samples/s: `harness_overhead.json` (`rows[].harness`, `rows[].hand`); flat: `harness_overhead.csv`.
"""


if __name__ == "__main__":
    sys.exit(main())
