"""End to end against a Trainer user: `transferbench run` of a 4-run suite vs the script a `transformers.Trainer`
user writes for the same runs, each timed as a whole process, the two sides alternating over rounds.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python benchmarks/perf/trainer_e2e.py [--rounds 5]

The suite (`suite()` below): all-MiniLM-L6-v2 on builtin:topics, max_length 32, 640 training examples, finetune at
1e-4 and LoRA (r 8, alpha 16, query/value) at 2e-3, seeds 0 and 1, 4 epochs of batch 32 (80 optimizer steps a run),
linear schedule with int(0.1 x steps) warm-up steps, AdamW (fused), weight decay 0, max_grad_norm 1.0, fp32, one
evaluation at the end on the whole 600-sentence test split.

The Trainer side (USER_SCRIPT, written to a file and run as its own process) is what a Trainer user writes:
`datasets.load_dataset("json", ...)` on the very examples transferbench trains and tests on (each seed's subset
and the test split, exported once by this driver from transferbench's own loading), `AutoTokenizer` and a batched
`.map` tokenisation (truncation at 32, padding per batch by Trainer's default collator),
`AutoModelForSequenceClassification`, peft `get_peft_model` with a SEQ_CLS `LoraConfig` (the classifier in
modules_to_save, as transferbench's lora mode), `TrainingArguments` and `Trainer.train()` then
`Trainer.evaluate()`, accuracy in `compute_metrics`. Aligned with the transferbench runs: Trainer's default
optimizer (torch AdamW, fused) and clipping (1.0); weight decay 0, which is Trainer's default, set on the
transferbench side, so the two sides' different decay groups (transferbench decays every trainable tensor,
Trainer exempts biases and LayerNorm) decay nothing on either; fp32; the same learning rates, batch, epochs and
warm-up steps (given as a count: Trainer rounds a ratio up, transferbench down); the eval batch transferbench uses
(128); no evaluation during training, no checkpoints, no reporting integrations, no progress bars (transferbench
draws none when not on a terminal). The shuffling order differs (each side seeds its own sampler), so the final
accuracies agree within seed noise, not bit for bit.

Timing: each side is one subprocess, timed from spawn to exit (wall), with its CPU seconds (children's rusage).
Training window: transferbench's records' train_seconds (first optimizer step to the end of training, evaluations
excluded); Trainer: a callback's on_train_begin to on_train_end (its train_runtime is also recorded). Both summed
over the suite's 4 runs. Rounds alternate the order (tb first in even rounds, Trainer first in odd ones). Both
sides' datasets caches are filled before the first round (transferbench's by the export, which tokenises through
it; the Trainer script's by one untimed call that loads and tokenises without training), so every round finds both
warm: a user's second and later runs of either. Ratios Trainer / transferbench (> 1: transferbench
faster), per round (paired), with the median and a t-interval (scipy.stats) of the paired ratios.

Writes results/perf/trainer_e2e.{json,md}.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from proc_timing import t_interval, timed  # beside this script

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "results" / "perf"

TRAIN_SAMPLES, EPOCHS, BATCH, MAX_LENGTH = 640, 4, 32, 32
RUNS = [("finetune", 1e-4), ("lora", 2e-3)]  # modes and their learning rates
SEEDS = [0, 1]
EVAL_BATCH = 128  # transferbench's per-device evaluation batch (runners/train/hf_eval.EVAL_BATCH)

def suite(train_samples: int = TRAIN_SAMPLES, epochs: int = EPOCHS) -> str:
    return f"""
name: trainer-e2e
defaults: {{seeds: {SEEDS}, batch_size: {BATCH}, warmup_ratio: 0.1, weight_decay: 0.0, max_grad_norm: 1.0,
            mixed_precision: "no"}}
benchmarks:
  - task: text-classification
    dataset: builtin:topics
    models: [all-minilm-l6-v2]
    task_args: {{max_length: {MAX_LENGTH}}}
    epochs: {epochs}
    eval_every: {epochs}                   # one evaluation, at the end
    train_samples: [{train_samples}]
    modes: {{{", ".join(f"{m}: {{lr: {lr}}}" for m, lr in RUNS)}}}
"""

USER_SCRIPT = '''
import json, math, sys, time
import numpy as np
from datasets import load_dataset
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainerCallback,
                          TrainingArguments)
from peft import LoraConfig, get_peft_model

DATA, MODEL, OUT = sys.argv[1], sys.argv[2], sys.argv[3]
RUNS = json.loads(sys.argv[4])  # [[mode, lr, seed], ...]
BATCH, EPOCHS, MAX_LENGTH, EVAL_BATCH = (int(x) for x in sys.argv[5:9])
imported = time.time()

labels = json.load(open(f"{DATA}/labels.json"))
tokenizer = AutoTokenizer.from_pretrained(MODEL)
seeds = sorted({seed for _, _, seed in RUNS})
raw = load_dataset("json", data_files={"test": f"{DATA}/test.jsonl",
                                       **{f"train{s}": f"{DATA}/train_seed{s}.jsonl" for s in seeds}})
data = raw.map(lambda b: tokenizer(b["text"], truncation=True, max_length=MAX_LENGTH), batched=True,
               remove_columns=["text"])
ready = time.time()


def accuracy(pred):
    return {"accuracy": float((np.argmax(pred.predictions, -1) == pred.label_ids).mean())}


class Window(TrainerCallback):
    def on_train_begin(self, args, state, control, **kw):
        self.begin = time.perf_counter()

    def on_train_end(self, args, state, control, **kw):
        self.seconds = time.perf_counter() - self.begin


runs = []
for mode, lr, seed in RUNS:
    t0 = time.perf_counter()
    train = data[f"train{seed}"]
    model = AutoModelForSequenceClassification.from_pretrained(
        MODEL, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id={l: i for i, l in enumerate(labels)})
    if mode == "lora":
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, lora_dropout=0.0,
                                                 target_modules=["query", "value"]))
    steps = math.ceil(len(train) / BATCH) * EPOCHS
    args = TrainingArguments(output_dir=f"{OUT}.tmp", per_device_train_batch_size=BATCH,
                             per_device_eval_batch_size=EVAL_BATCH, num_train_epochs=EPOCHS, learning_rate=lr,
                             warmup_steps=int(0.1 * steps), weight_decay=0.0, max_grad_norm=1.0, seed=seed,
                             save_strategy="no", report_to="none", disable_tqdm=True)
    window = Window()
    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=data["test"],
                      processing_class=tokenizer, compute_metrics=accuracy, callbacks=[window])
    assert args.optim.value == "adamw_torch_fused", args.optim
    out = trainer.train()
    metrics = trainer.evaluate()
    runs.append(dict(mode=mode, lr=lr, seed=seed, steps=out.global_step, train_window=window.seconds,
                     train_runtime=out.metrics["train_runtime"], eval_seconds=metrics["eval_runtime"],
                     accuracy=metrics["eval_accuracy"], run_seconds=time.perf_counter() - t0))
json.dump(dict(imported_at=imported, data_ready_at=ready, finished_at=time.time(), runs=runs), open(OUT, "w"))
'''


def export(work: Path, text_yaml: str) -> tuple[str, list]:
    """Each seed's training subset and the test split, as transferbench loads them, written as JSON lines for the
    Trainer side; returns (the model's local folder, the runs [mode, lr, seed])."""
    from transferbench.config import parse_suite
    from transferbench.models import resolve
    from transferbench.runners.orchestrate.plan import plan_runs
    from transferbench.runners.train import hf_loop
    from transferbench.safe_yaml import load as load_yaml
    from transferbench.tasks import get_task
    from transferbench.tasks.text_classification import _labelled

    plans = plan_runs(parse_suite(load_yaml(text_yaml, "trainer-e2e suite")))
    assert len(plans) == 4, [p.describe() for p in plans]
    spec = plans[0].spec
    raw, labels, text, label = _labelled(spec.dataset.model_dump_json())
    (work / "labels.json").write_text(json.dumps(labels))
    with open(work / "test.jsonl", "w") as f:
        for ex in raw["eval"]:
            f.write(json.dumps({"text": ex[text], "label": ex[label]}) + "\n")
    task = get_task(spec.task)(spec.task_args)
    runs = []
    for plan in plans:
        s = plan.spec
        _, train_set, _ = hf_loop.load(s, task, s.model)
        with open(work / f"train_seed{s.seed}.jsonl", "w") as f:
            for ex in raw["train"].select(train_set.indices):
                f.write(json.dumps({"text": ex[text], "label": ex[label]}) + "\n")
        runs.append([s.mode, s.hyper.lr, s.seed])
    return resolve(spec.model), runs


def timed_logged(cmd: list[str], log: Path) -> tuple[float, float]:
    """(wall seconds from spawn to exit, CPU seconds of the process and its children), output to `log`."""
    with open(log, "w") as f:
        wall, cpu, done = timed(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent)
    if done.returncode:
        raise SystemExit(f"{cmd[:4]} exited {done.returncode}; see {log}")
    return wall, cpu


def side_tb(work: Path, i: int, _runs) -> dict:
    results = work / f"tb-results-{i}"
    wall, cpu = timed_logged([sys.executable, "-m", "transferbench", "run", str(work / "suite.yaml"), "--results-dir",
                       str(results)], work / f"tb-{i}.log")
    recs = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    assert len(recs) == 4 and all(r["status"] == "ok" for r in recs), [r.get("error") for r in recs]
    (timing,) = [json.loads(line) for line in (results / "suite_timing.jsonl").read_text().splitlines()]
    parts = {k: timing.get(k) for k in ("startup_seconds", "preflight_seconds", "warmup_seconds", "stages_seconds",
                                        "runs_wall_seconds", "suite_seconds")}
    return dict(wall=wall, cpu=cpu, train_window=sum(r["train_seconds"] for r in recs),
                eval_seconds=sum(r["eval_seconds"] for r in recs), setup_seconds=sum(r["setup_seconds"] for r in recs),
                **parts,
                runs=[dict(mode=r["mode"], seed=r["seed"], accuracy=r["metric"], train_seconds=r["train_seconds"]) for r in recs])


def side_trainer(work: Path, i: int, runs, model: str = "", epochs: int = EPOCHS) -> dict:
    out = work / f"trainer-{i}.json"
    t0 = time.time()
    wall, cpu = timed_logged([sys.executable, str(work / "trainer_user.py"), str(work), model, str(out), json.dumps(runs),
                       str(BATCH), str(epochs), str(MAX_LENGTH), str(EVAL_BATCH)], work / f"trainer-{i}.log")
    got = json.loads(out.read_text())
    return dict(wall=wall, cpu=cpu, train_window=sum(r["train_window"] for r in got["runs"]),
                train_runtime=sum(r["train_runtime"] for r in got["runs"]),
                eval_seconds=sum(r["eval_seconds"] for r in got["runs"]), imports_seconds=got["imported_at"] - t0,
                data_seconds=got["data_ready_at"] - got["imported_at"],
                runs_wall_seconds=sum(r["run_seconds"] for r in got["runs"]),
                runs=got["runs"])


def paired(tb: list[float], trainer: list[float]) -> dict:
    """Trainer / transferbench per round: median, mean, 95% t-interval of the mean, min, max."""
    r = [b / a for a, b in zip(tb, trainer)]
    return dict(ratios=r, median=statistics.median(r), mean=statistics.fmean(r), t95=list(t_interval(r)), min=min(r),
                max=max(r))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup-rounds", type=int, default=0, help="rounds run first and not counted (default 0)")
    p.add_argument("--train-samples", type=int, default=TRAIN_SAMPLES, help="per run (default %(default)s)")
    p.add_argument("--epochs", type=int, default=EPOCHS, help="per run (default %(default)s)")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="trainer-e2e-") as tmp:
        work = Path(tmp)
        text_yaml = suite(args.train_samples, args.epochs)
        (work / "suite.yaml").write_text(text_yaml)
        (work / "trainer_user.py").write_text(USER_SCRIPT)
        model, runs = export(work, text_yaml)
        sides = {"transferbench": side_tb, "trainer": lambda w, i, r: side_trainer(w, i, r, model, args.epochs)}
        got = {name: [] for name in sides}
        # untimed: the user script's datasets cache (load_dataset of the exported files, the tokenising map) is
        # filled once, as export() filled transferbench's; then every round finds both sides' caches warm
        side_trainer(work, "cache", [], model, args.epochs)
        for i in range(-args.warmup_rounds, args.rounds):
            order = list(sides) if i % 2 == 0 else list(sides)[::-1]
            for name in order:
                res = sides[name](work, i, runs)
                accs = " ".join(f"{r['accuracy']:.3f}" for r in res["runs"])
                print(f"round {i} {name:13s} wall {res['wall']:6.1f} s  cpu {res['cpu']:6.1f} s  train window "
                      f"{res['train_window']:5.1f} s  accuracy {accs}", flush=True)
                if i >= 0:
                    got[name].append(dict(res, round=i, first=order[0] == name))
            if i >= 0 and len(got["trainer"]) > 1:  # written after every round: an interrupted run keeps its rounds
                write(args, argv, got, text_yaml, load_before)
    print(write(args, argv, got, text_yaml, load_before))
    return 0


def write(args, argv, got: dict, text_yaml: str, load_before) -> str:
    from transferbench import provenance

    load_after = os.getloadavg()
    tb, tr = got["transferbench"], got["trainer"]
    summary = {}
    for key in ("wall", "train_window", "cpu"):
        summary[key] = dict(transferbench_median=statistics.median(x[key] for x in tb),
                            trainer_median=statistics.median(x[key] for x in tr),
                            trainer_over_tb=paired([x[key] for x in tb], [x[key] for x in tr]))
    acc = {name: statistics.fmean(r["accuracy"] for x in rows for r in x["runs"]) for name, rows in got.items()}
    meta = dict(command="HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python benchmarks/perf/trainer_e2e.py "
                + " ".join(argv if argv is not None else sys.argv[1:]),
                date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                load_average_before=load_before, load_average_after=load_after,
                hardware=f"{provenance.cpu_name()}, {os.cpu_count()} CPUs ({platform.platform()})",
                versions=provenance.versions(), git_commit=provenance.git_commit(), suite=text_yaml.strip(),
                rounds=len(tb), warmup_rounds=args.warmup_rounds)
    result = dict(meta, summary=summary, mean_accuracy=acc, transferbench=tb, trainer=tr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trainer_e2e.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result)
    (out / "trainer_e2e.md").write_text(text)
    return text


def breakdown(tb: list[dict], tr: list[dict]) -> str:
    med = lambda rows, f: statistics.median(f(x) for x in rows)  # noqa: E731
    rows = [
        ("interpreter start and imports (tb: to run_suite; Trainer: to the first line after the imports)",
         med(tb, lambda x: x["startup_seconds"]), med(tr, lambda x: x["imports_seconds"])),
        ("tb: suite planning, preflight (data loaded and tokenised, models checked) and warm-up; Trainer: "
         "load_dataset + tokenising map", med(tb, lambda x: x["suite_seconds"] - x["runs_wall_seconds"]),
         med(tr, lambda x: x["data_seconds"])),
        ("per-run setup, 4 runs (model load, mode, optimizer, accelerator / Trainer construction)",
         med(tb, lambda x: x["runs_wall_seconds"] - x["train_window"] - x["eval_seconds"]),
         med(tr, lambda x: x["runs_wall_seconds"] - x["train_window"] - x["eval_seconds"])),
        ("training window, 4 runs", med(tb, lambda x: x["train_window"]), med(tr, lambda x: x["train_window"])),
        ("final evaluation, 4 runs x 600 sentences", med(tb, lambda x: x["eval_seconds"]),
         med(tr, lambda x: x["eval_seconds"])),
        ("the rest (interpreter exit; tb: records, store, claims, timing line)",
         med(tb, lambda x: x["wall"] - x["startup_seconds"] - x["suite_seconds"]),
         med(tr, lambda x: x["wall"] - x["imports_seconds"] - x["data_seconds"] - x["runs_wall_seconds"])),
        ("whole process", med(tb, lambda x: x["wall"]), med(tr, lambda x: x["wall"])),
    ]
    return "| part | transferbench s | Trainer script s |\n|---|---|---|\n" + "\n".join(
        f"| {name} | {a:.1f} | {b:.1f} |" for name, a, b in rows)


def _iv(s: dict) -> str:
    return (f"{s['median']:.3f} (mean {s['mean']:.3f}, 95% t-interval [{s['t95'][0]:.3f}, {s['t95'][1]:.3f}], "
            f"min {s['min']:.3f}, max {s['max']:.3f})")


def markdown(r: dict) -> str:
    s = r["summary"]
    tb, tr = r["transferbench"], r["trainer"]
    rows = "\n".join(
        f"| {a['round']} | {'transferbench' if a['first'] else 'Trainer'} | {a['wall']:.1f} | {b['wall']:.1f} | "
        f"{b['wall'] / a['wall']:.3f} | {a['train_window']:.1f} | {b['train_window']:.1f} | "
        f"{b['train_window'] / a['train_window']:.3f} | {a['cpu']:.1f} | {b['cpu']:.1f} |" for a, b in zip(tb, tr))
    per_run = {}
    for name, side in (("transferbench", tb), ("Trainer", tr)):
        for x in side:
            for run in x["runs"]:
                per_run.setdefault((run["mode"], run["seed"]), {}).setdefault(name, []).append(run["accuracy"])
    acc_rows = "\n".join(f"| {m} | {seed} | {statistics.fmean(v['transferbench']):.3f} | "
                         f"{statistics.fmean(v['Trainer']):.3f} |" for (m, seed), v in sorted(per_run.items()))
    return f"""# transferbench vs a Trainer user's script, end to end (issue 26, item 4)

The same 4 runs (MiniLM finetune and LoRA, seeds 0 and 1, on builtin:topics) as `transferbench run SUITE` and as
the script a `transformers.Trainer` user writes, each a whole process timed from spawn to exit, alternating over
{r['rounds']} rounds ({r['warmup_rounds']} warm-up rounds before them; both sides' datasets caches warm). Ratios are Trainer / transferbench, paired per round
(> 1: transferbench takes less time). How each side is built and aligned: `benchmarks/perf/trainer_e2e.py`
(docstring).

- command: `{r['command']}` (through `/work/shared/tools/heavy`)
- date: {r['date']}; load average before {[round(x, 2) for x in r['load_average_before']]}, after
  {[round(x, 2) for x in r['load_average_after']]}
- hardware: {r['hardware']}; git commit {r['git_commit']}
- versions: {", ".join(f"{k} {v}" for k, v in r['versions'].items())}

| | transferbench (median) | Trainer script (median) | Trainer / transferbench, paired |
|---|---|---|---|
| whole-process wall, s | {s['wall']['transferbench_median']:.1f} | {s['wall']['trainer_median']:.1f} | {_iv(s['wall']['trainer_over_tb'])} |
| training window (4 runs), s | {s['train_window']['transferbench_median']:.1f} | {s['train_window']['trainer_median']:.1f} | {_iv(s['train_window']['trainer_over_tb'])} |
| process CPU, s | {s['cpu']['transferbench_median']:.1f} | {s['cpu']['trainer_median']:.1f} | {_iv(s['cpu']['trainer_over_tb'])} |
| mean test accuracy (4 runs x rounds) | {r['mean_accuracy']['transferbench']:.3f} | {r['mean_accuracy']['trainer']:.3f} | |

Where each side's whole-process seconds go (medians over rounds; transferbench's parts from its
suite_timing.jsonl and records, the Trainer script's from timestamps it writes):

{breakdown(tb, tr)}

Per round (seconds):

| round | first | tb wall | Trainer wall | ratio | tb window | Trainer window | ratio | tb CPU | Trainer CPU |
|---|---|---|---|---|---|---|---|---|---|
{rows}

Test accuracy per run (mean over rounds; the sides shuffle differently, so they agree within seed noise):

| mode | seed | transferbench | Trainer |
|---|---|---|---|
{acc_rows}

The suite:

```yaml
{r['suite']}
```
"""


if __name__ == "__main__":
    sys.exit(main())
