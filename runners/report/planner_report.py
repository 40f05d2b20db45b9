"""`transferbench plan`: the planner's output as GitHub Markdown (printed, plan.md) and JSON (plan.json).
Formats only what runners.planner computes."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

from transferbench.errors import UserError

from . import fmt
from .merge import load
from .curves import BOOTSTRAP, LEVEL, MIN_BUDGETS, R2_MIN
from .planner import plan

MODEL_LINE = ("Each curve (task, dataset, model, mode) is fitted with a saturating power law, "
              "metric(n) = a − b·n^(−c) (lower is better: a + b·n^(−c)), b ≥ 0, 0.01 ≤ c ≤ 3, by least squares on "
              "every seed's point; the asymptote a stays in [0, 1] for metrics measured in [0, 1]. Intervals: "
              f"{LEVEL:.0%} percentile over {BOOTSTRAP} refits on the seeds resampled at each budget (fixed RNG "
              f"seed). R² on the cell means; below {R2_MIN} the fit is a \"poor fit\" (predictions shown, not "
              "trusted). \"flat\": the cell means vary less than the seeds do, so the prediction is their mean. "
              f"Fewer than {MIN_BUDGETS} budgets: not fitted. Cost per run: least-squares line α + β·n over the ok "
              "runs.")


def _metric_ci(p: dict) -> str:
    interval = "" if p.get("lo") is None else f" [{fmt.metric(p['lo'])}, {fmt.metric(p['hi'])}]"
    return f"{fmt.metric(p.get('mean'))}{interval}"


def _name(e: dict, mode: bool = False) -> str:
    return f"{e['dataset']}, {e['model']}" + (f", {e['mode']}" if mode else "")


def crossover_text(c: dict) -> str:
    head = f"{_name(c)}: "
    if c["crossover_budget"] is None and "limit" not in c:
        return head + f"no predicted crossover ({c['reason']})"
    if c["crossover_budget"] is None:
        text = f"no crossover predicted below {c['limit']:,.0f} examples"
    else:
        n, largest = c["crossover_budget"], c["largest_measured"]
        where = (f"extrapolated ×{n / largest:.1f}" if n > largest else "within the budgets measured")
        text = (f"scratch predicted to come within one std ({fmt.metric(c['std'])}, {c['best_mode']}'s mean seed std) "
                f"of {c['best_mode']} at ~{fmt.examples(n)} examples ({where}) and to stay there up to "
                f"{c['limit']:,.0f}")
    return head + text + (f"; poor fit: {', '.join(c['poor'])}, so read this as a guess" if c["poor"] else "")


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


def _fit_row(c: dict) -> str:
    status = c["status"] + ("" if c["status"] == "ok" else f": {c['reason']}")
    nums = [fmt.num(c["a"]), fmt.num(c["b"], "{:.4g}"), fmt.num(c["c"], "{:.3f}"), fmt.num(c["r2"], "{:.3f}")]
    cost = (f"{fmt.money(c['cost_usd']['alpha'])} + {fmt.significant(c['cost_usd']['beta'])}·n"
            if c["cost_usd"] else fmt.NONE)
    budgets = ", ".join(f"{n} (×{k})" for n, k in zip(c["budgets"], c["seeds"]))
    return "| " + " | ".join([c["model"], c["mode"], budgets, status.replace("|", "\\|"), *nums,
                              fmt.metric(c["seed_std"]), cost]) + " |"


def to_markdown(result: dict, title: str = "Plan") -> str:
    s = result["settings"]
    lines = [f"## {title}", "", MODEL_LINE + f" Predictions go at most {s['max_factor']:g}× past a curve's largest "
             "budget measured.", ""]
    tables: dict[tuple, list] = {}
    for c in result["curves"]:
        tables.setdefault((c["task"], c["dataset"]), []).append(c)
    for (task, dataset), curves in tables.items():
        c0 = curves[0]
        lines += [f"### {task} · {dataset}", "", f"Metric: {c0['metric_name']} "
                  f"({'higher' if c0['higher_is_better'] else 'lower'} is better).", "",
                  "| model | mode | budgets (seeds) | fit | a | b | c | R² | mean seed std | $/run |",
                  "|---|---|---|---|---|---|---|---|---|---|"] + [_fit_row(c) for c in curves]
        lines += ["", f"| model | mode | train examples | predicted metric [{s['level']:.0%}] | $/run | device-h/run "
                  "| note |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {c['model']} | {c['mode']} | {p['n']:,.0f} | {_metric_ci(p)} | {fmt.money(p['cost_usd'])} | "
                  f"{fmt.hours(p['device_hours'])} | {_note(p)} |" for c in curves for p in c["predictions"]]
        same = lambda e: (e["task"], e["dataset"]) == (task, dataset)  # noqa: E731
        verdicts = ([crossover_text(x) for x in result["crossovers"] if same(x)]
                    + [target_text(t) for t in result["targets"] if same(t)]
                    + [cost_text(c, s["max_cost"]) for c in curves if "max_cost" in c])
        lines += ["", "Predicted (from the fitted curves):", ""] + [f"- {v}" for v in verdicts] + [""]
    lines += validation_markdown(result["validation"])
    return "\n".join(lines) + "\n"


def _spread(std) -> str:
    return "(one seed)" if std is None else f"± {fmt.metric(std)}"


def validation_markdown(v: dict) -> list[str]:
    lines = ["### Validation: fit on smaller budgets, predict the largest", ""]
    if not v["curves"]:
        return lines + [f"No curve has {MIN_BUDGETS + 1} or more budgets: nothing to hold out.", ""]
    lines += ["The interval covers the fitted mean; the measured mean carries its own seed noise (its std beside it).",
              "", "| task · dataset | model | mode | fit on | predict | predicted [95%] | measured (mean ± std) "
              "| abs error | inside |",
              "|---|---|---|---|---|---|---|---|---|"]
    for e in v["curves"]:
        inside = ("—" if e.get("inside") is None else "yes" if e["inside"] else "miss")
        if "predicted" not in e:
            inside = f"not fitted: {e['reason']}"
        predicted = _metric_ci({**e, "mean": e.get("predicted")})
        lines.append(f"| {e['task']} · {e['dataset']} | {e['model']} | {e['mode']} | "
                     f"{', '.join(map(str, e['fit_on']))} | {e['largest']} | {predicted} | {fmt.metric(e['measured'])} "
                     f"{_spread(e['measured_std'])} | {fmt.metric(e.get('abs_error'))} | {inside} |")
    lines += [""] + [f"- {_name(m)}: mean absolute error {fmt.metric(m['mae'])} over {m['curves']} curve"
                     f"{'s' * (m['curves'] > 1)}" for m in v["mae"]]
    return lines + [""]


def to_json(result: dict) -> dict:
    """The plan with each verdict's sentence beside its numbers."""
    out = json.loads(json.dumps(result))
    for c in out["crossovers"]:
        c["text"] = crossover_text(c)
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
    """Load one or several stores, plan, write plan.md and plan.json to `out` (default: the one store's folder);
    return the Markdown."""
    paths = [Path(p) for p in paths]
    if out is None:
        if len(paths) > 1:
            raise UserError("several stores merge into one plan: say where it goes with --out DIR")
        out = paths[0].parent if paths[0].name == "runs.jsonl" else paths[0]
    records = load(paths)
    result = plan(records, target=target, budgets=budgets, max_cost=max_cost, max_factor=max_factor)
    names = sorted({str(r.get("suite")) for r in records}) or [paths[0].name]
    text = to_markdown(result, f"Plan: {', '.join(names)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.md").write_text(text)
    (out / "plan.json").write_text(json.dumps(to_json(result), indent=1, allow_nan=False) + "\n")
    return text
