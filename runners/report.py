"""Leaderboard: results -> cells (task, dataset, model, budget, mode; mean over seeds) -> Markdown."""
from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Optional

from transferbench.modes import MODES
from transferbench.results import Store

CELL_KEY = ("task", "dataset", "model", "train_samples", "mode")


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return statistics.fmean(xs) if xs else None


def _std(xs) -> Optional[float]:
    xs = [x for x in xs if x is not None]
    return statistics.stdev(xs) if len(xs) > 1 else None


def cells(records: list[dict]) -> list[dict]:
    """Aggregate `ok` records over seeds. Δ vs scratch compares cell means at the same model and budget."""
    groups = defaultdict(list)
    for r in records:
        if r.get("status") == "ok":
            groups[tuple(r[k] for k in CELL_KEY)].append(r)
    out = []
    for key, rs in groups.items():
        metric = [r["metric"] for r in rs]
        reached = [r["time_to_target_s"] for r in rs if r.get("time_to_target_s") is not None]
        cell = dict(zip(CELL_KEY, key))
        cell.update(
            n=len(rs), seeds=sorted(r["seed"] for r in rs), metric_name=rs[0]["metric_name"],
            higher_is_better=rs[0]["higher_is_better"], metric_mean=_mean(metric), metric_std=_std(metric),
            target=rs[0].get("target"), target_reached=len(reached),
            time_to_target_s=_mean(reached) if len(reached) == len(rs) else None,
            train_seconds=_mean(r["train_seconds"] for r in rs),
            samples_per_second=_mean(r["samples_per_second"] for r in rs),
            trainable_share=_mean(r["params_trainable"] / r["params_total"] for r in rs),
            peak_memory_bytes=max(r["peak_memory_bytes"] or 0 for r in rs),
            device_hours=sum(r["device_hours"] for r in rs),
            cost_usd=sum(r["cost_usd"] for r in rs) if all(r.get("cost_usd") is not None for r in rs) else None,
            price_per_device_hour=rs[0].get("price_per_device_hour"), price_date=rs[0].get("price_date"),
            device_name=rs[0].get("device_name"),
        )
        out.append(cell)
    scratch = {tuple(c[k] for k in CELL_KEY[:-1]): c["metric_mean"] for c in out if c["mode"] == "scratch"}
    for c in out:
        base = scratch.get(tuple(c[k] for k in CELL_KEY[:-1]))
        c["delta_vs_scratch"] = None if base is None or c["metric_mean"] is None else c["metric_mean"] - base
    order = {m: i for i, m in enumerate(MODES)}
    out.sort(key=lambda c: (c["task"], c["dataset"], c["model"], c["train_samples"] or 0, order.get(c["mode"], 99)))
    return out


def _f(x, fmt="{:.3f}", none="—"):
    return none if x is None else fmt.format(x)


def markdown(records: list[dict], title: str = "Leaderboard") -> str:
    rows = cells(records)
    lines = [f"## {title}", ""]
    if not rows:
        lines.append("_No successful runs yet._")
    header = ("| task | dataset | model | train examples | mode | metric (mean ± std) | Δ vs scratch | "
              "time to target | train s | samples/s | trainable | peak mem | device-h | cost $ |")
    sep = "|" + "---|" * (header.count("|") - 1)
    if rows:
        lines += [header, sep]
    for c in rows:
        spread = "n=1" if c["n"] == 1 else f"± {c['metric_std']:.3f} (n={c['n']})"
        target = ("—" if c["target"] is None else
                  _f(c["time_to_target_s"], "{:.1f} s") if c["time_to_target_s"] is not None else
                  f"{c['target_reached']}/{c['n']} reached")
        lines.append(
            f"| {c['task']} | {c['dataset']} | {c['model']} | {c['train_samples']} | {c['mode']} | "
            f"{c['metric_name']} {c['metric_mean']:.4f} {spread} | {_f(c['delta_vs_scratch'], '{:+.4f}')} | "
            f"{target} | {_f(c['train_seconds'], '{:.1f}')} | {_f(c['samples_per_second'], '{:.1f}')} | "
            f"{100 * c['trainable_share']:.2f}% | {c['peak_memory_bytes'] / 2**20:.0f} MiB | "
            f"{c['device_hours']:.5f} | {_f(c['cost_usd'], '{:.5f}')} |")
    prices = sorted({(c["device_name"], c["price_per_device_hour"], c["price_date"]) for c in rows},
                    key=lambda p: str(p))
    if prices:
        lines.append("")
        for device, price, date in prices:
            lines.append(f"Cost at {_f(price, '${:.4f}', 'no price')} per device-hour for {device}"
                         f" (price table dated {date or 'n/a'}; device-hours = wall seconds × devices / 3600).")
    failed = [r for r in records if r.get("status") != "ok"]
    if failed:
        lines += ["", "Failed runs:", ""]
        for r in failed:
            lines.append(f"- {r['task']} {r['model']} {r['mode']} n={r.get('train_samples')} seed={r['seed']}: "
                         f"{r['status']}: {r.get('error')}")
    return "\n".join(lines) + "\n"


def report(results_dir: Path) -> str:
    """Markdown for a results folder; also written to RESULTS_DIR/leaderboard.md."""
    store = Store(results_dir)
    records = store.records()
    text = markdown(records, title=f"Leaderboard: {Path(results_dir).name}")
    if records:
        (Path(results_dir) / "leaderboard.md").write_text(text)
    return text
