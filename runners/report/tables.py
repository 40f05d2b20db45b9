"""The leaderboard as tables: GitHub Markdown, flat CSV (one row per run and one per cell) and JSON."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Callable

from . import decision, fmt, schedules, stats
from .cells import budget_text
from .leaderboard import Leaderboard

EXPLAIN = ("Metric: mean ± sample std over seeds (n = seeds with an evaluation). Δ vs scratch: difference of means, "
           "with its 95% Welch t interval over seeds (none for n=1). **Bold**: the best cell of its budget. Time, "
           "device-hours and cost are per run (mean over a cell's runs); $/point = cost per run / (100 × metric). "
           "lr: the rate the runs trained at, \"(auto)\" when the learning-rate search chose it (\"(grid)\": from the "
           "suite's list; seeds that chose differently show each rate). Schedule: what the mode trained for (max_steps "
           "replaces epochs); a part that differs from the other modes at its budget names theirs.")
EQUAL_INTRO = "What the modes held equal at each budget (from the runs' records):"
HEADLINE_EXPLAIN = ("The lines above and the verdicts: " + stats.RULES + " Bold in the lines above: a win, or a Δ vs "
                    "scratch whose 95% Welch interval excludes 0, resting only on settled cells. \"still improving "
                    "k/n\": k of the cell's n runs had not stopped improving when they ended; \"too short to tell\": "
                    "too few optimizer steps to judge; a claim that rests on either is provisional and never bold. "
                    "Scratch \"catches up\" at a budget when it is adequate against the best transfer mode (within "
                    "the margin); the crossover is the smallest budget from which it does at every larger one. "
                    "\"≈ scratch at\": the data multiplier, the scratch budget whose fitted curve reaches the cell's "
                    "mean, with its 95% interval.")


def metric_text(cell: dict) -> str:
    """What the metric column says, failed and unevaluated cells included."""
    if cell["status"] == "failed" or cell["status"] == "diverged":
        return f"{cell['status']} ({cell['runs']} run{'s' * (cell['runs'] > 1)}): {cell['errors'][0]}"
    if cell["status"] == "no eval":
        return f"no eval ({cell['no_eval']} run{'s' * (cell['no_eval'] > 1)})"
    notes = [f"{k} {what}" for k, what in ((cell["failed"], "failed"), (cell["no_eval"], "no eval")) if k]
    notes += [fmt.improving(cell)] if cell.get("still_improving") else []
    return f"{fmt.metric(cell['metric_mean'])} {fmt.spread(cell)}" + (f", {', '.join(notes)}" if notes else "")


# (key, header, text, sort value): Markdown and HTML show the same columns with the same text.
Column = tuple[str, str, Callable[[dict], str], Callable[[dict], object]]
COLUMNS: list[Column] = [
    ("model", "model", lambda c: str(c["model"]), lambda c: str(c["model"])),
    ("budget", "train examples", fmt.budget, lambda c: c["train_samples"]),
    ("mode", "mode", lambda c: str(c["mode"]), lambda c: str(c["mode"])),
    ("lr", "lr", lambda c: c.get("lr_text") or fmt.NONE, lambda c: (c.get("lr") or [None])[0]),
    ("schedule", "schedule", lambda c: c.get("schedule") or fmt.NONE, lambda c: c.get("optimizer_steps")),
    ("metric", "metric (mean ± std)", metric_text, lambda c: c["metric_mean"]),
    ("delta", "Δ vs scratch [95% CI]", fmt.delta, lambda c: c["delta_vs_scratch"]),
    ("ttt", "time to target", fmt.time_to_target, lambda c: c["time_to_target_s"]),
    ("train", "train s", lambda c: fmt.num(c["train_seconds"], "{:.1f}"), lambda c: c["train_seconds"]),
    ("throughput", "samples/s", lambda c: fmt.num(c["samples_per_second"], "{:.1f}"),
     lambda c: c["samples_per_second"]),
    ("memory", "peak mem", lambda c: fmt.memory(c["peak_memory_bytes"]), lambda c: c["peak_memory_bytes"]),
    ("trainable", "trainable", lambda c: fmt.share(c["trainable_share"]), lambda c: c["trainable_share"]),
    ("hours", "device-h/run", lambda c: fmt.hours(c["device_hours"]), lambda c: c["device_hours"]),
    ("cost", "$/run", lambda c: fmt.money(c["cost_usd"]), lambda c: c["cost_usd"]),
    ("per-point", "$/point", lambda c: fmt.money(c["cost_per_point"]), lambda c: c["cost_per_point"]),
    ("mfu", "MFU", lambda c: fmt.share(c.get("mfu")), lambda c: c.get("mfu")),  # — where no stated peak (CPU)
]
METRIC_COLUMN = [key for key, *_ in COLUMNS].index("metric")  # the one that carries the best-cell mark


def energy_text(c: dict) -> str:
    """kWh per run and its CO2e; — where the cell's runs were not all measured (the footer says why)."""
    if c.get("energy_kwh") is None:
        return fmt.NONE
    return f"{fmt.significant(c['energy_kwh'])} kWh, {fmt.significant(c['co2_kg'] * 1000)} g CO2e"


ENERGY_COLUMN: Column = ("energy", "energy/run", energy_text, lambda c: c.get("energy_kwh"))
ENERGY_SOURCES = {"nvml": "NVML's total-energy counter of each GPU the run used (the whole board)",
                  "rapl": "the RAPL counters of the CPU packages and their DRAM (the whole package: every process "
                          "on it)",
                  "nvml+rapl": "NVML's energy counter of each GPU used and the RAPL counters of the CPU packages "
                               "and DRAM"}


def adapter_text(c: dict) -> str:
    nbytes = c.get("adapter_bytes")
    if nbytes is None:
        return fmt.NONE
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}" if nbytes < 100 * scale else f"{nbytes / scale:.0f} {unit}"
    return f"{nbytes} B"


# Bytes of what training adds to the base model (peft_modes.adapter_bytes): beside "trainable", as PEFT users compare
ADAPTER_COLUMN: Column = ("adapter", "adapter size", adapter_text, lambda c: c.get("adapter_bytes"))


def transferred_text(c: dict) -> str:
    m = c.get("data_multiplier")
    if not m:
        return fmt.NONE
    return fmt.multiplier(m) + ("" if m["trusted"] else f" (scratch's fit: {m['scratch_status']})")


# The data multiplier (crossover.multiplier): where a benchmark's scratch curve is fitted
TRANSFERRED_COLUMN: Column = ("transferred", "≈ scratch at [95%]", transferred_text,
                              lambda c: (c.get("data_multiplier") or {}).get("multiplier"))


# Measured where the hardware or the mode allows: a column empty in every row is hidden, and hidden_note says why
OPTIONAL = {"mfu": "no stated peak FLOPs for the device, as for CPUs", "energy": "not measured",
            "adapter": "no run records an adapter size", "ttt": "no target set"}


def _all_columns(board: Leaderboard) -> list[Column]:
    cols = list(COLUMNS)
    if any(c.get("data_multiplier") for c in board.cells):
        cols.insert(next(i for i, c in enumerate(cols) if c[0] == "delta") + 1, TRANSFERRED_COLUMN)
    if board.records_adapters:
        cols.insert(next(i for i, c in enumerate(cols) if c[0] == "trainable") + 1, ADAPTER_COLUMN)
    return cols + [ENERGY_COLUMN] if board.measures_energy else cols


def _empty(board: Leaderboard, col: Column) -> bool:
    return col[0] in OPTIONAL and all(col[2](c) == fmt.NONE for c in board.cells)


def columns(board: Leaderboard) -> list[Column]:
    """The table's columns: COLUMNS, the data multiplier where scratch is fitted, the adapter size where runs record
    it, energy per run when the runs carry energy fields; an optional column that is empty in every row is left
    out (hidden_note names it)."""
    return [c for c in _all_columns(board) if not _empty(board, c)]


def hidden_note(board: Leaderboard) -> str:
    """'Hidden (empty in every row): MFU (no stated peak FLOPs for the device (CPU)), energy/run (...)', or ''."""
    hidden = [c for c in _all_columns(board) if _empty(board, c)]
    if not hidden:
        return ""
    why = {"energy": next((r.get("energy_note") for r in board.records if r.get("energy_note")), None)}
    return "Hidden (empty in every row): " + ", ".join(
        f"{header} ({why.get(key) or OPTIONAL[key]})" for key, header, _, _ in hidden) + "."


def energy_lines(board: Leaderboard) -> list[str]:
    """How the energy column was measured, and why it says — where it does (none for stores without energy)."""
    if not board.measures_energy:
        return []
    runs = [r for r in board.records if r.get("status") == "ok"]
    lines = []
    for source in sorted({r["energy_source"] for r in runs if r.get("energy_kwh") is not None}):
        n = sum(r.get("energy_source") == source and r.get("energy_kwh") is not None for r in runs)
        lines.append(f"Energy per run ({n} run{'s' * (n != 1)}): read from {ENERGY_SOURCES.get(source, source)} "
                     f"before and after each run (setup, training and evaluation; no sampling, nothing estimated).")
    reasons: dict[str, int] = {}
    for r in runs:
        if r.get("energy_kwh") is None:
            reasons[r.get("energy_note") or "not recorded"] = reasons.get(r.get("energy_note") or "not recorded", 0) + 1
    for why, n in sorted(reasons.items(), key=lambda x: -x[1])[:3]:
        lines.append(f"Energy — ({n} run{'s' * (n != 1)}): {why}.")
    grids = sorted({r["grid_gco2_per_kwh"] for r in runs if r.get("energy_kwh") is not None
                    and r.get("grid_gco2_per_kwh") is not None})
    if grids:
        lines.append(f"CO2e = kWh × {' / '.join(f'{g:g}' for g in grids)} g CO2e per kWh (the grid intensity recorded "
                     f"with each run: 475 is the IEA's 2019 world average, TRANSFERBENCH_GRID_GCO2_PER_KWH sets your "
                     f"grid's). Cost stays device-hours × price.")
    return lines


def table_intro(cells: list[dict]) -> str:
    c = cells[0]
    direction = "higher" if c["higher_is_better"] else "lower"
    targets = sorted({x["target"] for x in cells if x["target"] is not None})
    reach = (f"; time to target: until {c['metric_name']} reaches {' / '.join(f'{t:g}' for t in targets)}, from the "
             "first optimizer step, evaluations included (mean over the seeds that reached it)" if targets else "")
    return f"Metric: {c['metric_name']} ({direction} is better, final evaluation){reach}."


def price_lines(board: Leaderboard) -> list[str]:
    lines = [f"{p['device_name']}: {fmt.price(p['price_per_device_hour'])} per device-hour (price table dated "
             f"{p['price_date'] or 'n/a'})" if p["price_per_device_hour"] is not None else
             f"{p['device_name']}: no price (cost not computed; verdicts compare device-hours)" for p in board.prices]
    total_h, total_usd = board.spent
    lines.append(f"Device-hours = wall seconds × devices / 3600. Spent on these runs (failed ones included): "
                 f"{fmt.hours(total_h)} device-h, {fmt.money(total_usd)}.")
    lines.append("MFU = training FLOPs (6 × parameters × tokens; 3 × a counted forward for vision models) / train "
                 "seconds / the device's stated dense peak (transferbench/peaks.yaml); — where no peak is stated "
                 "(CPU).")
    return lines + energy_lines(board) + [timing_line(t) for t in board.timings]


def timing_line(t: dict) -> str:
    """One invocation of `transferbench run`: its wall time against the training it did (suite_timing.jsonl)."""
    work = t.get("train_eval_seconds") or 0.0
    ratio = f"{t['wall_seconds'] / work:.2f}×" if work else "n/a"
    return (f"Suite {t.get('suite')} (invocation finished {t.get('finished_at')}, {t.get('runs')} runs): wall "
            f"{fmt.seconds(t.get('wall_seconds'))} (process start to last run), runs' train + eval "
            f"{fmt.seconds(work)} (spent; shared work billed to several runs counted once): {ratio}; setup {fmt.seconds(t.get('setup_seconds'))}, preflight "
            f"{fmt.seconds(t.get('preflight_seconds'))}, "
            + (f"warm-up {fmt.seconds(t['warmup_seconds'])}, " if "warmup_seconds" in t else "")
            + (f"Ray start {fmt.seconds(t['ray_start_seconds'])} (runs in parallel: their train + eval may "
               f"exceed the wall), " if "ray_start_seconds" in t else "")
            + (f"learning-rate searches {fmt.seconds(t['search_seconds'])}, " if t.get("search_seconds") else "")
            + f"start-up and imports {fmt.seconds(t.get('startup_seconds'))}.")


def failed_lines(board: Leaderboard) -> list[str]:
    return [f"{r.get('task')} · {r.get('dataset')} · {r.get('model')} · {r.get('mode')} · "
            f"{budget_text(r)} · "
            f"seed {r.get('seed')} (run {r.get('run_id')}): {r.get('status')}: {r.get('error')}"
            for r in board.failed()]


PLAN_LINE = ("Predicted metric and cost at budgets not run (fitted curves, 95% intervals, measured and predicted "
             "crossovers, data multipliers, and checks that predict each curve's largest budget and each measured "
             "crossover from the smaller budgets): [plan.md](plan.md), plan.json "
             "(`transferbench plan` for other budgets, a target or a cost cap).")


def equal_lines(board: Leaderboard, task: str, dataset: str) -> list[str]:
    """One line per benchmark of a table: 'efficientnet-lite0: equal: steps (20 optimizer steps of batch 16 ...)'."""
    return [f"{n['model']}: {n['text']}" for n in board.equal if (n["task"], n["dataset"]) == (task, dataset)]


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


DETAILS = "Details: the full verdicts, the definitions and every cell"
IMPROVING = ("Highlighted \"still improving\": a cell that leads or ties its budget with runs that had not stopped "
             "improving, so more training could change the decision (the text says still improving k/n in every "
             "cell it applies to).")


def runs_line(board: Leaderboard) -> str:
    ok = sum(r.get("status") == "ok" for r in board.records)
    return (f"{len(board.records)} runs ({ok} ok, {len(board.records) - ok} failed)"
            + (f" from {', '.join(board.sources)}" if board.sources else "") + ".")


def decision_markdown(board: Leaderboard) -> list[str]:
    """The decision lines and the decision table (decision.py): what the page, the printout and the Space open with."""
    lines = [f"- {d['text']}" for d in board.decisions] + [""]
    rows = decision.table_rows(board.decisions)
    if rows:
        lines += ["| benchmark | examples | use | metric | cost/run | beats significantly |", "|---|---|---|---|---|---|"]
        lines += ["| " + " | ".join(_md(x) for x in (r["benchmark"], r["examples"], r["use"], r["metric"], r["cost"],
                                                      decision.beats_text(r["beats"], lambda m: f"**{m}**")))
                  + " |" for r in rows]
        lines += ["", decision.EXPLAIN, ""]
    return lines


def to_markdown(board: Leaderboard, figures: list[dict] = ()) -> str:
    lines = [f"## {board.title}", ""]
    if not board.records:
        return "\n".join(lines + ["_No runs yet._"]) + "\n"
    lines += decision_markdown(board)  # the answer first, the evidence after
    lines += [runs_line(board) + " Plots below; every cell and the definitions in the fold at the end.", ""]
    for (task, dataset), _ in board.tables():
        shown = [f for f in figures if (f["task"], f["dataset"]) == (task, dataset)]
        lines += [f"### Plots: {task} · {dataset}", ""] + [f"![{f['title']}]({f['path']})" for f in shown] + [""] \
            if shown else []
    lines += ["<details>", f"<summary>{DETAILS}</summary>", ""]
    lines += [f"- {h['markdown']}" for h in board.headlines] + [""]
    lines += [HEADLINE_EXPLAIN + " " + EXPLAIN + " " + IMPROVING, ""]
    cols = columns(board)
    hidden = hidden_note(board)
    for (task, dataset), cells in board.tables():
        lines += [f"### {task} · {dataset}", "", table_intro(cells) + (f" {hidden}" if hidden else ""), ""]
        lines.append("| " + " | ".join(header for _, header, _, _ in cols) + " |")
        lines.append("|" + "---|" * len(cols))
        for c in cells:
            texts = [_md(text(c)) for _, _, text, _ in cols]
            if c["best"]:
                texts[METRIC_COLUMN] = f"**{texts[METRIC_COLUMN]}**"
            lines.append("| " + " | ".join(texts) + " |")
        equal = equal_lines(board, task, dataset)
        lines += ["", EQUAL_INTRO, ""] + [f"- {_md(line)}" for line in equal] if equal else []
        verdicts = [v["text"] for v in board.budget_verdicts + board.crossovers
                    if (v["task"], v["dataset"]) == (task, dataset)]
        lines += ["", "Verdicts (computed from the rows above):", ""] + [f"- {v}" for v in verdicts]
        lines.append("")
    if board.plannable:
        lines += ["### Plan", "", PLAN_LINE, ""]
    lines += ["### Cost", ""] + [f"- {p}" for p in price_lines(board)]
    failed = failed_lines(board)
    if failed:
        lines += ["", "### Failed runs", ""] + [f"- {_md(f)}" for f in failed]
    lines += ["", "</details>"]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["row", "task", "dataset", "model", "train_samples", "mode", "seed", "seeds", "n", "status", "error",
               "lr", "lr_search", "schedule", "optimizer_steps", "equal",
               "metric_name", "higher_is_better", "metric", "metric_std", "delta_vs_scratch", "delta_ci_low",
               "delta_ci_high", "delta_significant", "scratch_equivalent", "data_multiplier", "data_multiplier_low",
               "data_multiplier_high", "data_multiplier_note", "best", "target", "time_to_target_s", "target_reached",
               "train_seconds", "samples_per_second", "mfu", "peak_memory_bytes", "trainable_share", "device_hours",
               "cost_usd", "cost_per_point", "price_per_device_hour", "price_date", "energy_kwh", "co2_kg",
               "energy_source", "adapter_bytes", "device_name", "converged",
               "convergence", "converged_runs", "still_improving", "run_id"]


def run_row(r: dict) -> dict:
    share = (r["params_trainable"] / r["params_total"]
             if r.get("params_trainable") is not None and r.get("params_total") else None)
    return {**{k: r.get(k) for k in CSV_COLUMNS}, "row": "run", "seeds": r.get("seed"),
            "n": int(r.get("metric") is not None), "trainable_share": share,
            "lr": schedules.run_lr(r), "lr_search": schedules.search_kind(r),
            "target_reached": int(r.get("time_to_target_s") is not None) if r.get("target") is not None else None}


def cell_row(c: dict) -> dict:
    low, high = c["delta_ci"] or (None, None)
    m = c.get("data_multiplier") or {}
    return {**{k: c.get(k) for k in CSV_COLUMNS}, "row": "cell", "scratch_equivalent": m.get("scratch_budget"),
            "data_multiplier": m.get("multiplier"), "data_multiplier_low": m.get("multiplier_lo"),
            "data_multiplier_high": m.get("multiplier_hi"), "data_multiplier_note": m.get("note"), "metric": c["metric_mean"],
            "metric_std": c["metric_std"], "seeds": " ".join(map(str, c["seeds"])), "error": "; ".join(c["errors"]),
            "lr": " ".join(map(repr, c.get("lr") or [])),  # the distinct rates, as `seeds` lists the seeds
            "delta_ci_low": low, "delta_ci_high": high}


def csv_rows(board: Leaderboard) -> list[dict]:
    """Flat: `row` says whether a line is one run or an aggregated cell. Full float precision."""
    return [run_row(r) for r in board.records] + [cell_row(c) for c in board.cells]


def to_json(board: Leaderboard) -> dict:
    # in the store (and the published dataset); the leaderboard stays small
    heavy = {"curve", "loss_curve", "config", "env"}
    return dict(title=board.title, sources=board.sources, decisions=board.decisions, headline=board.headlines,
                cells=board.cells,
                equal=board.equal, verdicts=dict(budgets=board.budget_verdicts, crossovers=board.crossovers),
                prices=board.prices,
                runs=[{k: v for k, v in r.items() if k not in heavy and not k.startswith("_")} for r in board.records])


def unavailable(title: str, reason) -> str:
    """The Markdown in place of a leaderboard that cannot be built, with the reason."""
    return f"## {title}\n\nNo leaderboard: {reason}\n"


def write_markdown(text: str, out: Path) -> None:
    """The one writer of leaderboard.md (`report`, and `run` at its end through report.after_run)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "leaderboard.md").write_text(text, encoding="utf-8")


def write_all(board: Leaderboard, out: Path, figures: list[dict] = ()) -> str:
    """leaderboard.md, .csv and .json in `out`; returns the Markdown."""
    text = to_markdown(board, figures)
    write_markdown(text, out)
    with open(out / "leaderboard.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(csv_rows(board))
    (out / "leaderboard.json").write_text(json.dumps(to_json(board), indent=1, default=str), encoding="utf-8")
    return text
