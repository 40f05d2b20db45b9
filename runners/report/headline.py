"""The headline: one plain line per benchmark (task, dataset, model) that answers "which mode, at which budget",
claiming only what the numbers support. A mode "wins" at a budget only when its lead over every other mode is
significant (stats.lead: Welch tests, Holm–Bonferroni; otherwise it is "ahead", naming the closest mode whose lead is
not); the cheapest adequate mode is the cheapest within the equivalence margin of the best (stats.margin); only
significant claims resting on settled cells are bold; a predicted crossover is said only from usable fits (planner
status ok), as a prediction, with how far it extrapolates; cells with runs still improving or too short to tell make
the line provisional. Pure computation on the cells, the verdicts and the planner's fits: every writer renders the
same parts."""
from __future__ import annotations

from collections import defaultdict
from typing import Optional

from . import crossover as xo
from . import fmt
from .cells import BENCHMARK_KEY, cell_key
from .curves import MIN_BUDGETS, CurveFit
from .stats import best, closest_unproven, margin, unsettled

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


def _standing(verdict: dict, cells: list[dict]) -> tuple[str, str, bool, str]:
    """(best mode, state, provisional, closest mode whose lead is not significant) at one budget, from its verdict
    (stats.lead). A win that rests on an unsettled cell is provisional: said so, never bold."""
    closest = closest_unproven(verdict["lead"])
    provisional = verdict["state"] == "wins" and any(unsettled(c) for c in cells)
    return verdict["best_mode"], verdict["state"], provisional, closest["mode"] if closest else ""


def _who_leads(by_budget: dict[int, list[dict]], verdicts: dict) -> tuple[list[Part], set]:
    budgets = sorted(by_budget)
    standings = {b: _standing(verdicts[b], cs) for b, cs in by_budget.items()}
    segments = _runs([(b, standings[b][:3]) for b in budgets])
    parts: list[Part] = []
    for i, ((mode, state, provisional), bs) in enumerate(segments):
        notes = [f"{_span(bs)} examples"] if len(segments) == 1 and len(budgets) > 1 else []
        at = "" if len(budgets) == 1 else " at every budget run" if notes else f" at {_span(bs)} examples"
        closest = "/".join(dict.fromkeys(standings[b][3] for b in bs))
        if state == "one seed":
            notes.append(f"one seed: no test against {closest}")
        elif state == "ahead":
            notes.append(f"lead over {closest} not significant")
        elif provisional:
            notes.append("provisional")
        verb = {"wins": "wins", "only": "is the only mode evaluated"}.get(state, "ahead")
        text = f"{mode} {verb}{at}" + (f" ({'; '.join(notes)})" if notes else "")
        parts += [(", ", False)] if i else []
        parts.append((text, state == "wins" and not provisional))
    return parts, {mode for (mode, _, _), _ in segments}


def _vs_scratch(by_budget: dict[int, list[dict]], named: bool) -> list[Part]:
    """The best mode's Δ vs scratch at the smallest and the largest budget, each with its significance (bold only
    when significant and neither cell is unsettled)."""
    budgets = sorted(by_budget)
    quoted = []
    for b in dict.fromkeys([budgets[0], budgets[-1]]):
        top = best(by_budget[b])
        if top["mode"] != "scratch" and top["delta_vs_scratch"] is not None:
            scratch = next(c for c in by_budget[b] if c["mode"] == "scratch")
            quoted.append((b, top, unsettled(top) or unsettled(scratch)))
    parts: list[Part] = []
    for i, (b, c, provisional) in enumerate(quoted):
        sig = c["delta_significant"]
        why = "one seed: no interval" if sig is None else "significant" if sig else "not significant"
        why += ", provisional" if sig and provisional else ""
        at = "" if len(budgets) == 1 else f" at {fmt.count(b)}"
        who = f"{c['mode']} " if named else ""
        parts += [(", " if i else "vs scratch: ", False), (f"{who}{fmt.short(c['delta_vs_scratch'])}{at} ({why})",
                                                           bool(sig) and not provisional)]
    return parts


def _predicted(fits: dict[str, CurveFit], margin: float) -> tuple[Optional[dict], str]:
    """The planner's crossover with the best transfer mode when every fit involved is trusted (status ok or flat),
    else (None, why not)."""
    if "scratch" not in fits or len(fits["scratch"].points) < MIN_BUDGETS:
        return None, ""  # too few budgets: no prediction, and nothing to say about it
    found = xo.predicted(fits, margin, MAX_FACTOR)
    pred = next((p for p in found if p["mode"] == xo.BEST), found[-1])
    if "limit" not in pred:
        return None, pred.get("reason", "")
    if pred["untrusted"]:
        by_status: dict[str, list[str]] = defaultdict(list)
        for m in pred["untrusted"]:
            by_status[fits[m].status].append(m)
        return None, "; ".join(f"{', '.join(ms)}: {status}" for status, ms in by_status.items())
    return pred, ""


def _crossover(measured: dict, fits: dict[str, CurveFit], single: bool, margin: float
               ) -> tuple[list[Part], Optional[dict]]:
    if not measured["budgets"]:
        return [("no budget has both scratch and a transfer mode to compare", False)], None
    where = "" if single else " at any budget run"
    if measured["crossover_budget"] is not None:
        n = measured["crossover_budget"]
        at = ("" if single else " at every budget run" if n == measured["budgets"][0]
              else f" from {fmt.count(n)} examples on")
        return [(f"scratch catches up with the best transfer mode (within the margin){at}", False)], None
    if measured["caught_up"]:  # at some budgets, not up to the largest: no crossover, but not "never" either
        spans = " and ".join(_span(bs) for ok, bs in _runs([(b, b in measured["caught_up"])
                                                            for b in measured["budgets"]]) if ok)
        where = f" except at {spans} examples"
    pred, why = _predicted(fits, margin)
    largest = max(measured["budgets"])
    behind = f"scratch does not catch up with the best transfer mode{where}"
    if pred is None:
        return [(behind + (f" (no crossover prediction: {why})" if why else ""), False)], None
    said = xo.verdict(pred)
    if said == "not reached":
        return [(f"{behind}, and no crossover predicted below {fmt.examples(pred['limit'])} examples (fitted curves, "
                 f"{pred['limit'] / largest:.1f}× the largest budget run)", False)], None
    n = pred["crossover_budget"]
    if said == "cannot tell" or n <= largest:  # among the budgets run the measurement is what counts
        return [(behind + ("; the fitted curves cannot tell whether it does below "
                           f"{fmt.examples(pred['limit'])} examples" if said == "cannot tell" else ""), False)], None
    ci = f" [{fmt.examples(pred['lo'])}, {fmt.examples(pred['hi'])}]" if pred["lo"] is not None else ""
    claim = dict(n=n, lo=pred["lo"], hi=pred["hi"], factor=n / largest, largest_measured=largest)
    return [(f"{behind}; predicted to catch up at ~{fmt.examples(n)} examples{ci} (fitted curves, {n / largest:.1f}× "
             "the largest budget run)", False)], claim


def _transferred(group: list[dict]) -> list[Part]:
    """The data multiplier of the best transfer cell at the smallest budget: 'lora at 45 examples ≈ scratch at ~78
    (1.7× the data) [0.97×, 2.7×]'."""
    cells = [c for c in group if c.get("data_multiplier") and c["n"]]
    if not cells:
        return []
    smallest = min(c["train_samples"] for c in cells)
    c = best([c for c in cells if c["train_samples"] == smallest])
    m = c["data_multiplier"]
    head = f"{c['mode']} at {fmt.count(c['train_samples'])} examples"
    guess = "" if m["trusted"] else f" (a guess: scratch's fit: {m['scratch_status']})"
    if m["scratch_budget"] is None:
        return [(f"{head}: scratch not predicted to reach its {fmt.metric(c['metric_mean'])}{guess}", False)]
    return [(f"{head} ≈ scratch at {fmt.multiplier(m)}{', extrapolated' if m['note'] == 'extrapolated' else ''}"
             f"{guess}", False)]


def _gap(v: dict) -> str:
    ci = v["cheapest_gap_ci"]
    return f" ({fmt.short(v['cheapest_gap'])}" + (f" [{fmt.short(ci[0])}, {fmt.short(ci[1])}])" if ci else ", n=1)")


def _cheapest(verdicts: list[dict], single: bool) -> list[Part]:
    """Budgets where a cheaper mode than the best is adequate (within the margin of it); where a span is one budget,
    its gap to the best with the gap's 95% interval."""
    ordered = sorted(verdicts, key=lambda v: v["train_samples"] or 0)
    by_budget = {v["train_samples"]: v for v in ordered}
    cheaper = [(v["train_samples"], v["cheapest_mode"] if v["cheapest_mode"] != v["best_mode"] else None)
               for v in ordered]
    spans: dict[str, list[str]] = defaultdict(list)
    for mode, bs in _runs(cheaper):
        if mode is not None:
            gap = _gap(by_budget[bs[0]]) if len(bs) == 1 else ""
            spans[mode].append(gap.lstrip() if single else f"{_span(bs)} examples{gap}")
    if not spans:
        return []
    text = ", ".join(f"{mode} {' and '.join(at)}" if single else f"{mode} at {' and '.join(at)}"
                     for mode, at in spans.items())
    return [(f"cheapest adequate mode (within the margin of the best): {text}", False)]


def unsettled_text(cells: list[dict], most: int = 3) -> str:
    """fmt.still_improving's list, then the cells whose runs were too short to tell ('too short to tell: lora at 16
    examples (3/3 runs) ...', at most `most` named); '' when every cell settled."""
    still = fmt.still_improving(cells, most)
    short = [c for c in cells if c.get("too_short")]
    modes = list(dict.fromkeys(c["mode"] for c in short))
    named = sorted(short, key=lambda c: (modes.index(c["mode"]), c["train_samples"] or 0))[:most]
    parts = [f"{mode} at " + " and ".join(f"{fmt.count(c['train_samples'])} examples ({c['too_short']}/{c['n']} "
                                          "runs)" for c in named if c["mode"] == mode)
             for mode in dict.fromkeys(c["mode"] for c in named)]
    more = len(short) - len(named)
    text = ", ".join(parts) + (f", and {more} more cell{'s' * (more > 1)}" if more else "")
    return "; ".join(filter(None, [still, text and f"too short to tell: {text}"]))


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
    leads, leaders = _who_leads(by_budget, {v["train_samples"]: v for v in verdicts})
    clauses = [leads, _vs_scratch(by_budget, named=len(leaders) > 1)]
    tol = max(margin(cs) for cs in by_budget.values())
    cross, claim = _crossover(measured, fits, single, tol) if measured else ([], None)
    clauses += [cross, _transferred(group), _cheapest(verdicts, single)]
    still = unsettled_text([c for cs in by_budget.values() for c in cs])
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
