"""What `lr: auto` costs and what it chooses: the same suite searched and at fixed rates, side by side.

    HF_HUB_OFFLINE=1 python benchmarks/perf/lr_search_cost.py SUITE.yaml --published results/published/NAME \
        --rounds 2 [--fixed-set defaults.lr=default] [--name NAME]

Each round runs the suite twice as whole processes, `transferbench run SUITE` (every mode's rate searched) and the
same suite with `--set FIXED` (every mode at a given rate: the training a user would do without a search), in
alternating order (a drift of the machine hits both alike), into fresh results folders; wall and CPU seconds of each
process, and the device-hours its records bill. Then, per cell (benchmark, mode, budget), the rate the searched suite
chose against the rates the published store's search chose, whether the cell's metric moved by more than the noise
of the verdicts (the Welch 95% interval of the difference contains 0, or the difference is within the leaderboard's
equivalence margin), and, per budget and pair of modes, whether a significant difference flipped. Writes
results/perf/lr_search_cost_NAME.{md,json}.
"""
from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from proc_timing import t_interval, timed  # noqa: E402 - beside this script

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "results" / "perf"


def timed_run(suite: Path, folder: Path, extra: list[str]) -> dict:
    """One whole `transferbench run` process: wall, its CPU seconds (user + system of it and its children)."""
    load = os.getloadavg()[0]
    wall, cpu, proc = timed([sys.executable, "-m", "transferbench", "-q", "run", str(suite), "--results-dir",
                             str(folder), *extra], capture_output=True, text=True)
    if proc.returncode:
        sys.exit(f"{suite} {' '.join(extra)} failed:\n{proc.stderr[-2000:]}")
    records = [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines() if line.strip()]
    return {"wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "device_hours": round(sum(r["device_hours"] or 0 for r in records), 6),
            "search_s": round(sum(r["lr_search"]["seconds"] for r in records
                                  if r.get("lr_search") and not r["lr_search"].get("reused")), 2),
            "runs": len(records), "ok": sum(r["status"] == "ok" for r in records), "load_before": round(load, 2),
            "load_after": round(os.getloadavg()[0], 2), "folder": str(folder)}


def cells_of(folder: Path) -> dict:
    from transferbench.runners.report.leaderboard import build
    from transferbench.results import Store

    board = build(Store(folder).runs())
    return board, {(c["model"], c["mode"], c["train_samples"]): c for c in board.cells}


def chosen_rates(folder: Path) -> dict:
    rates = {}
    for line in (folder / "runs.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("status") == "ok" and r.get("lr_search"):
            rates.setdefault((r["model"], r["mode"], r["train_samples"]), []).append(r["lr"])
    return rates


def compare(new: Path, published: Path) -> dict:
    from transferbench.runners.report import stats

    board_new, new_cells = cells_of(new)
    board_old, old_cells = cells_of(published)
    new_rates, old_rates = chosen_rates(new), chosen_rates(published)
    rows = []
    for key in sorted(set(new_cells) & set(old_cells), key=str):
        a, b = new_cells[key], old_cells[key]
        ci = stats.welch_interval(a, b)
        tol = stats.margin([a, b])
        diff = a["metric_mean"] - b["metric_mean"]
        same_rate = sorted(set(new_rates.get(key, []))) == sorted(set(old_rates.get(key, [])))
        in_noise = abs(diff) <= tol or (ci is not None and ci[0] <= 0 <= ci[1])
        rows.append({"model": key[0], "mode": key[1], "budget": key[2], "published_rates": old_rates.get(key),
                     "new_rates": new_rates.get(key), "same_rate": same_rate, "published_metric": round(b["metric_mean"], 4),
                     "new_metric": round(a["metric_mean"], 4), "diff": round(diff, 4),
                     "diff_ci": ci and [round(ci[0], 4), round(ci[1], 4)], "within_noise": in_noise,
                     "agrees": same_rate or in_noise})
    flips, changes = [], []
    for (m, n) in {(k[0], k[2]) for k in new_cells}:
        modes = sorted({k[1] for k in new_cells if k[0] == m and k[2] == n} & {k[1] for k in old_cells if k[0] == m and k[2] == n})
        for x, y in itertools.combinations(modes, 2):
            def verdict(cells):
                ci = stats.welch_interval(cells[(m, x, n)], cells[(m, y, n)])
                return 0 if ci is None or ci[0] <= 0 <= ci[1] else (1 if ci[0] > 0 else -1)
            v_new, v_old = verdict(new_cells), verdict(old_cells)
            if v_new != v_old:
                entry = {"model": m, "budget": n, "pair": f"{x} vs {y}", "published": v_old, "new": v_new}
                (flips if v_new * v_old == -1 else changes).append(entry)
    wins = lambda board: sorted((v["model"], v["train_samples"], v["best_mode"]) for v in board.budget_verdicts  # noqa: E731
                                if v["state"] == "wins")
    return {"cells": rows, "flips": flips, "significance_changes": changes,
            "wins_published": wins(board_old), "wins_new": wins(board_new)}


def markdown(name: str, data: dict) -> str:
    from transferbench import provenance

    rounds = data["rounds"]
    lines = [f"# `lr: auto` cost and choices: {name}", "",
             f"- suite `{data['suite']}`; fixed rates: `--set {data['fixed_set']}`; published store compared: "
             f"`{data['published']}`",
             f"- {data['date']}, git {data['commit']}, {provenance.cpu_name()} (2 cores), command: `{data['command']}`",
             "- each round: both sides as whole processes in alternating order, fresh results folders; load average "
             "(1 min) before each side is in the table (about 1 is this benchmark alone; other agents' work shared the "
             "machine when it is higher)", "",
             "| round | side | wall s | CPU s | device-h billed | search s | load before |", "|---|---|---|---|---|---|---|"]
    for r in rounds:
        for side in ("searched", "fixed"):
            s = r[side]
            lines.append(f"| {r['round']} | {side} | {s['wall_s']} | {s['cpu_s']} | {s['device_hours']} | {s['search_s']} "
                         f"| {s['load_before']} |")
    for what in ("wall_s", "cpu_s", "device_hours"):
        ratios = [r["searched"][what] / r["fixed"][what] for r in rounds]
        lo, hi = t_interval(ratios)
        lines.append(f"\nSearched / fixed, {what.replace('_s', ' seconds').replace('_', ' ')}: paired ratios "
                     f"{', '.join(f'{x:.3f}' for x in ratios)}; mean {statistics.mean(ratios):.3f} [95% {lo:.3f}, {hi:.3f}]")
    c = data["comparison"]
    agree = sum(r["agrees"] for r in c["cells"])
    lines += ["", f"## Choices against the published store ({agree} of {len(c['cells'])} cells agree)", "",
              "| model | mode | budget | published rates (per seed) | new rate (per cell) | same rate | published "
              "metric | new metric | Δ [95%] | within noise |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in c["cells"]:
        ci = f" [{r['diff_ci'][0]:+.4f}, {r['diff_ci'][1]:+.4f}]" if r["diff_ci"] else ""
        lines.append(f"| {r['model']} | {r['mode']} | {r['budget']} | {r['published_rates']} | "
                     f"{sorted(set(r['new_rates'] or []))} | {'yes' if r['same_rate'] else 'no'} | {r['published_metric']} | "
                     f"{r['new_metric']} | {r['diff']:+.4f}{ci} | {'yes' if r['within_noise'] else 'no'} |")
    lines += ["", f"Significant verdicts flipped (a pair of modes significantly ordered one way in the published store "
              f"and the other way now): {len(c['flips'])}" + "".join(f"\n- {f}" for f in c["flips"]),
              f"Pairs whose significance changed (significant in one, not in the other): {len(c['significance_changes'])}"
              + "".join(f"\n- {f}" for f in c["significance_changes"]),
              f"'wins' verdicts: published {c['wins_published']}; now {c['wins_new']}", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("suite", type=Path)
    ap.add_argument("--published", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--fixed-set", default="defaults.lr=default")
    ap.add_argument("--name", default=None)
    ap.add_argument("--work", type=Path, default=Path("/tmp/transferbench-lr-cost"))
    ap.add_argument("--compare-only", action="store_true", help="recompute the comparison of the saved rounds")
    args = ap.parse_args()
    from transferbench import provenance

    name = args.name or args.suite.stem
    saved = OUT / f"lr_search_cost_{name}.json"
    rounds = json.loads(saved.read_text())["rounds"] if args.compare_only else []
    for i in range(0 if args.compare_only else args.rounds):
        sides = ["searched", "fixed"] if i % 2 == 0 else ["fixed", "searched"]
        row = {"round": i + 1}
        for side in sides:
            folder = args.work / f"{name}-{side}-{i + 1}"
            subprocess.run(["rm", "-rf", str(folder)], check=True)
            row[side] = timed_run(args.suite, folder, [] if side == "searched" else ["--set", args.fixed_set])
            print(f"round {i + 1} {side}: {row[side]}", flush=True)
        rounds.append(row)
        OUT.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps({"rounds": rounds}, indent=1) + "\n")  # kept if the comparison fails
    data = {"suite": str(args.suite), "fixed_set": args.fixed_set, "published": str(args.published),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "commit": (provenance.git_commit() or "?")[:10], "command": " ".join(["python", *sys.argv]),
            "rounds": rounds, "comparison": compare(Path(rounds[0]["searched"]["folder"]), args.published)}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"lr_search_cost_{name}.json").write_text(json.dumps(data, indent=1) + "\n")
    text = markdown(name, data)
    (OUT / f"lr_search_cost_{name}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
