"""How long `transferbench report` and `transferbench plan` take on a published store, as a user runs them.

    HF_HUB_OFFLINE=1 python benchmarks/perf/report_time.py [--store results/published/quickstart] [--repeats 5]

Each command is a whole process (interpreter start, imports, reading the store, fitting, writing every file),
timed from spawn to exit, the two commands alternating; medians, with the process's CPU seconds (user + system of
it and its children: report draws its figures in worker processes) and the load average before each call. Writes
results/perf/report_time.{md,json}.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
from proc_timing import timed  # noqa: E402 - beside this script

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "results" / "perf"


def call(args: list[str]) -> dict:
    load = os.getloadavg()[0]
    wall, cpu, _ = timed([sys.executable, "-m", "transferbench", *args], check=True, capture_output=True)
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "load_before": round(load, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", type=Path, default=ROOT / "results" / "published" / "quickstart")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from transferbench import provenance

    rows = {"report": [], "plan": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for name in (("report", "plan") if i % 2 == 0 else ("plan", "report")):
                cmd = ["report", str(args.store), "--out", str(Path(tmp) / f"r{i}")] if name == "report" else \
                    ["plan", str(args.store)]
                rows[name].append(call(cmd))
    summary = {k: {"median_wall_s": round(statistics.median(r["wall_s"] for r in v), 3),
                   "median_cpu_s": round(statistics.median(r["cpu_s"] for r in v), 3), "calls": v}
               for k, v in rows.items()}
    data = {"store": str(args.store.relative_to(ROOT) if args.store.is_relative_to(ROOT) else args.store),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": (provenance.git_commit() or "?")[:10], "hardware": f"{provenance.cpu_name()}, {os.cpu_count()} CPUs",
            "command": " ".join(["python", *sys.argv]), **summary}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "report_time.json").write_text(json.dumps(data, indent=1) + "\n")
    lines = [f"# `report` and `plan` of `{data['store']}`, whole processes", "",
             f"- {data['date']}, git {data['commit']}, {data['hardware']}; command `{data['command']}`",
             "- each call spawned, timed to its exit; the two commands alternate; load average (1 min) before each call "
             "(about 0 to 1: this machine otherwise idle)", "",
             "| command | median wall s | median CPU s | each call: wall s (load before) |", "|---|---|---|---|"]
    for k, v in summary.items():
        calls = ", ".join(f"{c['wall_s']} ({c['load_before']})" for c in v["calls"])
        lines.append(f"| {k} | {v['median_wall_s']} | {v['median_cpu_s']} | {calls} |")
    (OUT / "report_time.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
