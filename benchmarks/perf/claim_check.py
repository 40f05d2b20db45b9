"""The claim check's cost on a large store: before each run the driver asks the store whether that run was recorded
(meanwhile, by another invocation). Before issue 25 it re-read and re-parsed the whole store for every run (quadratic
in the store's size over a suite); now runners/orchestrate/suite.Recorded reads the store once and then only the
lines appended since (results.StoreTail).

    python benchmarks/perf/claim_check.py [--lines 10000] [--checks 200]

A store of LINES real records (the published default suite's records, repeated with fresh run_ids: ~5 KB each) is
written to a temporary folder. Each side then answers CHECKS claim checks while another writer appends one record
between checks (as a concurrent invocation would):
- before: `Store.records()` for every check (the whole store read, parsed and validated each time), as suite.py did;
- after: one `Recorded` (one full read) and `Recorded.done()` per check (only the appended line is read).
Reported: seconds and bytes parsed per check, and the extrapolation to one check per line of the store (a suite
whose store reaches LINES runs). Writes results/perf/claim_check.{json,md}.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "results" / "perf"
SOURCE = ROOT / "results" / "published" / "quickstart" / "runs.jsonl"


def write_store(folder: Path, lines: int) -> list[str]:
    """`lines` real records with fresh run_ids; returns the extra lines the concurrent writer will append."""
    base = [json.loads(line) for line in SOURCE.read_text().splitlines() if line.strip()]
    rows = [json.dumps({**base[i % len(base)], "run_id": f"r{i:06d}"}) for i in range(lines + 10_000)]
    (folder / "runs.jsonl").write_text("".join(r + "\n" for r in rows[:lines]))
    return rows[lines:]


def before(store, extra: list[str], checks: int) -> tuple[float, int]:
    """The old check: the whole store read per run. (seconds, bytes parsed)."""
    parsed, t0 = 0, time.perf_counter()
    for i in range(checks):
        _append(store.path, extra[i])
        parsed += store.path.stat().st_size
        store.records()
    return time.perf_counter() - t0, parsed


def after(store, extra: list[str], checks: int) -> tuple[float, float, int]:
    """The new check: one full read, then only what was appended. (first read s, checks s, bytes parsed by checks)."""
    from transferbench.runners.orchestrate.suite import Recorded

    t0 = time.perf_counter()
    recorded = Recorded(store)
    first = time.perf_counter() - t0
    start, t1 = recorded.tail.offset, time.perf_counter()
    for i in range(checks):
        _append(store.path, extra[i])
        recorded.done(f"r{i:06d}")
    return first, time.perf_counter() - t1, recorded.tail.offset - start


def _append(path: Path, line: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--lines", type=int, default=10_000)
    p.add_argument("--checks", type=int, default=200)
    args = p.parse_args()
    from transferbench.results import Store

    with tempfile.TemporaryDirectory() as tmp:
        extra = write_store(Path(tmp), args.lines)
        size = (Path(tmp) / "runs.jsonl").stat().st_size
        old_s, old_bytes = before(Store(tmp), extra, args.checks)
    with tempfile.TemporaryDirectory() as tmp:
        extra = write_store(Path(tmp), args.lines)
        first_s, new_s, new_bytes = after(Store(tmp), extra, args.checks)
    per_old, per_new = old_s / args.checks, new_s / args.checks
    row = {
        "date": dt.date.today().isoformat(), "host": platform.node(), "cpu": platform.processor() or platform.machine(),
        "load_average_before": os.getloadavg()[0], "store_lines": args.lines, "store_bytes": size,
        "checks": args.checks,
        "before": {"seconds_per_check": per_old, "bytes_per_check": old_bytes // args.checks,
                   "suite_seconds_at_one_check_per_line": per_old * args.lines},
        "after": {"first_read_seconds": first_s, "seconds_per_check": per_new,
                  "bytes_per_check": new_bytes // args.checks,
                  "suite_seconds_at_one_check_per_line": first_s + per_new * args.lines},
        "speedup_per_check": per_old / per_new if per_new else None,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "claim_check.json").write_text(json.dumps(row, indent=2) + "\n")
    md = f"""# Claim check at {args.lines:,} store lines ({row['date']}, {row['cpu']}, load {row['load_average_before']:.2f})

`python benchmarks/perf/claim_check.py --lines {args.lines} --checks {args.checks}`; store {size / 2**20:.1f} MiB.

| | per check | parsed per check | a suite checking once per line |
|---|---|---|---|
| before (whole store re-read per run) | {per_old * 1e3:.1f} ms | {old_bytes / args.checks / 2**20:.1f} MiB | \
{per_old * args.lines:.0f} s |
| after (read once, follow appends) | {per_new * 1e3:.3f} ms (first read {first_s:.2f} s) | \
{new_bytes / args.checks / 1024:.1f} KiB | {first_s + per_new * args.lines:.1f} s |
"""
    (OUT / "claim_check.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
