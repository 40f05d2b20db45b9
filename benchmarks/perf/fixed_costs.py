"""What a run costs besides training: a suite of tiny runs (2 optimizer steps each) profiled end to end.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python benchmarks/perf/fixed_costs.py --label before|after

The suite: MiniLM on topics and EfficientNet-Lite0 on digits (32 px), 32 examples, the four modes, seeds 0 and 1,
2 optimizer steps at a given rate, the final evaluation on a fixed 100-example subset: 16 runs in which almost
everything is fixed cost (imports, data, model loading, Accelerator, evaluation, the store). It runs in this
process under cProfile, from `transferbench run` (runners.cli.main) to the last record. Writes the label's section of
results/perf/fixed_costs.json and regenerates results/perf/fixed_costs.md from every label there: wall time, the
per-run means of the record's setup / train / eval / wall seconds, and the functions with the most cumulative time.
"""
from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "results" / "perf"
TOP = 25

SUITE = """
name: fixed-costs
defaults: {seeds: [0, 1], batch_size: 16, max_steps: 2, eval_every: 100, eval_samples: 100}
benchmarks:
  - task: text-classification
    dataset: builtin:topics
    models: [all-minilm-l6-v2]
    task_args: {max_length: 32}
    train_samples: [32]
    modes: {scratch: {lr: 5.0e-4}, finetune: {lr: 1.0e-4}, lora: {lr: 1.0e-3}, linear-probe: {lr: 1.0e-2}}
  - task: image-classification
    dataset: builtin:digits
    models: [efficientnet-lite0]
    task_args: {image_size: 32}
    train_samples: [32]
    modes: {scratch: {lr: 1.0e-3}, finetune: {lr: 1.0e-3}, lora: {lr: 1.0e-3}, linear-probe: {lr: 1.0e-2}}
"""

# where the functions listed come from (the rest is the standard library and C extensions they call)
SOURCES = ("transferbench", "runners", "tasks", "transformers", "accelerate", "peft", "timm", "torch", "datasets")


def profile(results: Path) -> tuple[float, pstats.Stats]:
    from transferbench.runners.cli import main

    suite = results / "suite.yaml"
    suite.write_text(SUITE)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    rc = main(["-q", "run", str(suite), "--results-dir", str(results / "store")])
    prof.disable()
    wall = time.perf_counter() - t0
    if rc:
        sys.exit(f"the suite failed (exit {rc})")
    return wall, pstats.Stats(prof)


def top_functions(stats: pstats.Stats) -> list[dict]:
    rows = []
    for (path, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():
        where = next((s for s in SOURCES if f"/{s}/" in path or path.startswith(s)), None)
        if where is None:
            continue
        short = path.split(f"/{where}/", 1)[-1]
        rows.append({"function": f"{where}/{short}:{line}({name})", "calls": calls, "cumulative_s": round(cumtime, 3),
                     "own_s": round(tottime, 3)})
    return sorted(rows, key=lambda r: -r["cumulative_s"])[:TOP]


def per_run(store: Path) -> dict:
    records = [json.loads(line) for line in (store / "runs.jsonl").read_text().splitlines() if line.strip()]
    mean = lambda key: round(sum(r.get(key) or 0.0 for r in records) / len(records), 3)  # noqa: E731
    return {"runs": len(records), "ok": sum(r["status"] == "ok" for r in records),
            **{k: mean(k) for k in ("setup_seconds", "train_seconds", "eval_seconds", "wall_seconds")}}


def write_markdown(data: dict) -> None:
    lines = ["# Fixed per-run cost: a suite of 16 tiny runs under cProfile", "",
             "How: `benchmarks/perf/fixed_costs.py` (docstring). Each label is one invocation of",
             "`HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python benchmarks/perf/fixed_costs.py --label LABEL` at the commit",
             "shown; times are wall seconds of this 2-core machine under cProfile (which inflates Python-heavy code).",
             ""]
    for label, d in data.items():
        r = d["per_run"]
        lines += [f"## {label}", "",
                  f"- {d['date']}, git {d['commit']}, {d['hardware']}, load average before/after {d['load_before']} / "
                  f"{d['load_after']}",
                  f"- suite wall {d['wall_seconds']:.1f} s for {r['runs']} runs ({r['ok']} ok); per run (record means): "
                  f"setup {r['setup_seconds']} s, train {r['train_seconds']} s, eval {r['eval_seconds']} s, "
                  f"wall {r['wall_seconds']} s", "",
                  "| function | calls | cumulative s | own s |", "|---|---|---|---|"]
        lines += [f"| `{f['function']}` | {f['calls']} | {f['cumulative_s']} | {f['own_s']} |" for f in d["top"]]
        lines.append("")
    (OUT / "fixed_costs.md").write_text("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--label", required=True)
    args = ap.parse_args()
    from transferbench import provenance

    load_before = [round(x, 2) for x in os.getloadavg()]
    with tempfile.TemporaryDirectory() as tmp:
        wall, stats = profile(Path(tmp))
        runs = per_run(Path(tmp) / "store")
    path = OUT / "fixed_costs.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[args.label] = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                        "commit": (provenance.git_commit() or "?")[:10], "hardware": provenance.cpu_name(),
                        "load_before": load_before, "load_after": [round(x, 2) for x in os.getloadavg()],
                        "wall_seconds": round(wall, 2), "per_run": runs, "top": top_functions(stats)}
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n")
    write_markdown(data)
    print(f"wall {wall:.1f}s; per run {runs}")


if __name__ == "__main__":
    main()
