"""`transferbench plan`: the planner's output as GitHub Markdown (printed; plan.md) and JSON (plan.json). Formats only
what runners.planner computes; writes only where it is told to."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from transferbench.errors import UserError

from . import crossover as xo
from . import fmt
from .curves import BOOTSTRAP, LEVEL, MIN_BUDGETS, OK_BUDGETS, R2_MIN
from .families import FAMILIES
from .merge import load
from .planner import AGREES, HINDCAST, plan

MODEL_LINE = (
    "Each curve (task, dataset, model, mode) is fitted by least squares on every seed's point with each family — "
    + "; ".join(f"{n}: {f.formula}" for n, f in FAMILIES.items())
    + " (lower is better: the signs flipped; the asymptote a in [0, 1] for metrics measured there) — and keeps the "
    f"family with the smallest error predicting its largest budget from the others (AICc with fewer than {OK_BUDGETS} "
    f"budgets). Intervals ({LEVEL:.0%}): for a cell's measured mean (not only the curve's), from {BOOTSTRAP} "
    "parametric-bootstrap refits that redraw each seed (the pooled seed std) and each budget's misfit (the cell "
    "means' scatter about the fit beyond the seeds' own), half from the chosen family and half shared by every family "
    "by AICc weight, plus a new cell mean's seed noise (fixed RNG). Status: ok needs "
    f"{OK_BUDGETS}+ budgets and R² ≥ {R2_MIN} on the cell means; \"few budgets\" ({MIN_BUDGETS}), \"poor fit\" and "
    "\"ill-behaved\" (a mean drops beyond the seeds' noise as the budget grows) are shown, not trusted; \"flat\": the "
    f"cell means vary less than the seeds do, so the prediction is their mean; fewer than {MIN_BUDGETS} budgets: not "
    "fitted. Cost per run: least-squares line α + β·n over the ok runs.")
CROSSOVER_LINE = (
    "Scratch catches up with a mode at a budget when its mean trails that mode's by at most the equivalence margin "
    "(the leaderboard's \"adequate\"); the crossover n* is the smallest budget from which it does so at every larger "
    "one. Data multiplier: the scratch budget at which scratch's fitted curve reaches a transfer cell's measured mean, "
    f"÷ that cell's budget; \"past the budgets measured\" up to {xo.EXTRAPOLATED:g}× scratch's largest budget, "
    "\"extrapolated\" beyond, \"not reached\" where "
    "scratch's fitted asymptote is below.")


def _metric_ci(p: dict) -> str:
    interval = "" if p.get("lo") is None else f" [{fmt.metric(p['lo'])}, {fmt.metric(p['hi'])}]"
    return f"{fmt.metric(p.get('mean'))}{interval}"


def _name(e: dict, mode: bool = False) -> str:
    return f"{e['dataset']}, {e['model']}" + (f", {e['mode']}" if mode else "")


def _ci(lo, hi, limit=None) -> str:
    if lo is None:
        return f"[> {fmt.examples(limit)}]" if limit else ""
    return f"[{fmt.examples(lo)}, {fmt.examples(hi) if hi is not None else '> ' + fmt.examples(limit)}]"


def measured_text(m: dict) -> str:
    who = "the best transfer mode" if m["mode"] == xo.BEST else m["mode"]
    if m["crossover_budget"] is None:
        return f"scratch vs {who}: not reached up to {m['largest']:,} examples (measured)"
    at = "at every budget run" if m["crossover_budget"] == m["budgets"][0] else f"from {m['crossover_budget']:,} on"
    return f"scratch vs {who}: catches up {at} (measured)"


def predicted_text(p: dict) -> str:
    who = "the best transfer mode" if p["mode"] == xo.BEST else p["mode"]
    if "limit" not in p:
        return f"scratch vs {who}: no predicted crossover ({p['reason']})"
    said = xo.verdict(p)
    ci = _ci(p["lo"], p["hi"], p["limit"])
    if said == "not reached":
        text = f"not predicted below {p['limit']:,.0f} examples"
    elif said == "at":
        where = (f"extrapolated ×{p['crossover_budget'] / p['largest_measured']:.1f}"
                 if p["crossover_budget"] > p["largest_measured"] else "within the budgets measured")
        text = f"predicted to catch up at ~{fmt.examples(p['crossover_budget'])} examples {ci} ({where})"
    else:
        point = (f"~{fmt.examples(p['crossover_budget'])}" if p["crossover_budget"] is not None
                 else f"beyond {p['limit']:,.0f}")
        text = f"cannot tell: {point} examples, interval {ci}"
    guess = f"; untrusted fit ({', '.join(p['untrusted'])}): read this as a guess" if p["untrusted"] else ""
    return f"scratch vs {who}: {text}{guess}"


def multiplier_text(e: dict) -> str:
    head = f"{e['mode']} at {e['budget']:,} examples ({fmt.metric(e['metric'])})"
    if e["scratch_budget"] is None:
        asym = f" (its fitted asymptote {fmt.metric(e['asymptote'])})" if e.get("asymptote") is not None else ""
        upper = (f"; within the interval by {fmt.examples(e['hi'])}" if e.get("hi") is not None else "")
        return f"{head}: scratch not predicted to reach it{asym}{upper}"
    note = {"extrapolated": ", extrapolated", "past the budgets measured": ", past scratch's budgets",
            "below the budgets measured": ", below scratch's budgets"}.get(e["note"], "")
    trust = "" if e["trusted"] else f" (a guess: scratch's fit: {e['scratch_status']})"
    return f"{head} ≈ scratch at {fmt.multiplier(e)}{note}{trust}"


def target_text(t: dict) -> str:
    head = f"{_name(t)}: target {t['target']:g}: "
    if t["cheapest"] is None:
        text = "no fitted mode is predicted to reach it within the extrapolation limit"
    else:
        r = next(r for r in t["modes"] if r["mode"] == t["cheapest"])
        spend = (fmt.money(r["cost_usd"]) if t["cheapest_by"] == "cost_usd" else
                 f"{fmt.hours(r['device_hours'])} device-h" if t["cheapest_by"] == "device_hours" else "no cost")
        at = f"≤ {r['n']:,.0f} (the smallest budget measured)" if r["at_smallest"] else f"~{fmt.examples(r['n'])}"
        text = f"cheapest is {r['mode']}, predicted to reach it at {at} examples, {spend} per run"
    others = [f"{r['mode']} {'~' + fmt.examples(r['n']) if r['n'] is not None else r['reason']}" for r in t["modes"]]
    return head + text + f" (all: {'; '.join(others)})" + (f"; not fitted: {', '.join(t['not_fitted'])}"
                                                            if t["not_fitted"] else "")


def cost_text(curve: dict, cap: float) -> str:
    m = curve["max_cost"]
    if m["n"] is None:
        return f"{_name(curve, True)}: nothing within {fmt.money(cap)} per run ({m['reason']})"
    limit = " (the extrapolation limit)" if m["capped"] else ""
    return (f"{_name(curve, True)}: best predicted {curve['metric_name']} within {fmt.money(cap)} per run: "
            f"{_metric_ci(m)} at ~{fmt.examples(m['n'])} examples{limit}, {fmt.money(m['cost_usd'])} per run")


def _note(p: dict) -> str:
    if p["measured"] is not None:
        return f"measured {fmt.metric(p['measured'])}"
    if p["extrapolated"]:
        return f"extrapolated ×{p['extrapolated']:.1f}"
    return "below the budgets measured" if p["below_measured"] else "interpolated"


def _errors(c: dict) -> str:
    if not c["family_errors"]:
        return fmt.NONE
    kind = "AICc" if c["choice"].startswith("AICc") else "err"
    return ", ".join(f"{n} {fmt.num(v, '{:.3g}')}" for n, v in c["family_errors"].items()) + f" ({kind})"


def _fit_row(c: dict) -> str:
    status = c["status"] + ("" if c["status"] == "ok" else f": {c['reason']}")
    beta = c["cost_usd"] and c["cost_usd"]["beta"]
    cost = (f"{fmt.money(c['cost_usd']['alpha'])} {'−' if beta < 0 else '+'} {fmt.significant(abs(beta))}·n"
            if c["cost_usd"] else fmt.NONE)
    budgets = ", ".join(f"{n} (×{k})" for n, k in zip(c["budgets"], c["seeds"]))
    cells = [c["model"], c["mode"], budgets, status.replace("|", "\\|"), c["family"] or fmt.NONE, _errors(c),
             fmt.num(c["a"]), fmt.num(c["r2"], "{:.3f}"), fmt.metric(c["seed_std"]), cost]
    return "| " + " | ".join(cells) + " |"


def _benchmark_lines(result: dict, task: str, dataset: str) -> list[str]:
    same = lambda e: (e["task"], e["dataset"]) == (task, dataset)  # noqa: E731
    lines = []
    for x in filter(same, result["crossovers"]):
        lines += [f"- {x['model']}: " + "; ".join(measured_text(m) for m in x["measured"])]
        lines += [f"- {x['model']}: " + "; ".join(predicted_text(p) for p in x["predicted"])]
    mult = [e for e in result["multipliers"] if same(e)]
    if mult:
        for model in dict.fromkeys(e["model"] for e in mult):
            top = xo.headline_entry([e for e in mult if e["model"] == model])
            lines.append(f"- {model}, data transferred: {multiplier_text(top)}")
    lines += [f"- {target_text(t)}" for t in result["targets"] if same(t)]
    lines += [f"- {cost_text(c, result['settings']['max_cost'])}" for c in result["curves"]
              if same(c) and "max_cost" in c]
    return lines


def _multiplier_table(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["", "Data transferred (scratch budget reaching each transfer cell's measured mean on scratch's fitted "
             "curve):", "", "| model | mode | train examples | metric | ≈ scratch at [95%] | × the data [95%] | note |",
             "|---|---|---|---|---|---|---|"]
    for e in rows:
        at = fmt.NONE if e["scratch_budget"] is None else "~" + fmt.examples(e["scratch_budget"])
        ci_n = "" if e["lo"] is None and e["hi"] is None else \
            f" [{fmt.examples(e['lo']) if e['lo'] else '—'}, {fmt.examples(e['hi']) if e['hi'] else '> search'}]"
        note = e["note"] + ("" if e["trusted"] else f"; scratch: {e['scratch_status']}")
        lines.append(f"| {e['model']} | {e['mode']} | {e['budget']:,} | {fmt.metric(e['metric'])} | {at}{ci_n} | "
                     f"{fmt.ratio(e['multiplier'])}{fmt.ratio_interval(e)} | {note} |")
    return lines


def to_markdown(result: dict, title: str = "Plan") -> str:
    s = result["settings"]
    lines = [f"## {title}", "", MODEL_LINE + f" Predictions go at most {s['max_factor']:g}× past a curve's largest "
             "budget measured.", "", CROSSOVER_LINE, ""]
    cov = result["validation"]["coverage"]
    if cov["checked"]:
        lines += [f"Calibration: {cov['inside']} of {cov['checked']} held-out measured means inside their "
                  f"{cov['level']:.0%} interval ({cov['inside'] / cov['checked']:.0%}; Validation below).", ""]
    tables: dict[tuple, list] = {}
    for c in result["curves"]:
        tables.setdefault((c["task"], c["dataset"]), []).append(c)
    for (task, dataset), curves in tables.items():
        c0 = curves[0]
        lines += [f"### {task} · {dataset}", "", f"Metric: {c0['metric_name']} "
                  f"({'higher' if c0['higher_is_better'] else 'lower'} is better).", "",
                  "| model | mode | budgets (seeds) | fit | family | by family: held-out error or AICc | a | R² "
                  "| seed std | $/run |", "|---|---|---|---|---|---|---|---|---|---|"] + [_fit_row(c) for c in curves]
        lines += ["", f"| model | mode | train examples | predicted metric [{s['level']:.0%}] | $/run | device-h/run "
                  "| note |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {c['model']} | {c['mode']} | {p['n']:,.0f} | {_metric_ci(p)} | {fmt.money(p['cost_usd'])} | "
                  f"{fmt.hours(p['device_hours'])} | {_note(p)} |" for c in curves for p in c["predictions"]]
        lines += _multiplier_table([e for e in result["multipliers"] if (e["task"], e["dataset"]) == (task, dataset)])
        lines += ["", "Crossover and data transferred:", ""] + _benchmark_lines(result, task, dataset) + [""]
    lines += validation_markdown(result["validation"]) + hindcast_markdown(result["hindcast"])
    return "\n".join(lines) + "\n"


def _spread(std) -> str:
    return "(one seed)" if std is None else f"± {fmt.metric(std)}"


def validation_markdown(v: dict) -> list[str]:
    lines = ["### Validation: fit on smaller budgets, predict the largest", ""]
    if not v["curves"]:
        return lines + [f"No curve has {OK_BUDGETS} or more budgets: nothing to hold out.", ""]
    cov = v["coverage"]
    lines += [f"The interval is for the measured mean (curve, misfit and seed noise). Coverage: {cov['inside']} of "
              f"{cov['checked']} inside" + (f" ({cov['inside'] / cov['checked']:.0%})." if cov["checked"] else "."),
              "", "| task · dataset | model | mode | fit on | family | predict | predicted [95%] | "
              "measured (mean ± std) | abs error | inside |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e in v["curves"]:
        inside = ("—" if e.get("inside") is None else "yes" if e["inside"] else "miss")
        if "predicted" not in e:
            inside = f"not fitted: {e['reason']}"
        predicted = _metric_ci({**e, "mean": e.get("predicted")})
        lines.append(f"| {e['task']} · {e['dataset']} | {e['model']} | {e['mode']} | "
                     f"{', '.join(map(str, e['fit_on']))} | {e['family'] or fmt.NONE} | {e['largest']} | {predicted} | "
                     f"{fmt.metric(e['measured'])} {_spread(e['measured_std'])} | {fmt.metric(e.get('abs_error'))} | "
                     f"{inside} |")
    lines += [""] + [f"- {_name(m)}: mean absolute error {fmt.metric(m['mae'])} over {m['curves']} curve"
                     f"{'s' * (m['curves'] > 1)}" for m in v["mae"]]
    return lines + [""]


def hindcast_markdown(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = [f"### Validation: each measured crossover predicted from the budgets ≤ 1/{HINDCAST} of it", "",
             f"Agrees: within a factor {AGREES:g} of the measured n*, \"cannot tell\" with an interval that contains it, "
             "or (not reached) no crossover predicted up to the largest budget.", "",
             "| task · dataset | model | scratch vs | measured n* | fit on | predicted [95%] | outcome |",
             "|---|---|---|---|---|---|---|"]
    for h in rows:
        measured = f"{h['measured']:,}" if h["measured"] is not None else f"not reached up to {h['largest']:,}"
        if h.get("said") is None:
            predicted = fmt.NONE
        elif h["said"] == "not reached":
            predicted = f"not below {h['limit']:,.0f}"
        else:
            predicted = (f"{'cannot tell: ' if h['said'] == 'cannot tell' else ''}"
                         f"{'~' + fmt.examples(h['predicted']) if h['predicted'] is not None else '—'} "
                         f"{_ci(h['lo'], h['hi'], h['limit'])}")
        lines.append(f"| {h['task']} · {h['dataset']} | {h['model']} | {h['mode']} | {measured} | "
                     f"{', '.join(map(str, h['fit_on'])) or fmt.NONE} | {predicted} | {h['outcome']} |")
    return lines + [""]


def to_json(result: dict) -> dict:
    """The plan with each verdict's sentence beside its numbers."""
    out = json.loads(json.dumps(result))
    for c in out["crossovers"]:
        for m in c["measured"]:
            m["text"] = measured_text(m)
        for p in c["predicted"]:
            p["text"] = predicted_text(p)
    for e in out["multipliers"]:
        e["text"] = multiplier_text(e)
    for t in out["targets"]:
        t["text"] = target_text(t)
    for c in out["curves"]:
        if "max_cost" in c:
            c["max_cost"]["text"] = cost_text(c, out["settings"]["max_cost"])
    return out


def parse_budgets(text: Optional[str]) -> Optional[list[float]]:
    """'256,1024,4k' is not accepted: plain numbers, comma-separated."""
    if text is None:
        return None
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--budgets must be numbers of examples separated by commas (e.g. 512,2048), not {text!r}") \
            from None
    if not values:
        raise UserError("--budgets is empty: give numbers of examples separated by commas (e.g. 512,2048)")
    return values


def write_plan(paths, out: Optional[Path] = None, target=None, budgets=None, max_cost=None,
               max_factor=4.0) -> str:
    """Load one or several stores and plan; write plan.md and plan.json to `out` only when it is given (`plan`
    reads, `report` writes); return the Markdown."""
    paths = [Path(p) for p in paths]
    records = load(paths)
    result = plan(records, target=target, budgets=budgets, max_cost=max_cost, max_factor=max_factor)
    names = sorted({str(r.get("suite")) for r in records}) or [paths[0].name]
    text = to_markdown(result, f"Plan: {', '.join(names)}")
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "plan.md").write_text(text, encoding="utf-8")
        (out / "plan.json").write_text(json.dumps(to_json(result), indent=1, allow_nan=False) + "\n",
                                       encoding="utf-8")
    return text
