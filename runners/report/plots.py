"""PNG plots of a leaderboard, one set per task and dataset, each readable without the table: learning curves
(log-x, with the planner's fitted curves and predicted crossover where the fits are usable), the gap vs scratch by
budget, metric vs cost with the Pareto front, time-to-target bars, training curves of one budget."""
from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state, no display needed
from matplotlib.figure import Figure

from . import fmt
from .headline import MAX_FACTOR
from .cells import BENCHMARK_KEY, BUDGET_KEY, budget_of, cell_key, run_key
from .curves import MIN_BUDGETS, limit
from .leaderboard import MODE_ORDER, Leaderboard

COLORS = dict(zip(MODE_ORDER, ["#7f7f7f", "#1f77b4", "#2ca02c", "#ff7f0e"]))
MARKERS = dict(zip(MODE_ORDER, "osD^"))


def _color(mode: str) -> str:
    return COLORS.get(mode, "#9467bd")


def _slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", "-".join(map(str, parts))).strip("-").lower()


def _figure(width=7.5, height=4.8) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def pareto_front(points: list[tuple[float, float, object]], higher_is_better: bool) -> list:
    """The points no other point beats on both cost (lower) and metric: cheapest first."""
    sign = 1 if higher_is_better else -1
    front, best = [], None
    for cost, value, item in sorted(points, key=lambda p: (p[0], -sign * p[1])):
        if best is None or sign * value > best:
            front.append((cost, value, item))
            best = sign * value
    return front


def _fitted(board: Leaderboard, ax, key: tuple, color: str) -> bool:
    """The planner's curve for `key` (dashed, to its extrapolation limit) and its 95% band, when the fit is usable."""
    fit = board.fits.get(key)
    if fit is None or fit.status != "ok":
        return False
    xs = np.geomspace(min(fit.points), limit(fit, MAX_FACTOR), 60)
    mean, lo, hi = fit.predict(xs)
    ax.plot(xs, mean, color=color, linestyle="--", linewidth=1.2, alpha=0.9)
    if not np.isnan(lo).all():
        ax.fill_between(xs, lo, hi, color=color, alpha=0.12, linewidth=0)
    return True


def _crossover_mark(board: Leaderboard, ax, key: tuple) -> None:
    """The measured crossover with the best transfer mode, else the headline's predicted one (only ever from trusted
    fits), as a labelled vertical line."""
    measured = next((x["crossover_budget"] for x in board.crossovers
                     if cell_key(x, BENCHMARK_KEY) == key and x["crossover_budget"]), None)
    claim = next((h["predicted_crossover"] for h in board.headlines
                  if cell_key(h, BENCHMARK_KEY) == key and h["predicted_crossover"]), None)
    if measured is None and not claim:
        return
    n = measured or claim["n"]
    label = f"scratch catches up: {fmt.count(n)} (measured)" if measured else f"predicted crossover ~{fmt.examples(n)}"
    ax.axvline(n, color="black", linestyle=":", linewidth=1.2, label=label)
    ax.text(n, 0.03, f" {label} ", transform=ax.get_xaxis_transform(), rotation=90, fontsize=8, ha="right",
            va="bottom")


def learning_curves(board: Leaderboard, cells: list[dict], fig: Figure) -> str:
    models = sorted({c["model"] for c in cells})
    axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
    drawn = False
    for ax, model in zip(axes, models):
        fitted = False
        by_mode = defaultdict(list)
        for c in cells:
            if c["model"] == model and c["n"] and c["train_samples"]:
                by_mode[c["mode"]].append(c)
        for mode, cs in by_mode.items():
            cs.sort(key=lambda c: c["train_samples"])
            ax.errorbar([c["train_samples"] for c in cs], [c["metric_mean"] for c in cs],
                        yerr=[c["metric_std"] or 0.0 for c in cs], color=_color(mode), marker=MARKERS.get(mode, "o"),
                        capsize=4, label=f"{mode} (n={'/'.join(str(c['n']) for c in cs)})")
            fitted |= _fitted(board, ax, (cs[0]["task"], cs[0]["dataset"], model, mode), _color(mode))
        drawn |= fitted
        _crossover_mark(board, ax, (cells[0]["task"], cells[0]["dataset"], model))
        ax.set_xscale("log")
        budgets = sorted({c["train_samples"] for cs in by_mode.values() for c in cs})
        ticks = budgets + ([int(MAX_FACTOR * budgets[-1])] if fitted else [])  # and where the fits stop
        ax.set_xticks(ticks, [str(b) for b in ticks])  # the budgets run, not powers of ten
        ax.minorticks_off()
        ax.set_title(str(model), fontsize=10)
        ax.set_xlabel("training examples (log scale)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel(f"{cells[0]['metric_name']} (final eval)")
    fits = (f"\ndashed: each mode's fitted curve (plan.md) to {MAX_FACTOR:g}× the largest budget, 95% band"
            if drawn else "")
    return ("Learning curves: metric vs training examples per mode; error bars ±1 std over seeds (n seeds per point)"
            + fits)


def _gap_models(cells: list[dict]) -> list[str]:
    """Models with a Δ vs scratch at MIN_BUDGETS or more budgets: a trend to show (fewer: the table says it all)."""
    budgets = defaultdict(set)
    for c in cells:
        if c["mode"] != "scratch" and c["delta_vs_scratch"] is not None:
            budgets[c["model"]].add(c["train_samples"])
    return sorted(m for m, bs in budgets.items() if len(bs) >= MIN_BUDGETS)


def gap_vs_scratch(board: Leaderboard, cells: list[dict], fig: Figure) -> str:
    models = _gap_models(cells)
    axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
    for ax, model in zip(axes, models):
        mine = [c for c in cells if c["model"] == model and c["mode"] != "scratch"
                and c["delta_vs_scratch"] is not None]
        modes = sorted({c["mode"] for c in mine}, key=lambda m: (MODE_ORDER + (m,)).index(m))
        for i, mode in enumerate(modes):
            cs = sorted((c for c in mine if c["mode"] == mode), key=lambda c: c["train_samples"])
            shift = 1.06 ** (i - (len(modes) - 1) / 2)  # side by side on the log axis: no bar hides another
            ys = [c["delta_vs_scratch"] for c in cs]
            err = [[y - (c["delta_ci"] or (y, y))[0] for y, c in zip(ys, cs)],
                   [(c["delta_ci"] or (y, y))[1] - y for y, c in zip(ys, cs)]]
            ax.errorbar([c["train_samples"] * shift for c in cs], ys, yerr=err, color=_color(mode),
                        marker=MARKERS.get(mode, "o"), capsize=3, label=mode)
        ax.axhline(0, color="black", linewidth=1)
        ax.set_xscale("log")
        budgets = sorted({c["train_samples"] for c in mine})
        ax.set_xticks(budgets, [str(b) for b in budgets])
        ax.minorticks_off()
        ax.set_title(str(model), fontsize=10)
        ax.set_xlabel("training examples (log scale)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    better = "higher" if cells[0]["higher_is_better"] else "lower"
    axes[0].set_ylabel(f"Δ {cells[0]['metric_name']} vs scratch ({better} is better)")
    return "Gap vs scratch by budget: mode − scratch, mean over seeds; bars: 95% Welch interval (none: one seed)"


def metric_vs_cost(board: Leaderboard, cells: list[dict], fig: Figure) -> str:
    scored = [c for c in cells if c["n"]]
    priced = all(c["cost_usd"] is not None for c in scored)
    key, unit = ("cost_usd", "cost per run (USD)") if priced else ("device_hours", "device-hours per run")
    ax = fig.subplots()
    points = [(c[key], c["metric_mean"], c) for c in scored if c[key] is not None]
    for mode in dict.fromkeys(c["mode"] for _, _, c in points):
        mine = [p for p in points if p[2]["mode"] == mode]
        ax.errorbar([p[0] for p in mine], [p[1] for p in mine], yerr=[p[2]["metric_std"] or 0.0 for p in mine],
                    color=_color(mode), marker=MARKERS.get(mode, "o"), linestyle="none", capsize=3, label=mode)
    several = len({c["model"] for c in scored}) > 1
    for x, y, c in points:
        ax.annotate(f"{c['model']} · {c['train_samples']}" if several else f"{c['train_samples']} ex.", (x, y),
                    fontsize=7, xytext=(4, 4), textcoords="offset points")
    front = pareto_front(points, cells[0]["higher_is_better"])
    ax.plot([p[0] for p in front], [p[1] for p in front], color="black", linestyle="--", linewidth=1,
            drawstyle="steps-post", marker="o", markersize=13, markerfacecolor="none", label="Pareto front")
    ax.set_xlabel(unit)
    ax.set_ylabel(f"{cells[0]['metric_name']} (mean over seeds)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return f"Metric vs {unit}; dashed: the Pareto front (no other cell is both cheaper and better)"


def time_to_target(board: Leaderboard, cells: list[dict], fig: Figure) -> str:
    shown = [c for c in cells if c["target"] is not None and c["n"]]
    ax = fig.subplots()
    labels = [f"{c['model']} · {c['train_samples']} · {c['mode']}" for c in shown]
    values = [c["time_to_target_s"] or 0.0 for c in shown]
    bars = ax.barh(range(len(shown)), values, color=[_color(c["mode"]) for c in shown])
    for bar, c in zip(bars, shown):
        note = (f"{fmt.seconds(c['time_to_target_s'])} ({c['target_reached']}/{c['n']} seeds)"
                if c["target_reached"] else f"not reached (0/{c['n']} seeds)")
        ax.annotate(note, (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the first optimizer step (evaluations included)")
    ax.margins(x=0.35)
    targets = "/".join(f"{t:g}" for t in sorted({c["target"] for c in shown}))
    return f"Time to target ({cells[0]['metric_name']} {targets}), mean over the seeds that reached it"


def _curve_runs(board: Leaderboard, cells: list[dict]) -> list[dict]:
    keys = {cell_key(c, BUDGET_KEY) for c in cells}
    return [r for r in board.records if r.get("status") == "ok" and r.get("curve") and run_key(r, BUDGET_KEY) in keys]


def training_curves(board: Leaderboard, cells: list[dict], fig: Figure) -> str:
    """Every run's eval curve at the largest budget that has curves (one budget keeps runs comparable)."""
    runs = _curve_runs(board, cells)
    budget = max(budget_of(r) for r in runs)
    ax = fig.subplots()
    labelled, several = set(), len({r["model"] for r in runs}) > 1
    for r in sorted(runs, key=lambda r: (r["model"], MODE_ORDER.index(r["mode"]) if r["mode"] in MODE_ORDER else 9,
                                         r["seed"])):
        if budget_of(r) != budget:
            continue
        points = [(p["seconds"], p["metric"]) for p in r["curve"] if p.get("metric") is not None]
        name = f"{r['model']} · {r['mode']}" if several else r["mode"]
        label = name if (r["model"], r["mode"]) not in labelled else None
        labelled.add((r["model"], r["mode"]))
        ax.plot([p[0] for p in points], [p[1] for p in points], color=_color(r["mode"]), marker=".", alpha=0.8,
                label=label)
    target = cells[0]["target"]
    if target is not None:
        ax.axhline(target, color="black", linestyle=":", linewidth=1, label=f"target {target:g}")
    ax.set_xlabel("seconds from the first optimizer step")
    ax.set_ylabel(f"{cells[0]['metric_name']} (eval)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return f"Training curves at {budget} examples: one line per run (seed)"


PLOTS = {"learning": learning_curves, "gap": gap_vs_scratch, "cost": metric_vs_cost, "time-to-target": time_to_target,
         "training": training_curves}


def _applies(kind: str, board: Leaderboard, cells: list[dict]) -> bool:
    if kind == "time-to-target":
        return any(c["target"] is not None for c in cells)
    if kind == "training":
        return bool(_curve_runs(board, cells))
    if kind == "gap":
        return bool(_gap_models(cells))
    return True


def write_all(board: Leaderboard, out: Path) -> list[dict]:
    """The PNGs under `out`; each figure as {path (relative to out's parent), title, caption, task, dataset}."""
    out.mkdir(parents=True, exist_ok=True)
    figures = []
    for (task, dataset), cells in board.tables():
        cells = [c for c in cells if c["n"]]
        if not cells:
            continue
        for kind, draw in PLOTS.items():
            if not _applies(kind, board, cells):
                continue
            panels = {"learning": len({c["model"] for c in cells}), "gap": len(_gap_models(cells))}  # one per model
            models = panels.get(kind, 1)
            fig = _figure(width=max(7.5, 3.75 * models))
            caption = draw(board, cells, fig)
            title = f"{task} · {dataset}"
            fig.suptitle(f"{title}\n{caption}", fontsize=10)
            path = out / f"{kind}-{_slug(task, dataset)}.png"
            fig.savefig(path)
            figures.append(dict(path=f"{out.name}/{path.name}", file=str(path), title=f"{kind}: {title}",
                                caption=caption, task=task, dataset=dataset, kind=kind))
    return figures
