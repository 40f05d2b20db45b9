"""Leaderboard data: runs -> cells (task, dataset, model, budget, mode; mean over seeds) -> Δ vs scratch with its
95% interval, the best cell per budget, energy and adapter size where runs record them, the verdicts and the suite
timings. Writers (tables, html, plots, publish) import this module and only format what it computes, so every
format shows the same numbers whatever order they run in; it imports no writer (an import-linter contract)."""
from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from pathlib import Path
from typing import Optional

from . import crossover as xo
from . import decision, fmt, headline, schedules
from .cells import (BENCHMARK_KEY, BUDGET_KEY, Cell, adapter_fields, aggregate, carries_adapters, carries_energy,
                    cell_key, energy_fields, run_key)
from .curves import MIN_BUDGETS, fit_curves
from .merge import check_configs, store_folder
from .stats import best as _best
from .stats import sign as _sign
from .stats import adequate, closest_unproven, gap, lead, margin, significant, unsettled, welch_interval

# transferbench.modes.MODES' order (a test keeps them equal), without importing torch for a report
MODE_ORDER = ("scratch", "finetune", "lora", "linear-probe", "partial")  # peft-family modes sort after


@dataclasses.dataclass(frozen=True)
class Leaderboard:
    title: str
    sources: list[str]
    records: list[dict]  # the runs, each run_id once
    cells: tuple[Cell, ...]  # read-only, sorted: task, dataset, model, budget, mode
    budget_verdicts: list[dict]  # per task, dataset, model, budget
    crossovers: list[dict]  # per task, dataset, model
    prices: list[dict]  # each (device, price, date) that priced a run
    timings: list[dict] = dataclasses.field(default_factory=list)  # the last suite_timing.jsonl line per store
    headlines: list[dict] = dataclasses.field(default_factory=list)  # one plain line per task, dataset, model
    fits: dict = dataclasses.field(default_factory=dict)  # planner.CurveFit per (task, dataset, model, mode)
    # per task, dataset, model: what its modes held equal at each budget (schedules.equal_notes)
    equal: list[dict] = dataclasses.field(default_factory=list)
    decisions: list[dict] = dataclasses.field(default_factory=list)  # per benchmark: decision.decide

    @property
    def measures_energy(self) -> bool:
        """The runs carry energy fields (older stores do not: their tables keep no energy column)."""
        return carries_energy(self.records)

    @property
    def records_adapters(self) -> bool:
        """The runs record adapter_bytes (older stores do not: their tables keep no adapter column)."""
        return carries_adapters(self.records)

    @property
    def spent(self) -> tuple[float, float]:
        """Device-hours and USD of every run, failed ones included (they were paid too)."""
        return sum(c["device_hours_total"] for c in self.cells), sum(c["cost_usd_total"] for c in self.cells)

    @property
    def plannable(self) -> bool:
        """Some curve has enough budgets for the planner: the report then writes plan.md and plan.json."""
        return any(len(f.points) >= MIN_BUDGETS for f in self.fits.values())

    def tables(self) -> list[tuple[tuple[str, str], list[dict]]]:
        """Cells grouped per task and dataset (one table each)."""
        groups: dict[tuple, list] = defaultdict(list)
        for c in self.cells:
            groups[(c["task"], c["dataset"])].append(c)
        return list(groups.items())

    def failed(self) -> list[dict]:
        return [r for r in self.records if r.get("status") != "ok"]


def _compare_to_scratch(cells: list[dict]) -> None:
    scratch = {cell_key(c, BUDGET_KEY): c for c in cells if c["mode"] == "scratch" and c["n"]}
    for c in cells:
        base = scratch.get(cell_key(c, BUDGET_KEY))
        c["delta_vs_scratch"] = c["delta_ci"] = c["delta_significant"] = None
        if base is None or not c["n"]:
            continue
        c["delta_vs_scratch"] = c["metric_mean"] - base["metric_mean"]
        if c is not base:
            c["delta_ci"] = welch_interval(c, base)
            c["delta_significant"] = significant(c["delta_ci"])


def _mark_best(cells: list[dict]) -> None:
    """The best mean per task, dataset and budget, across models and modes (ties all marked)."""
    groups = defaultdict(list)
    for c in cells:
        c["best"] = False
        groups[(c["task"], c["dataset"], c["train_samples"])].append(c)
    for group in groups.values():
        best = _best(group)
        for c in group:
            c["best"] = best is not None and c["n"] > 0 and c["metric_mean"] == best["metric_mean"]


def _cost_per_point(cell: dict) -> Optional[float]:
    """USD per run divided by metric points (1 point = 0.01 of the metric, a percentage point of accuracy)."""
    if cell["cost_usd"] is None or not cell["n"] or not cell["higher_is_better"] or cell["metric_mean"] <= 0:
        return None
    return cell["cost_usd"] / (100 * cell["metric_mean"])


def _lead_text(state: str, rows: list[dict]) -> str:
    """The best mode's standing: 'wins (lead over each other mode significant; the closest, lora: +0.05 [...])'."""
    def one(r):
        ci = f" [{fmt.short(r['ci'][0])}, {fmt.short(r['ci'][1])}]" if r["ci"] else " (no interval: n=1)"
        p = f", Holm p {r['p_holm']:.2g}" if r["p_holm"] is not None else ""
        return f"{r['mode']} {fmt.short(r['diff'])}{ci}{p}"
    if state == "only":
        return "the only mode evaluated"
    if state == "wins":
        return f"wins (lead significant over every other mode; the closest: {one(rows[0])})"
    r = closest_unproven(rows)
    return f"ahead (lead over {one(r)}: " + ("not significant)" if r["significant"] is False else "one seed: no test)")


def _budget_verdict(key: tuple, group: list[dict]) -> Optional[dict]:
    """Best mode, whether it wins (stats.lead), the adequate modes (within the margin of the best) and the cheapest
    of them, each with its gap to the best and the gap's 95% interval."""
    top = _best(group)
    if top is None:
        return None
    scored = [c for c in group if c["n"]]
    state, rows = lead(top, [c for c in scored if c is not top])
    tol = margin(scored)
    close = [c for c in scored if adequate(c, top, tol)]
    by_cost = all(c["cost_usd"] is not None for c in close)
    price = "cost_usd" if by_cost else "device_hours"
    # a tie in price goes to the better metric
    cheapest = min(close, key=lambda c: (c[price] is None, c[price] or 0.0, -_sign(c) * c["metric_mean"]))
    gaps = {c["mode"]: gap(c, top) for c in close if c is not top}
    spend = fmt.money(cheapest["cost_usd"]) if by_cost else f"{fmt.hours(cheapest['device_hours'])} device-h"
    per_point = (f", {fmt.money(cheapest['cost_per_point'])} per {cheapest['metric_name']} point"
                 if cheapest["cost_per_point"] is not None else "")
    tied = ", ".join(f"{m} {_gap_text(*g)}" for m, g in gaps.items())
    text = (f"{key[2]}, {key[3]} examples: best {top['mode']}, {top['metric_name']} "
            f"{fmt.metric(top['metric_mean'])} {fmt.spread(top)}, {_lead_text(state, rows)}; "
            + (f"adequate (within the margin {tol:.4g} of the best): {tied}" if tied else
               f"no other mode within the margin {tol:.4g} of the best")
            + f"; cheapest adequate: {cheapest['mode']} ({fmt.metric(cheapest['metric_mean'])}, {spend} per run"
            f"{per_point})" + _provisional(group))
    g = gaps.get(cheapest["mode"]) if cheapest is not top else None
    return dict(zip(BUDGET_KEY, key), best_mode=top["mode"], state=state, lead=rows, margin=tol,
                adequate=[c["mode"] for c in close], cheapest_mode=cheapest["mode"], cheapest_by=price,
                cheapest_gap=g and g[0], cheapest_gap_ci=g and g[1], provisional=_still(group), text=text)


def _gap_text(diff: float, ci: Optional[tuple[float, float]]) -> str:
    return f"{fmt.short(diff)} [{fmt.short(ci[0])}, {fmt.short(ci[1])}]" if ci else f"{fmt.short(diff)} (n=1)"


def _still(cells: list[dict]) -> list[dict]:
    """The cells with runs still improving or too short to tell: a verdict built on them may change with training."""
    return [dict(mode=c["mode"], train_samples=c["train_samples"], still_improving=c["still_improving"],
                 too_short=c["too_short"], n=c["n"]) for c in cells if unsettled(c)]


def _provisional(cells: list[dict]) -> str:
    text = headline.unsettled_text(cells)
    return f"; provisional: {text}" if text else ""


def _crossover(key: tuple, group: list[dict]) -> dict:
    """The measured crossover (crossover.measured): the smallest budget from which scratch stays within the
    equivalence margin (stats.margin, the verdicts' "adequate") of the best transfer mode, and of each mode."""
    per_budget = defaultdict(list)
    for c in group:
        if c["n"] and c["train_samples"] is not None:
            per_budget[c["train_samples"]].append(c)
    means: dict[str, dict[int, float]] = defaultdict(dict)
    for budget, cs in per_budget.items():
        for c in cs:
            means[c["mode"]][budget] = c["metric_mean"]
    found = xo.measured(dict(means), {b: margin(cs) for b, cs in per_budget.items()},
                        _sign(group[0])) if "scratch" in means else []
    both = next((m for m in found if m["mode"] == xo.BEST), found[0] if found else None)
    prefix = f"{key[2]}: scratch within the margin of the best transfer mode:"
    if both is None:
        text = f"{prefix} no budget has both scratch and a transfer mode to compare"
    else:
        budgets = ", ".join(map(str, both["budgets"]))
        text = (f"{prefix} not reached within the budgets run ({budgets})" if both["crossover_budget"] is None else
                f"{prefix} from {both['crossover_budget']} examples on (budgets run: {budgets})")
        per_mode = [f"{m['mode']} " + ("not reached" if m["crossover_budget"] is None else
                                       f"from {m['crossover_budget']}") for m in found if m["mode"] != xo.BEST]
        text += f"; per mode: {', '.join(per_mode)}" if len(per_mode) > 1 else ""
    compared = [c for cs in per_budget.values() for c in cs]
    return dict(zip(BENCHMARK_KEY, key), crossover_budget=both and both["crossover_budget"],
                budgets=both["budgets"] if both else [], caught_up=[b for b, g in (both or {}).get("gaps", {}).items()
                                                                  if g <= margin(per_budget[b]) + 1e-12],
                per_mode={m["mode"]: m["crossover_budget"] for m in found if m["mode"] != xo.BEST},
                provisional=_still(compared), text=text + _provisional(compared))


def _multipliers(cells: list[dict], groups: dict, fits: dict) -> None:
    """Each transfer cell's data multiplier (crossover.multiplier) against its benchmark's fitted scratch curve."""
    for c in cells:
        scratch = fits.get((*cell_key(c, BENCHMARK_KEY), "scratch"))
        values = [r["metric"] for r in groups[cell_key(c)] if r.get("status") == "ok" and r.get("metric") is not None]
        c["data_multiplier"] = None
        if c["mode"] == "scratch" or scratch is None or not scratch.fitted or not values or not c["train_samples"]:
            continue
        m = xo.multiplier(scratch, c["mode"], int(c["train_samples"]), values)
        c["data_multiplier"] = {k: m[k] for k in ("scratch_budget", "lo", "hi", "multiplier", "multiplier_lo",
                                                  "multiplier_hi", "note", "trusted")}
        c["data_multiplier"]["scratch_status"] = scratch.status


def build(records: list[dict], title: str = "Leaderboard", sources=(), timings=()) -> Leaderboard:
    """The leaderboard of `records` (each run_id once: merge.load). Every value a writer shows is computed here;
    the cells come out read-only. Raises UserError when a cell's runs differ in config (check_configs)."""
    check_configs(records)
    groups = defaultdict(list)
    for r in records:
        groups[run_key(r)].append(r)
    cells = [aggregate(key, rs) for key, rs in groups.items()]
    order = {m: i for i, m in enumerate(MODE_ORDER)}
    cells.sort(key=lambda c: (str(c["task"]), str(c["dataset"]), str(c["model"]), c["train_samples"] or 0,
                              order.get(c["mode"], 99), str(c["mode"])))
    for c in cells:  # the rate(s) each cell trained at, and what each mode trained for
        c.update(schedules.lr_fields(groups[cell_key(c)]))
    schedules.schedule_texts(cells, groups)
    equal = schedules.equal_notes(cells, groups)
    _compare_to_scratch(cells)
    _mark_best(cells)
    fits = fit_curves(records)  # curves with fewer than MIN_BUDGETS budgets return at once, unfitted
    _multipliers(cells, groups, fits)
    # energy and adapter size only where runs carry them: older stores keep their cells and columns
    energy, adapters = carries_energy(records), carries_adapters(records)
    for c in cells:
        c["cost_per_point"] = _cost_per_point(c)
        ok = [r for r in groups[cell_key(c)] if r.get("status") == "ok"]
        if energy:
            c.update(energy_fields(ok))
        if adapters:
            c.update(adapter_fields(ok))
    cells = tuple(map(Cell, cells))
    by_budget, by_model = defaultdict(list), defaultdict(list)
    for c in cells:
        by_budget[cell_key(c, BUDGET_KEY)].append(c)
        by_model[cell_key(c, BENCHMARK_KEY)].append(c)
    verdicts = [v for key, g in by_budget.items() if (v := _budget_verdict(key, g))]
    crossovers = [_crossover(key, g) for key, g in by_model.items()]
    prices = sorted({(str(r.get("device_name")), r.get("price_per_device_hour"), r.get("price_date"))
                     for r in records}, key=str)
    return Leaderboard(
        title=title, sources=[str(s) for s in sources], records=records, cells=cells, budget_verdicts=verdicts,
        crossovers=crossovers,
        prices=[dict(device_name=d, price_per_device_hour=p, price_date=t) for d, p, t in prices],
        timings=list(timings), fits=fits, headlines=headline.lines(cells, verdicts, crossovers, fits), equal=equal,
        decisions=decision.decide(cells, verdicts, crossovers))


def last_timing(folder: Path) -> Optional[dict]:
    """The last invocation's line of `suite_timing.jsonl` (written by run_suite), or None."""
    path = Path(folder) / "suite_timing.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for line in reversed(lines):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


def suite_timings(paths) -> list[dict]:
    """The last suite_timing.jsonl line of each store that has one, in the order given."""
    return [t for p in paths if (t := last_timing(store_folder(p)))]


def default_title(records: list[dict], paths) -> str:
    names = sorted({str(r.get("suite")) for r in records}) or [Path(paths[0]).name]
    return f"Leaderboard: {', '.join(names)}"
