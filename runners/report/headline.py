"""The headline: one plain line per benchmark (task, dataset, model) that answers "which mode, at which budget",
claiming only what the numbers support. A mode "wins" at a budget only when its lead over the runner-up mode has a
95% Welch interval that excludes 0 (otherwise it is "ahead", with the reason); only significant claims are bold; a
predicted crossover is said only from usable fits (planner status ok), as a prediction, with how far it
extrapolates; cells with runs still improving make the line provisional. Pure computation on the cells, the
verdicts and the planner's fits: every writer renders the same parts."""
from __future__ import annotations

from collections import defaultdict
from typing import Optional

from . import fmt, planner
from .cells import BENCHMARK_KEY, cell_key
from .curves import MIN_BUDGETS, CurveFit
from .stats import best, significant, welch_interval

MAX_FACTOR = 4.0  # planner.plan's default: no prediction further than this past the largest budget measured
PREFIXES = ("builtin:", "hub:")

Part = tuple[str, bool]  # (text, bold: a significant claim)


def _span(budgets: list[int]) -> str:
    return fmt.count(budgets[0]) if len(budgets) == 1 else f"{fmt.count(budgets[0])}–{fmt.count(budgets[-1])}"


def _runs(items: list[tuple[int, object]]) -> list[tuple[object, list[int]]]:
    """Consecutive budgets sharing a value, in budget order: [(value, [budgets])]."""
    out: list = []
    for budget, value in items:
        if out and out[-1][0] == value:
            out[-1][1].append(budget)
        else:
            out.append((value, [budget]))
    return out


def _standing(cells: list[dict]) -> tuple[str, str, str]:
    """(best mode, state, runner-up mode) at one budget. state: wins | ahead | one seed | only."""
    top = best(cells)
    runner = best([c for c in cells if c["mode"] != top["mode"]])
    if runner is None:
        return top["mode"], "only", ""
    lead = significant(welch_interval(top, runner))
    return top["mode"], "one seed" if lead is None else "wins" if lead else "ahead", runner["mode"]


def _who_leads(by_budget: dict[int, list[dict]]) -> tuple[list[Part], set]:
    budgets = sorted(by_budget)
    standings = {b: _standing(cs) for b, cs in by_budget.items()}
    segments = _runs([(b, standings[b][:2]) for b in budgets])
    parts: list[Part] = []
    for i, ((mode, state), bs) in enumerate(segments):
        notes = [f"{_span(bs)} examples"] if len(segments) == 1 and len(budgets) > 1 else []
        at = "" if len(budgets) == 1 else " at every budget run" if notes else f" at {_span(bs)} examples"
        runners = "/".join(dict.fromkeys(standings[b][2] for b in bs))
        if state == "one seed":
            notes.append("one seed: no interval")
        elif state == "ahead":
            notes.append(f"lead over {runners} not significant")
        verb = {"wins": "wins", "only": "is the only mode evaluated"}.get(state, "ahead")
        text = f"{mode} {verb}{at}" + (f" ({'; '.join(notes)})" if notes else "")
        parts += [(", ", False)] if i else []
        parts.append((text, state == "wins"))
    return parts, {mode for (mode, _), _ in segments}


def _vs_scratch(by_budget: dict[int, list[dict]], named: bool) -> list[Part]:
    """The best mode's Δ vs scratch at the smallest and the largest budget, each with its significance."""
    budgets = sorted(by_budget)
    quoted = []
    for b in dict.fromkeys([budgets[0], budgets[-1]]):
        top = best(by_budget[b])
        if top["mode"] != "scratch" and top["delta_vs_scratch"] is not None:
            quoted.append((b, top))
    parts: list[Part] = []
    for i, (b, c) in enumerate(quoted):
        sig = c["delta_significant"]
        why = "one seed: no interval" if sig is None else "significant" if sig else "not significant"
        at = "" if len(budgets) == 1 else f" at {fmt.count(b)}"
        who = f"{c['mode']} " if named else ""
        parts += [(", " if i else "vs scratch: ", False), (f"{who}{fmt.short(c['delta_vs_scratch'])}{at} ({why})",
                                                           bool(sig))]
    return parts


def _predicted(fits: dict[str, CurveFit]) -> tuple[Optional[dict], str]:
    """The planner's crossover when its fits are usable (scratch's and the best transfer mode's status ok), else
    (None, why not)."""
    if "scratch" not in fits or len(fits["scratch"].points) < MIN_BUDGETS:
        return None, ""  # too few budgets: no prediction, and nothing to say about it
    pred = planner.crossover(fits, MAX_FACTOR)
    involved = ["scratch"] + ([pred["best_mode"]] if pred.get("best_mode") else [])
    bad = [f"{m}: {fits[m].status}" for m in involved if fits[m].status != "ok"] + [
        f"{m}: poor fit" for m in pred.get("poor", []) if m not in involved]
    if "limit" not in pred or bad:
        return None, "; ".join(bad) or pred.get("reason", "")
    return pred, ""


def _crossover(measured: dict, fits: dict[str, CurveFit], single: bool) -> tuple[list[Part], Optional[dict]]:
    if not measured["budgets"]:
        return [("no budget has both scratch and a transfer mode to compare", False)], None
    where = "" if single else " at any budget run"
    if measured["crossover_budget"] is not None:
        n = measured["crossover_budget"]
        at = ("" if single else " at every budget run" if n == measured["budgets"][0]
              else f" from {fmt.count(n)} examples on")
        return [(f"scratch within one std of the best transfer mode{at}", False)], None
    if measured["within_one_std"]:  # at some budgets, not up to the largest: no crossover, but not "never" either
        spans = " and ".join(_span(bs) for ok, bs in _runs([(b, b in measured["within_one_std"])
                                                            for b in measured["budgets"]]) if ok)
        where = f" except at {spans} examples"
    pred, why = _predicted(fits)
    largest = max(measured["budgets"])
    if pred is None:
        return [(f"scratch not within one std of the best transfer mode{where}"
                 + (f" (no crossover prediction: {why})" if why else ""), False)], None
    if pred["crossover_budget"] is None:
        return [(f"scratch not within one std of the best transfer mode{where}, and no crossover predicted below "
                 f"{fmt.examples(pred['limit'])} examples (fitted curves, {pred['limit'] / largest:.1f}× the "
                 "largest budget run)", False)], None
    n = pred["crossover_budget"]
    if n <= largest:  # the fit places it among the budgets run, where the measurement says otherwise: trust that
        return [(f"scratch not within one std of the best transfer mode{where}", False)], None
    claim = dict(n=n, mode=pred["best_mode"], factor=n / largest, largest_measured=largest, std=pred["std"])
    # one seed per budget: no std to come within, so the prediction is of scratch reaching the mode itself
    near = "come within one std of" if fits[pred["best_mode"]].seed_std else "reach"
    return [(f"scratch predicted to {near} {pred['best_mode']} at ~{fmt.examples(n)} examples "
             f"(fitted curves, {n / largest:.1f}× the largest budget run)", False)], claim


def _cheapest(verdicts: list[dict], single: bool) -> list[Part]:
    """Budgets where a cheaper mode than the best is within one std of it."""
    cheaper = [(v["train_samples"], v["cheapest_mode"] if v["cheapest_mode"] != v["best_mode"] else None)
               for v in sorted(verdicts, key=lambda v: v["train_samples"] or 0)]
    spans: dict[str, list[str]] = defaultdict(list)
    for mode, bs in _runs(cheaper):
        if mode is not None:
            spans[mode].append(_span(bs))
    if not spans:
        return []
    text = ", ".join(mode if single else f"{mode} at {' and '.join(at)} examples" for mode, at in spans.items())
    return [(f"cheapest mode within one std of the best: {text}", False)]


def _name(task, dataset, model, ambiguous: bool) -> str:
    short = next((str(dataset)[len(p):] for p in PREFIXES if str(dataset).startswith(p)), str(dataset))
    return ", ".join(map(str, ([task] if ambiguous else []) + [short, model]))


def _line(name: str, group: list[dict], verdicts: list[dict], measured: dict, fits: dict) -> dict:
    by_budget: dict[int, list[dict]] = defaultdict(list)
    for c in group:
        if c["n"] and c["train_samples"] is not None:
            by_budget[c["train_samples"]].append(c)
    if not by_budget:
        failed = sum(c["failed"] for c in group)
        return dict(parts=[(f"{name}: no evaluated run" + (f" ({failed} failed)" if failed else ""), False)],
                    predicted_crossover=None)
    single = len(by_budget) == 1
    head = f"{name} (one budget: {fmt.count(next(iter(by_budget)))} examples): " if single else f"{name}: "
    leads, leaders = _who_leads(by_budget)
    clauses = [leads, _vs_scratch(by_budget, named=len(leaders) > 1)]
    cross, claim = _crossover(measured, fits, single) if measured else ([], None)
    clauses += [cross, _cheapest(verdicts, single)]
    still = fmt.still_improving([c for cs in by_budget.values() for c in cs])
    clauses.append([(f"provisional: {still}", False)] if still else [])
    parts: list[Part] = [(head, False)]
    for clause in filter(None, clauses):
        parts += ([("; ", False)] if len(parts) > 1 else []) + clause
    return dict(parts=parts, predicted_crossover=claim, provisional=bool(still), budgets=sorted(by_budget))


def lines(cells: list[dict], verdicts: list[dict], crossovers: list[dict], fits: dict) -> list[dict]:
    """One headline per (task, dataset, model), in the cells' order: {task, dataset, model, parts [[text, bold]],
    text (plain), markdown, provisional, predicted_crossover ({n, mode, factor, ...} or None), budgets}."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for c in cells:
        groups[cell_key(c, BENCHMARK_KEY)].append(c)
    tasks = defaultdict(set)
    for task, dataset, _ in groups:
        tasks[dataset].add(task)
    out = []
    for key, group in groups.items():
        mine = lambda v: cell_key(v, BENCHMARK_KEY) == key  # noqa: E731
        by_mode = {k[3]: f for k, f in fits.items() if k[:3] == key}
        line = _line(_name(*key, ambiguous=len(tasks[key[1]]) > 1), group, [v for v in verdicts if mine(v)],
                     next((x for x in crossovers if mine(x)), None), by_mode)
        parts = [[t, b] for t, b in line.pop("parts") if t]
        out.append(dict(task=key[0], dataset=key[1], model=key[2], parts=parts, text=plain(parts),
                        markdown=markdown(parts), **{"provisional": False, "budgets": [], **line}))
    return out


def plain(parts) -> str:
    return "".join(t for t, _ in parts)


def markdown(parts) -> str:
    return "".join(f"**{t}**" if b else t.replace("*", "\\*") for t, b in parts)
