"""What a leaderboard cell is: its key (the runs of one cell differ only by seed), how a run's budget is read, the
values a cell aggregates from its runs, and the read-only mapping a built cell is. Every report module keys cells and
reads budgets through here, so merging, cells, schedules, curves and plots agree on which runs share a cell."""
from __future__ import annotations

import statistics
from typing import Optional

CELL_KEY = ("task", "dataset", "model", "train_samples", "mode")
BUDGET_KEY = CELL_KEY[:4]  # the modes compared at one budget of a benchmark
BENCHMARK_KEY = CELL_KEY[:3]  # one benchmark: its curves over budgets and modes


def budget_of(r: dict) -> Optional[int]:
    """A run's training-set size: the record's train_samples (as resolved when it trained); a run that failed
    before resolving it falls back to its config's train_samples. None where neither says (a config that gave
    train_fraction, or the whole split, of a run that never resolved it): such runs share one cell per mode."""
    if r.get("train_samples") is not None:
        return r["train_samples"]
    return (r.get("config") or {}).get("train_samples")


def budget_text(r: dict) -> str:
    """A run's budget in words: '256 examples'; for a run that never resolved its size, what its config asked for
    (a train_fraction, or the whole training split, as RunSpec.budget reads it)."""
    n = budget_of(r)
    config = r.get("config")
    if n is not None or not config:
        return f"{'?' if n is None else n} examples"
    fraction = config.get("train_fraction")
    return f"{fraction:g} of the training split" if fraction else "the whole training split"


def run_key(r: dict, fields: tuple = CELL_KEY) -> tuple:
    """The key of the cell (or, with BUDGET_KEY / BENCHMARK_KEY, the budget or benchmark) a run belongs to."""
    return tuple(budget_of(r) if k == "train_samples" else r.get(k) for k in fields)


def cell_key(c: dict, fields: tuple = CELL_KEY) -> tuple:
    """A cell's key (or its budget's, its benchmark's): run_key of each of its runs."""
    return tuple(c[k] for k in fields)


def _mean(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _std(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.stdev(xs) if len(xs) > 1 else None


def carries_energy(records: list[dict]) -> bool:
    """Runs from schema 6 on carry energy fields (measured or not); older stores carry none."""
    return any("energy_source" in r for r in records)


def carries_adapters(records: list[dict]) -> bool:
    """Some run records the bytes its adapter adds to the base model (peft_modes.adapter_bytes)."""
    return any(r.get("adapter_bytes") is not None for r in records)


def energy_fields(ok: list[dict]) -> dict:
    """Mean kWh and CO2e per run over a cell's ok runs; None unless every one of them was measured."""
    measured = bool(ok) and all(r.get("energy_kwh") is not None for r in ok)
    return {k: sum(r[k] for r in ok) / len(ok) if measured else None for k in ("energy_kwh", "co2_kg")}


def adapter_fields(ok: list[dict]) -> dict:
    """The adapter's bytes (the same for every seed: it depends on shapes only)."""
    sizes = [r["adapter_bytes"] for r in ok if r.get("adapter_bytes") is not None]
    return dict(adapter_bytes=max(sizes) if sizes else None)


def aggregate(key: tuple, rs: list[dict]) -> dict:
    """One cell's own values from its runs (`key`: their run_key): status, means and std over the evaluated seeds,
    per-run time, memory and cost, totals paid. What compares cells (Δ, best, verdicts) is leaderboard.build's."""
    ok = [r for r in rs if r.get("status") == "ok"]
    scored = [r for r in ok if r.get("metric") is not None]
    bad = [r for r in rs if r.get("status") != "ok"]
    head = (ok or rs)[0]
    reached = [r["time_to_target_s"] for r in scored if r.get("time_to_target_s") is not None]
    priced = ok and all(r.get("cost_usd") is not None for r in ok)
    cell = dict(zip(CELL_KEY, key))
    cell.update(
        status="ok" if scored else "no eval" if ok else head.get("status", "failed"),
        n=len(scored), runs=len(rs), failed=len(bad), no_eval=len(ok) - len(scored),
        errors=[f"seed {r.get('seed')}: {r.get('status')}: {r.get('error')}" for r in bad],
        seeds=sorted(r.get("seed") for r in scored),
        metric_name=head.get("metric_name"), higher_is_better=head.get("higher_is_better", True),
        metric_mean=_mean(r["metric"] for r in scored), metric_std=_std(r["metric"] for r in scored),
        # per evaluated seed, in seed order: the Welch tests (stats.py) run on the values, as scipy takes them
        metric_values=[r["metric"] for r in sorted(scored, key=lambda r: (r.get("seed") is None, r.get("seed") or 0))],
        target=head.get("target"), target_reached=len(reached), time_to_target_s=_mean(reached),
        train_seconds=_mean(r.get("train_seconds") for r in ok),
        samples_per_second=_mean(r.get("samples_per_second") for r in ok),
        # older stores have no `converged`: unknown counts as neither
        converged_runs=sum(r.get("converged") is True for r in scored),
        still_improving=sum(r.get("converged") is False for r in scored),
        # converged None with a "too short to tell" reason (convergence.judge): unsettled too, unlike an old store's
        too_short=sum(r.get("converged") is None and "too short" in str(r.get("convergence") or "") for r in scored),
        # examples the final evaluation scored (the fewest over seeds): one of them is the margin's smallest step
        eval_samples=min((r["eval_samples"] for r in scored if r.get("eval_samples")), default=None),
        mfu=_mean(r.get("mfu") for r in ok),
        trainable_share=_mean(r["params_trainable"] / r["params_total"] for r in ok
                              if r.get("params_trainable") is not None and r.get("params_total")),
        peak_memory_bytes=max((r["peak_memory_bytes"] for r in ok if r.get("peak_memory_bytes")), default=None),
        # per run: what one more run of this cell costs; the totals include failed runs, which were paid too
        device_hours=_mean(r.get("device_hours") for r in ok),
        cost_usd=_mean(r["cost_usd"] for r in ok) if priced else None,
        device_hours_total=sum(r.get("device_hours") or 0.0 for r in rs),
        cost_usd_total=sum(r.get("cost_usd") or 0.0 for r in rs),
        price_per_device_hour=head.get("price_per_device_hour"), price_date=head.get("price_date"),
        device_name=" + ".join(sorted({str(r.get("device_name")) for r in ok or rs})),
    )
    return cell


def _frozen(value):
    return tuple(_frozen(v) for v in value) if isinstance(value, list) else value


class Cell(dict):
    """A built cell: a dict (JSON, CSV and pandas read it as one) that refuses changes, so a writer can only format
    what leaderboard.build computed and no output depends on which writer ran first. Lists are stored as tuples."""

    def __init__(self, fields: dict):
        super().__init__((k, _frozen(v)) for k, v in fields.items())

    def _refuse(self, *args, **kwargs):
        raise TypeError("a leaderboard cell is read-only: compute its values in leaderboard.build, or format a copy "
                        "(dict(cell))")

    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _refuse

    def __reduce__(self):  # copy and pickle rebuild it from its items instead of setting them one by one
        return Cell, (dict(self),)
