"""Several stores (shards, machines) -> one list of runs: each run_id once, one resolved config per cell."""
from __future__ import annotations

from pathlib import Path

from transferbench.errors import UserError
from transferbench.results import Store, dedupe

from .cells import run_key

# Config fields that may differ between the runs of one cell: the seed (what a cell averages over), the suite's
# name (the same run may sit in two suites), the price (it changes the cost, not the run; the report prints
# each price), the stage's suite-local name and the suite file it was read from (suite_source: provenance).
# Everything else (hyper-parameters, dataset spec, target, task_args, the pretrain stage's own spec) must match,
# or the cell would average two different experiments.
MAY_DIFFER = frozenset({"seed", "suite", "price_per_device_hour", "stage_name", "suite_source"})


def store_folder(arg: str | Path) -> Path:
    """A results folder, given as itself or as its runs.jsonl."""
    path = Path(arg)
    return path.parent if path.name == "runs.jsonl" else path


def store(arg: str | Path) -> Store:
    """A results folder, or its runs.jsonl."""
    folder = store_folder(arg)
    if not (folder / "runs.jsonl").is_file():
        raise UserError(f"no results store at {folder / 'runs.jsonl'}: give a folder that `transferbench run` wrote")
    return Store(folder)


def load(paths) -> list[dict]:
    """Runs of all stores, in order. A run_id seen twice (concatenated shards, a run retried after failing)
    counts once: its first `ok` record wins, else its last failure (results.dedupe, the same rule `run` resumes
    by). Store.records skips (with a warning naming the line) lines without a string run_id or with fields of the
    wrong type or value, so every record here is usable."""
    records = []
    for arg in paths:
        source = store(arg)
        for record in source.records():
            record["_store"] = str(source.dir)  # for messages only; exports drop "_" keys
            records.append(record)
    return dedupe(records)


def _comparable(config: dict) -> dict:
    out = {k: v for k, v in config.items() if k not in MAY_DIFFER}
    if isinstance(out.get("stage"), dict):  # the stage's own seed matters: it is a different checkpoint
        out["stage"] = {k: v for k, v in out["stage"].items() if k not in MAY_DIFFER - {"seed"}}
    return out


def _differences(a, b, prefix="") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in _differences(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))]
    return [] if a == b else [f"{prefix} ({a!r} vs {b!r})"]


def check_configs(records: list[dict]) -> None:
    """Refuse to average runs whose resolved configs differ in anything but MAY_DIFFER."""
    first: dict[tuple, dict] = {}
    for r in records:
        if r.get("status") != "ok" or not r.get("config"):
            continue
        key = run_key(r)
        seen = first.setdefault(key, r)
        diff = _differences(_comparable(seen["config"]), _comparable(r["config"]))
        if diff:
            where = [f"{x.get('run_id')} ({x.get('_store', 'store')})" for x in (seen, r)]
            raise UserError(
                f"runs {where[0]} and {where[1]} fall into one cell ({', '.join(map(str, key))}) but their "
                f"configs differ in {'; '.join(diff[:3])}; only {', '.join(sorted(MAY_DIFFER))} may differ: "
                "report them separately or remove the stale runs")
