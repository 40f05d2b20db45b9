"""The decision a reader acts on, per benchmark (task, dataset, model): which mode to use over which range of budgets,
what it costs and what it beats significantly, and whether scratch catches up. The mode to use at a budget is the
verdict's cheapest adequate mode (the cheapest within the equivalence margin of the best: leaderboard._budget_verdict);
consecutive budgets with the same mode form one range. "Beats significantly" is stats.lead's test (Welch, Holm over
the other modes) and is a firm claim only when neither cell is unsettled (still improving, too short to tell); a
claim resting on an unsettled cell is listed as provisional and never bold. Pure computation: every writer renders
these rows and lines."""
from __future__ import annotations

from collections import defaultdict
from typing import Optional

from . import fmt
from .cells import BENCHMARK_KEY, cell_key
from .headline import PREFIXES
from .stats import best, lead, unsettled

CHEAPER = 1.25  # "k× cheaper" is said from this factor on; below it the recommended mode just ties the best

UNSETTLED = " — provisional: runs still improving or too short to tell"
EXPLAIN = ("Use: the cheapest mode whose mean is within the equivalence margin of the best at that budget (\"ties "
           "the best\"), else the best. Beats significantly: its lead over that mode has a Holm-adjusted Welch "
           "p ≤ 0.05 at every budget of the range; \"(provisional)\": a cell of the comparison was still improving or "
           "too short to tell, so the claim is not firm and never bold. Cost per run (USD; device-hours where a run "
           "has no price), at the range's ends.")


def short_name(dataset, model) -> str:
    data = next((str(dataset)[len(p):] for p in PREFIXES if str(dataset).startswith(p)), str(dataset))
    return f"{data} · {model}"


def _cost(c: dict, by: str) -> tuple[Optional[float], str]:
    """(value, unit) of what one run of the cell costs, in what the verdict compared: USD, else device-hours."""
    return (c["cost_usd"], "usd") if by == "cost_usd" else (c["device_hours"], "device-h")


def cost_text(value: Optional[float], unit: str) -> str:
    if value is None:
        return fmt.NONE
    return fmt.money_short(value) if unit == "usd" else f"{fmt.short_significant(value)} device-h"


def _at_budget(budget: int, cells: list[dict], verdict: dict) -> dict:
    rec = next(c for c in cells if c["mode"] == verdict["cheapest_mode"] and c["n"])
    top = best(cells)
    _, rows = lead(rec, [c for c in cells if c is not rec and c["n"]])
    by_mode = {c["mode"]: c for c in cells}
    beaten = {r["mode"]: unsettled(rec) or unsettled(by_mode[r["mode"]]) for r in rows if r["significant"]}
    by = verdict["cheapest_by"]
    rec_cost, top_cost = _cost(rec, by)[0], _cost(top, by)[0]
    factor = top_cost / rec_cost if rec is not top and rec_cost and top_cost else None
    return dict(budget=budget, mode=rec["mode"], best_mode=top["mode"], metric=rec["metric_mean"],
                metric_name=rec["metric_name"], cost=_cost(rec, by), cheaper=factor, beaten=beaten,
                provisional=unsettled(rec), multiplier=rec.get("data_multiplier"),
                others=[c["mode"] for c in cells if c["n"] and c is not rec])


def _ranges(points: list[dict]) -> list[dict]:
    """Consecutive budgets with the same recommended mode, merged; a range beats a mode only if every budget does
    (provisional if any budget's claim is)."""
    out: list[list[dict]] = []
    for p in points:
        if out and out[-1][-1]["mode"] == p["mode"]:
            out[-1].append(p)
        else:
            out.append([p])
    rows = []
    for ps in out:
        common = set.intersection(*(set(p["beaten"]) for p in ps))
        others = sorted(set().union(*(p["others"] for p in ps)) - {ps[0]["mode"]})
        beaten = {m: any(p["beaten"][m] for p in ps) for m in sorted(common)}
        factors = [p["cheaper"] for p in ps]
        rows.append(dict(budgets=[p["budget"] for p in ps], mode=ps[0]["mode"],
                         ties_best=any(p["mode"] != p["best_mode"] for p in ps),
                         cheaper=min(factors) if all(f is not None for f in factors) else None,
                         metric=[ps[0]["metric"], ps[-1]["metric"]], metric_name=ps[0]["metric_name"],
                         cost=[ps[0]["cost"], ps[-1]["cost"]], beaten=beaten,
                         provisional=any(p["provisional"] for p in ps), last=ps[-1], others=others))
    return rows


def _span(budgets: list[int], all_budgets: list[int]) -> str:
    lo, hi = budgets[0], budgets[-1]
    if len(all_budgets) == 1:
        return f"at {fmt.count(lo)} examples"
    if lo == all_budgets[0] and hi == all_budgets[-1]:
        return f"at every budget run ({fmt.count(lo)}–{fmt.count(hi)} examples)"
    if lo == all_budgets[0]:
        return f"up to {fmt.count(hi)} examples"
    if hi == all_budgets[-1]:
        return f"from {fmt.count(lo)} examples"
    return f"at {fmt.count(lo)}–{fmt.count(hi)} examples" if lo != hi else f"at {fmt.count(lo)} examples"


def _why(row: dict) -> str:
    if not row["ties_best"]:
        open_ = [m for m in row["others"] if m not in row["beaten"] or row["beaten"][m]]
        return "beats every other mode" if not open_ else "best mean"
    if row["cheaper"] is not None and row["cheaper"] >= CHEAPER:
        return f"ties the best, {fmt.ratio(row['cheaper'])} cheaper"
    return "ties the best, cheaper"


def _use(row: dict, budgets: list[int]) -> str:
    span = _span(row["budgets"], budgets)
    if span.endswith(")"):  # "at every budget run (20–80 examples)": one parenthesis for both
        return f"{row['mode']} {span[:-1]}; {_why(row)})"
    return f"{row['mode']} {span} ({_why(row)})"


def _scratch(crossover: Optional[dict], rows: list[dict], budgets: list[int]) -> str:
    if crossover is None or not crossover["budgets"] or all(r["mode"] == "scratch" for r in rows):
        return ""
    n = crossover["crossover_budget"]
    if n is not None:
        return ("scratch is as good at every budget run" if n == crossover["budgets"][0] else
                f"scratch catches up from {fmt.count(n)} examples")
    text = f"scratch does not catch up within {fmt.count(budgets[-1])} examples"
    m = next((r["last"]["multiplier"] for r in reversed(rows) if r["mode"] != "scratch"), None)
    if m and m["multiplier"] is not None:
        text += f" (needs ~{fmt.ratio(m['multiplier'])} the data{'' if m['trusted'] else ', a rough guess'})"
    elif m and m["scratch_budget"] is None:
        text += " (not predicted to reach it)"
    return text


def decide(cells: list[dict], verdicts: list[dict], crossovers: list[dict]) -> list[dict]:
    """Per benchmark, in the cells' order: {task, dataset, model, name, text, provisional, rows: [{budgets, mode,
    ties_best, cheaper, metric [lo end, hi end], cost [(value, unit) at each end], beaten {mode: provisional}}]}."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for c in cells:
        groups[cell_key(c, BENCHMARK_KEY)].append(c)
    by_budget = {(v["task"], v["dataset"], v["model"], v["train_samples"]): v for v in verdicts}
    out = []
    for key, group in groups.items():
        budgets = sorted({c["train_samples"] for c in group if c["n"] and c["train_samples"] is not None
                          and (*key, c["train_samples"]) in by_budget})
        name = short_name(key[1], key[2])
        if not budgets:
            out.append(dict(zip(BENCHMARK_KEY, key), name=name, rows=[], provisional=False,
                            text=f"{name}: no evaluated run to decide from"))
            continue
        points = [_at_budget(b, [c for c in group if c["train_samples"] == b], by_budget[(*key, b)])
                  for b in budgets]
        rows = _ranges(points)
        uses = ", ".join(_use(r, budgets) for r in rows)
        crossover = next((x for x in crossovers if cell_key(x, BENCHMARK_KEY) == key), None)
        clauses = [f"use {uses}", _scratch(crossover, rows, budgets)]
        provisional = any(r["provisional"] for r in rows)
        text = f"{name}: " + "; ".join(filter(None, clauses)) + (UNSETTLED if provisional else "")
        for r in rows:
            r.pop("last")
        out.append(dict(zip(BENCHMARK_KEY, key), name=name, rows=rows, provisional=provisional, text=text))
    return out


def range_text(row: dict) -> str:
    lo, hi = row["budgets"][0], row["budgets"][-1]
    return fmt.count(lo) if lo == hi else f"{fmt.count(lo)}–{fmt.count(hi)}"


def span_of(values: list, text) -> str:
    a, b = text(values[0]), text(values[-1])
    return a if a == b else f"{a}–{b}"


def table_rows(decisions: list[dict]) -> list[dict]:
    """The decision table's rows as text: benchmark (first row of each only), examples, use, metric, cost per run,
    beats significantly [(mode, firm)]."""
    out = []
    for d in decisions:
        for i, r in enumerate(d["rows"]):
            use = r["mode"] + (" (ties the best)" if r["ties_best"] else "")
            out.append(dict(benchmark=d["name"] if i == 0 else "", examples=range_text(r), use=use,
                            provisional=r["provisional"],
                            metric=span_of(r["metric"], lambda x: f"{x:.2f}") + f" {r['metric_name']}",
                            cost=span_of(r["cost"], lambda c: cost_text(*c)),
                            beats=[(m, not prov) for m, prov in r["beaten"].items()]))
    return out


def beats_text(beats: list[tuple[str, bool]], bold=lambda t: t) -> str:
    if not beats:
        return fmt.NONE
    return ", ".join(bold(m) if firm else f"{m} (provisional)" for m, firm in beats)
