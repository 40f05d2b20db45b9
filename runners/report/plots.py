"""PNG plots of a leaderboard, one set per task and dataset, each readable without the table, and each drawn only
when it has something to show: learning curves (log-x, with the planner's fitted curves and 95% band where the fits
are usable, the chance level, the measured or predicted crossover and a data-multiplier arrow), the gap vs scratch by
budget (3+ budgets), metric vs cost, peak memory, adapter size and energy (where measured) with their Pareto fronts,
one row of panels per model; time-to-target bars (some cell reached the target); training curves of one budget (runs
evaluated at least twice). Every mode keeps one colour and marker across plots, the peft family included."""
from __future__ import annotations

import atexit
import multiprocessing
import os
import re
import signal
import sys
import threading
import zlib
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from . import fmt
from .chance import chance_level
from .headline import MAX_FACTOR
from .cells import BENCHMARK_KEY, BUDGET_KEY, budget_of, cell_key, run_key
from .curves import MIN_BUDGETS, limit
from .leaderboard import MODE_ORDER, Leaderboard

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# One colour and marker per mode: the built-in modes, then the peft family's methods; any other mode name (a suite's
# own peft config) gets a stable pick from the same palette by a hash of its name
KNOWN_MODES = MODE_ORDER + ("dora", "loha", "lokr", "ia3", "vera", "adalora", "oft", "boft")
PALETTE = ["#7f7f7f", "#1f77b4", "#2ca02c", "#ff7f0e", "#8c564b", "#9467bd", "#d62728", "#e377c2", "#17becf",
           "#bcbd22", "#393b79", "#637939"]
MARKER_CYCLE = "osD^vP*XhpH<"
COLORS = dict(zip(KNOWN_MODES, PALETTE))
MARKERS = dict(zip(KNOWN_MODES, MARKER_CYCLE))


def _pick(mode: str, options) -> str:
    return options[zlib.crc32(str(mode).encode()) % len(options)]


def _color(mode: str) -> str:
    return COLORS.get(mode) or _pick(mode, PALETTE)


def _marker(mode: str) -> str:
    return MARKERS.get(mode) or _pick(mode, MARKER_CYCLE)


def _slug(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", "-".join(map(str, parts))).strip("-").lower()


def _figure(width=7.5, height=4.8) -> Figure:
    # matplotlib (~0.4 s) is imported here, where a figure is drawn: `report` forks its drawing workers before it
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # no pyplot: no global state, no display needed
    from matplotlib.figure import Figure

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


def _multiplier_arrow(ax, cells: list[dict]) -> bool:
    """The data multiplier of the best transfer cell at the smallest budget that has one: an arrow from the cell to
    the scratch budget whose fitted curve reaches the same metric ('≈ scratch at ~600, 15×')."""
    have = [c for c in cells if (c.get("data_multiplier") or {}).get("scratch_budget")]
    if not have:
        return False
    smallest = min(c["train_samples"] for c in have)
    c = max((c for c in have if c["train_samples"] == smallest),
            key=lambda c: (1 if c["higher_is_better"] else -1) * c["metric_mean"])
    m = c["data_multiplier"]
    ax.annotate("", xy=(m["scratch_budget"], c["metric_mean"]), xytext=(c["train_samples"], c["metric_mean"]),
                arrowprops=dict(arrowstyle="->", color=_color(c["mode"]), linestyle="-", linewidth=1.2))
    guess = "" if m["trusted"] else " (rough)"
    ax.annotate(f"{c['mode']} ≈ scratch at ~{fmt.examples(m['scratch_budget'])} ({fmt.ratio(m['multiplier'])}){guess}",
                (c["train_samples"], c["metric_mean"]), xytext=(6, -16), textcoords="offset points", fontsize=7,
                color=_color(c["mode"]))
    return True


def learning_curves(board: Leaderboard, cells: list[dict], fig: Figure) -> str:
    models = sorted({c["model"] for c in cells})
    axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
    drawn = arrows = False
    chance = chance_level(cells[0]["dataset"], cells[0]["metric_name"])
    for ax, model in zip(axes, models):
        fitted = False
        by_mode = defaultdict(list)
        for c in cells:
            if c["model"] == model and c["n"] and c["train_samples"]:
                by_mode[c["mode"]].append(c)
        for mode, cs in by_mode.items():
            cs.sort(key=lambda c: c["train_samples"])
            ax.errorbar([c["train_samples"] for c in cs], [c["metric_mean"] for c in cs],
                        yerr=[c["metric_std"] or 0.0 for c in cs], color=_color(mode), marker=_marker(mode),
                        capsize=4, label=f"{mode} (n={'/'.join(str(c['n']) for c in cs)})")
            fitted |= _fitted(board, ax, (cs[0]["task"], cs[0]["dataset"], model, mode), _color(mode))
        drawn |= fitted
        if chance is not None:
            ax.axhline(chance, color="#b42318", linestyle="-.", linewidth=1, label=f"chance ({chance:.2g})")
        _crossover_mark(board, ax, (cells[0]["task"], cells[0]["dataset"], model))
        arrows |= _multiplier_arrow(ax, [c for cs in by_mode.values() for c in cs])
        ax.set_xscale("log")
        budgets = sorted({c["train_samples"] for cs in by_mode.values() for c in cs})
        ticks = budgets + ([int(MAX_FACTOR * budgets[-1])] if fitted else [])  # and where the fits stop
        ax.set_xticks(ticks, [fmt.count(b) for b in ticks])  # the budgets run, not powers of ten
        ax.minorticks_off()
        ax.set_title(str(model), fontsize=10)
        ax.set_xlabel("training examples (log scale)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"{cells[0]['metric_name']} (final eval)")
    notes = [f"dashed: fitted curve (plan.md), 95% band, to {MAX_FACTOR:g}× the largest budget"] if drawn else []
    notes += ["arrow: data multiplier"] if arrows else []
    notes += ["dash-dot: chance (1 / classes)"] if chance is not None else []
    if len(models) < 3 and len(notes) == 3:  # a narrow figure: two caption lines
        notes = [notes[0], "; ".join(notes[1:])]
        return ("Learning curves: metric vs training examples per mode; error bars ±1 std over seeds\n"
                + "\n".join(notes))
    return ("Learning curves: metric vs training examples per mode; error bars ±1 std over seeds"
            + (f"\n{'; '.join(notes)}" if notes else ""))


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
                        marker=_marker(mode), capsize=3, label=mode)
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


def cost_scale(values: list[float]) -> tuple[float, str]:
    """(factor, unit) that puts USD per run in readable numbers: per run, per 1,000 runs or per million runs."""
    top = max(values, default=0.0)
    for factor, unit in ((1, "USD per run"), (1e3, "USD per 1,000 runs"), (1e6, "USD per million runs")):
        if top * factor >= 0.01:
            return factor, unit
    return 1e6, "USD per million runs"


def _axes_of(cells: list[dict]) -> list[tuple[str, str, float, object]]:
    """The x-axes a Pareto panel is drawn against: (field, label, scale, value getter); cost always (USD, else
    device-hours), then peak memory, adapter size and energy where every scored cell has the value."""
    priced = all(c["cost_usd"] is not None for c in cells)
    if priced:
        factor, unit = cost_scale([c["cost_usd"] for c in cells])
        out = [("cost", unit, factor, lambda c: c["cost_usd"])]
    else:
        out = [("device-hours", "device-hours per run", 1.0, lambda c: c["device_hours"])]
    for key, label, factor in (("peak_memory_bytes", "peak memory (MiB)", 2 ** -20),
                               ("adapter_bytes", "adapter size (KiB)", 2 ** -10),
                               ("energy_kwh", "energy per run (Wh)", 1e3)):
        values = [c.get(key) for c in cells]
        # a panel only where the cells differ: process RSS on CPU varies by a few MiB between modes, which is noise
        if all(v is not None and v > 0 for v in values) and max(values) > 1.1 * min(values):
            out.append((key, label, factor, lambda c, k=key: c[k]))
    return out


def _pareto_models(cells: list[dict]) -> list[str]:
    return sorted({c["model"] for c in cells if c["n"]})


def pareto(board: Leaderboard, cells: list[dict], fig: Figure) -> str:
    """One row per model (a benchmark): metric against cost and, where measured, peak memory, adapter size and
    energy, each with its Pareto front; points labelled by budget."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    models = _pareto_models(cells)
    rows = {m: [c for c in cells if c["model"] == m and c["n"]] for m in models}
    ncols = max(len(_axes_of(cs)) for cs in rows.values())
    # fixed margins in inches instead of constrained layout: with a panel per model and measure, the layout solver
    # took a third of the figure's time
    width, height = fig.get_size_inches()
    fig.set_layout_engine("none")
    grid = fig.subplots(len(models), ncols, squeeze=False, gridspec_kw=dict(
        left=0.8 / width, right=1 - 0.2 / width, bottom=0.6 / height, top=1 - 1.0 / height,
        wspace=0.9 / (width / ncols), hspace=1.0 / (height / len(models))))
    higher = cells[0]["higher_is_better"]
    for (model, cs), axes in zip(rows.items(), grid):
        panels = _axes_of(cs)
        for ax, (key, label, factor, get) in zip(axes, panels):
            points = [(get(c) * factor, c["metric_mean"], c) for c in cs if get(c) is not None]
            for mode in dict.fromkeys(c["mode"] for _, _, c in points):
                mine = [p for p in points if p[2]["mode"] == mode]
                ax.errorbar([p[0] for p in mine], [p[1] for p in mine], yerr=[p[2]["metric_std"] or 0.0 for p in mine],
                            color=_color(mode), marker=_marker(mode), linestyle="none", capsize=3, label=mode)
            front = pareto_front(points, higher)
            if len({c["train_samples"] for c in cs}) > 1:  # the front's points say their budget: the ones to read
                for x, y, c in front:
                    ax.annotate(fmt.count(c["train_samples"]), (x, y), fontsize=7, xytext=(3, 3),
                                textcoords="offset points")
            ax.plot([p[0] for p in front], [p[1] for p in front], color="black", linestyle="--", linewidth=1,
                    drawstyle="steps-post", marker="o", markersize=12, markerfacecolor="none", label="Pareto front")
            xs = [p[0] for p in points]
            if xs and min(xs) > 0 and max(xs) / min(xs) > 8:  # spans orders of magnitude: log, plain tick labels
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if max(xs) / min(xs) < 100 else (1.0,)))
                ax.minorticks_off()  # minor log ticks cost more to draw than the rest of the panel
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt.short_significant(v) if v > 0 else "0"))
            ax.set_xlabel(label, fontsize=9)
            ax.set_title(str(model), fontsize=9)
            ax.grid(True, alpha=0.3)
        for ax in axes[len(panels):]:
            ax.set_visible(False)
        axes[0].set_ylabel(f"{cells[0]['metric_name']} (mean)")
        axes[0].legend(fontsize=7)
    return ("Metric vs what it costs, per model: a point per cell, error bars ±1 std\n"
            "dashed: the Pareto front (no other cell is both cheaper and better), its points labelled by budget")


def time_to_target(board: Leaderboard, cells: list[dict], fig: Figure) -> str:
    """Bars for the cells where some seed reached the target; the others are counted in the caption (the table says
    "0/n reached" for each): a bar of nothing per such cell drowned the few that reached it."""
    targeted = [c for c in cells if c["target"] is not None and c["n"]]
    shown = [c for c in targeted if c["target_reached"]]
    ax = fig.subplots()
    labels = [f"{c['model']} · {c['train_samples']} · {c['mode']}" for c in shown]
    values = [c["time_to_target_s"] for c in shown]
    bars = ax.barh(range(len(shown)), values, color=[_color(c["mode"]) for c in shown])
    for bar, c in zip(bars, shown):
        note = f"{fmt.seconds(c['time_to_target_s'])} ({c['target_reached']}/{c['n']} seeds)"
        ax.annotate(note, (bar.get_width(), bar.get_y() + bar.get_height() / 2), xytext=(4, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_yticks(range(len(shown)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("seconds from the first optimizer step (evaluations included)")
    ax.margins(x=0.35)
    targets = "/".join(f"{t:g}" for t in sorted({c["target"] for c in shown}))
    missed = len(targeted) - len(shown)
    return (f"Time to target ({cells[0]['metric_name']} {targets}), mean over the seeds that reached it"
            + (f"\n{missed} of {len(targeted)} cells not shown: no seed reached the target" if missed else ""))


def _curve_runs(board: Leaderboard, cells: list[dict]) -> list[dict]:
    keys = {cell_key(c, BUDGET_KEY) for c in cells}
    return [r for r in board.records if r.get("status") == "ok" and run_key(r, BUDGET_KEY) in keys
            and sum(p.get("metric") is not None for p in r.get("curve") or []) >= 2]


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


PLOTS = {"learning": learning_curves, "gap": gap_vs_scratch, "pareto": pareto, "time-to-target": time_to_target,
         "training": training_curves}


def _applies(kind: str, board: Leaderboard, cells: list[dict]) -> bool:
    if kind == "time-to-target":  # bars of "not reached" only are an empty chart: the table says it
        return any(c["target"] is not None and c["target_reached"] for c in cells)
    if kind == "training":  # one evaluation per run is a dot, not a curve
        return bool(_curve_runs(board, cells))
    if kind == "gap":
        return bool(_gap_models(cells))
    return True


def write_all(board: Leaderboard, out: Path) -> list[dict]:
    """The PNGs under `out`; each figure as {path (relative to out's parent), title, caption, task, dataset}."""
    return start(board, out)()


class Painter:
    """A process forked when `report` starts: it imports matplotlib while this process loads the stores and builds
    the leaderboard, then draws the figures in helpers it forks (they inherit matplotlib and the board: one import,
    nothing pickled) while this process writes the tables and the plan. Drawing is most of a report's time and each
    figure is independent of the others. Ctrl-C is the report's to handle: `close` ends the painter."""

    def __init__(self):
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=_paint, args=(child,), name="transferbench-figures")
        self.process.start()
        # ended at exit at the latest: multiprocessing joins a live child at exit, which would wait for a board
        atexit.register(self.close)

    @classmethod
    def fork(cls) -> Optional["Painter"]:
        """None where forking is not cheap and safe: torch loaded (the end of `run`), other threads running (a
        notebook's kernel: a fork copies their locks in whatever state they are), one CPU, no fork."""
        if (os.cpu_count() or 1) < 2 or "torch" in sys.modules or threading.active_count() > 1 or \
                "fork" not in multiprocessing.get_all_start_methods():
            return None
        return cls()

    def start(self, board: Leaderboard, out: Path, jobs: list[tuple]) -> Callable[[], list[dict]]:
        self.conn.send((board, out, jobs))

        def figures() -> list[dict]:
            ok, got = self.conn.recv()
            if not ok:
                raise got
            return got

        return figures

    def close(self) -> None:
        atexit.unregister(self.close)
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()


def _paint(conn) -> None:
    global _JOBS
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the report's process stops it (no second traceback)
    _figure()  # matplotlib imported and its fonts loaded, before the board arrives
    try:
        _JOBS = conn.recv()
    except EOFError:  # the report ended before its figures (an error): nothing to draw
        return
    try:
        jobs = _JOBS[2]
        order = sorted(range(len(jobs)), key=lambda i: -_cost(jobs[i]))  # costliest first: the helpers end together
        helpers = min(os.cpu_count() or 1, 4, len(jobs))
        with multiprocessing.get_context("fork").Pool(helpers) as pool:  # they inherit the board: nothing pickled
            drawn = dict(zip(order, pool.map(_draw_inherited, order, chunksize=1)))
        conn.send((True, [drawn[i] for i in range(len(jobs))]))
    except BaseException as err:  # raised again in the report's process
        conn.send((False, err))


_JOBS: Optional[tuple] = None  # (board, out, jobs): what the painter's helpers inherit


def _draw_inherited(i: int) -> dict:
    board, out, jobs = _JOBS
    return _draw(board, out, *jobs[i])


def start(board: Leaderboard, out: Path, painter: Optional[Painter] = None) -> Callable[[], list[dict]]:
    """Draw the figures: in `painter`'s processes when there is one (calling the result waits for them), else
    here; the figures in the page's order."""
    out.mkdir(parents=True, exist_ok=True)
    jobs = _jobs(board)
    if painter is not None and len(jobs) > 1:
        return painter.start(board, out, jobs)
    drawn = [_draw(board, out, *job) for job in jobs]
    return lambda: drawn


def _cost(job: tuple) -> int:
    """A figure's drawing time, roughly: its panels (each with its text, ticks and legend)."""
    kind, cells = job[2], job[3]
    models = len({c["model"] for c in cells})
    return {"pareto": 3 * models, "learning": models}.get(kind, 1)


def _jobs(board: Leaderboard) -> list[tuple]:
    """(task, dataset, kind, cells) of every figure that shows something, in the page's order."""
    jobs = []
    for (task, dataset), cells in board.tables():
        cells = [c for c in cells if c["n"]]
        if cells:
            jobs += [(task, dataset, kind, cells) for kind in PLOTS if _applies(kind, board, cells)]
    return jobs


def _draw(board: Leaderboard, out: Path, task: str, dataset: str, kind: str, cells: list[dict]) -> dict:
    draw = PLOTS[kind]
    panels = {"learning": len({c["model"] for c in cells}), "gap": len(_gap_models(cells))}  # one per model
    models = panels.get(kind, 1)
    if kind == "pareto":  # a row per model, a panel per cost axis
        ms = _pareto_models(cells)
        cols = max(len(_axes_of([c for c in cells if c["model"] == m])) for m in ms)
        fig = _figure(width=max(7.5, 4.2 * cols), height=max(4.8, 1.2 + 3.4 * len(ms)))
    else:
        fig = _figure(width=max(7.5, 3.75 * models))
    caption = draw(board, cells, fig)
    title = f"{task} · {dataset}"
    fig.suptitle(f"{title}\n{caption}", fontsize=10)
    path = out / f"{kind}-{_slug(task, dataset)}.png"
    # zlib level 1: the default store's 9 figures draw in 1.68 s instead of 1.73 s (level 6), files 3% larger
    fig.savefig(path, pil_kwargs={"compress_level": 1})
    return dict(path=f"{out.name}/{path.name}", file=str(path), title=f"{kind}: {title}", caption=caption, task=task,
                dataset=dataset, kind=kind)
