"""Run-level parallelism: wall time of the same suite under the local executor (one run after another, torch using
every core) and under `--jobs N` (a local Ray instance, N runs at a time, one CPU each), on this machine.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python benchmarks/perf/ray_jobs.py [--repeats 2] [--jobs 2]

The suite is the default suite's two learning-curve benchmarks (MiniLM on topics, EfficientNet-Lite0 on digits:
4 modes x 4 budgets) with SEEDS seeds: many small runs, the case run-level parallelism is for. Each timed
invocation is a fresh `transferbench run` process into an empty results folder (so process start-up, the
suite's preflight and warm-up and, for Ray, the instance's start are all counted); the dataset caches are
built once beforehand by a `--dry-run`. The two sides alternate, each repeat in the other order. It also checks
that both sides recorded the same metric per run_id (to 4 decimals). Writes results/perf/ray_jobs.{json,md}.
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

import yaml

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "results" / "perf"
SEEDS = [0, 1]


def suite_file(folder: Path) -> Path:
    """The default suite's learning-curve benchmarks, without its stages."""
    suite = yaml.safe_load((ROOT / "benchmarks" / "quickstart.yaml").read_text())
    benches = [b for b in suite["benchmarks"] if not any(str(m).startswith("pretrain:") for m in b["models"])]
    path = folder / "ray-jobs.yaml"
    path.write_text(yaml.safe_dump({"name": "ray-jobs", "defaults": {**suite["defaults"], "seeds": SEEDS},
                                    "benchmarks": benches}))
    return path


def invoke(suite: Path, results: Path, extra: list[str]) -> float:
    cmd = [sys.executable, "-m", "transferbench", "run", str(suite), "--results-dir", str(results), *extra]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall


described: dict[str, dict] = {}  # run_id -> model, mode, budget, seed (for the differing runs' list)


def metrics(results: Path) -> dict[str, float]:
    rows = [json.loads(line) for line in (results / "runs.jsonl").read_text().splitlines()]
    described.update({r["run_id"]: {k: r[k] for k in ("model", "mode", "train_samples", "seed")} for r in rows})
    return {r["run_id"]: round(r["metric"], 4) for r in rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    sides = {"local": [], f"--jobs {args.jobs}": ["--jobs", str(args.jobs)]}
    walls: dict[str, list[float]] = {name: [] for name in sides}
    same, details = True, []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        suite = suite_file(tmp)
        subprocess.run([sys.executable, "-m", "transferbench", "run", str(suite), "--dry-run", "--results-dir",
                        str(tmp / "dry")], check=True, capture_output=True)
        runs = None
        for rep in range(args.repeats):
            order = list(sides) if rep % 2 == 0 else list(sides)[::-1]
            seen = {}
            for name in order:
                results = tmp / f"{name.replace(' ', '').replace('-', '')}-{rep}"
                walls[name].append(invoke(suite, results, sides[name]))
                seen[name] = metrics(results)
                runs = len(seen[name])
                print(f"repeat {rep} {name}: {walls[name][-1]:.1f} s for {runs} runs", flush=True)
            a, b = seen.values()
            same &= a == b
            differ = sorted(k for k in a if a[k] != b.get(k))
            details.append({"repeat": rep, "runs_compared": len(a), "differing": len(differ),
                            "differing_runs": [{"run_id": k, **described[k], "local": a[k], "jobs": b[k]}
                                               for k in differ]})
    med = {name: statistics.median(w) for name, w in walls.items()}
    local, ray = med["local"], med[f"--jobs {args.jobs}"]
    row = dict(date=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
               command=f"HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 python benchmarks/perf/ray_jobs.py "
                       f"--repeats {args.repeats} --jobs {args.jobs}",
               hardware=f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, no GPU",
               load_average_after=os.getloadavg(), runs=runs, seeds=SEEDS, walls=walls, medians=med,
               speedup=round(local / ray, 3), runs_per_hour={k: round(runs * 3600 / v, 1) for k, v in med.items()},
               same_metrics_per_run_id=same, comparison=details)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ray_jobs.json").write_text(json.dumps(row, indent=1) + "\n")
    lines = [
        "# Run-level parallelism on this machine: local executor vs `--jobs N` (Ray)", "",
        f"Command: `{row['command']}` ({row['date']}); {row['hardware']}; load average after: "
        f"{', '.join(f'{x:.2f}' for x in row['load_average_after'])}. How it is measured: the script's docstring.",
        "", "| executor | runs | walls (s) | median wall (s) | runs per hour |", "|---|---|---|---|---|",
        *[f"| {k} | {runs} | {', '.join(f'{w:.1f}' for w in walls[k])} | {med[k]:.1f} | "
          f"{row['runs_per_hour'][k]} |" for k in sides],
        "", f"Speed-up of `--jobs {args.jobs}` over local: **{row['speedup']}x**; same metric per run_id on both "
        f"sides (4 decimals): {same}" + ("." if same else
        f" ({', '.join(str(d['differing']) for d in details)} of {runs} runs differ per repeat: "
        + ", ".join(sorted({f"{r['model']} {r['mode']}" for d in details for r in d['differing_runs']}))
        + "; the local runs use all cores' threads, each Ray run --cpus-per-run threads, and CPU convolutions sum "
          "in a thread-count-dependent order: see docs/scale.md)."),
        "", "GPU (vision suite, `--jobs 1` vs `--jobs N` vs `accelerate launch --num_processes N`): not measured: "
        "no GPU was lent to this task.",
    ]
    (OUT / "ray_jobs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
