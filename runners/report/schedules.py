"""What the modes of a comparison trained at and for, read from the runs' records: each cell's learning rate (as
trained; "(auto)"/"(grid)" when a search chose it) and schedule (epochs or steps, a time cap, warm-up and scheduler
where a mode differs from the others at its budget), and per benchmark (task, dataset, model) what its modes held
equal at each budget: the same optimizer steps at the same batch, a shared time cap that ended every run, or the
same training FLOPs, or else what differed. Pure computation on records; leaderboard.build stores the results in
its cells and in Leaderboard.equal, and every writer prints the same texts."""
from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import Optional

from . import fmt
from .cells import BENCHMARK_KEY, BUDGET_KEY, cell_key

COMPUTE_TOLERANCE = 0.01  # "same training FLOPs": the modes' mean flops_estimate within 1% of the largest
MAX_RATES = 3  # a cell whose seeds chose more rates than this shows their range instead of each one
# stop_reason values that end a run before its schedule does, as the schedule column names them
EARLY = {"target": "target stop", "early_stopping": "early stop"}


def _hyper(r: dict) -> dict:
    return (r.get("config") or {}).get("hyper") or {}


def plateau_rule(h: dict) -> dict:
    """A plateau run's rule as configured (its defaults where the dump leaves them out)."""
    from transferbench.hyper import Plateau

    return {**Plateau().model_dump(), **(h.get("plateau") or {})}


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def run_lr(r: dict) -> Optional[float]:
    """The rate the run trained at: the record's `lr`; older records (without it) trained at config.hyper.lr when
    that is a number."""
    for lr in (r.get("lr"), _hyper(r).get("lr")):
        if _number(lr):
            return float(lr)
    return None


def search_kind(r: dict) -> Optional[str]:
    """'auto' or 'grid' when a search chose the run's rate (its record's lr_search), else None."""
    search = r.get("lr_search")
    if not isinstance(search, dict):
        return None
    if search.get("kind") in ("auto", "grid"):
        return search["kind"]
    return "grid" if isinstance(_hyper(r).get("lr"), list) else "auto"


def rate(x: float) -> str:
    """3e-4, 2.5e-4, 1e-2: short, in the e-notation learning rates are written in."""
    mantissa, exponent = f"{x:.2e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return mantissa if int(exponent) == 0 else f"{mantissa}e{int(exponent)}"


def lr_fields(rs: list[dict]) -> dict:
    """A cell's lr (the distinct rates its runs trained at, ascending), lr_search (auto | grid | None) and lr_text
    (the table's text: "3e-4", "1e-4/3e-4 (auto)")."""
    ok = [r for r in rs if r.get("status") == "ok"] or rs
    rates = sorted({x for r in ok if (x := run_lr(r)) is not None})
    kinds = sorted({k for r in ok if (k := search_kind(r))})
    if not kinds:  # a cell that failed before its search still says that its rate was to be searched
        planned = {"auto" if h.get("lr") == "auto" else "grid" if isinstance(h.get("lr"), list) else None
                   for h in map(_hyper, ok)}
        kinds = sorted(k for k in planned if k)
    if not rates:
        text = fmt.NONE
    elif len(rates) <= MAX_RATES:
        text = "/".join(map(rate, rates))
    else:
        text = f"{rate(rates[0])}–{rate(rates[-1])} ({len(rates)} rates)"
    if kinds:
        text += f" ({'/'.join(kinds)})"
    return dict(lr=rates, lr_search="/".join(kinds) or None, lr_text=text)


def _parts(h: dict) -> dict:
    """The schedule a run was given (config.hyper): its length (to its plateau under a step cap; else max_steps,
    which replaces epochs as in the loops), time cap, warm-up and scheduler."""
    steps, epochs, cap = h.get("max_steps"), h.get("epochs"), h.get("max_seconds")
    length = (f"plateau, cap {plateau_rule(h)['max_steps']} steps" if h.get("schedule") == "plateau" else
              f"{steps} step{'s' * (steps != 1)}" if steps else
              f"{epochs:g} epoch{'s' * (epochs != 1)}" if _number(epochs) else None)
    return {"length": length, "cap": f"≤{cap:g} s" if _number(cap) else None,
            "warm-up": h.get("warmup_ratio"), "scheduler": h.get("scheduler")}


def _differs(part: str, mine, others) -> str:
    """'12 epochs (others 3)', 'warm-up 0 (others 0.1)', 'constant (others linear)', 'no time cap (others ≤60 s)'."""
    def text(v):
        if v is None:
            return "no time cap" if part == "cap" else fmt.NONE
        return f"warm-up {v:g}" if part == "warm-up" and _number(v) else str(v)

    mine_t, others_t = text(mine), text(others)
    if part == "length" and mine and others and mine.split()[1].rstrip("s") == others.split()[1].rstrip("s"):
        others_t = others.split()[0]  # same unit: 12 epochs (others 3)
    elif part == "warm-up" and _number(others):
        others_t = f"{others:g}"
    return f"{mine_t} (others {others_t})"


def _common(values: list):
    """The value most modes share; a tie goes to the first mode's (MODE_ORDER)."""
    counts = Counter(values)
    top = max(counts.values())
    return next(v for v in values if counts[v] == top)


def schedule_texts(cells: list[dict], runs: dict[tuple, list[dict]]) -> None:
    """Each cell's `schedule` text: the length (and time cap) it trained for; warm-up, scheduler, and any part that
    differs from the other modes at the same benchmark and budget, with theirs. `runs`: each cell's records by its
    key (cells.run_key); `cells` in leaderboard order."""
    groups = defaultdict(list)
    for c in cells:
        groups[cell_key(c, BUDGET_KEY)].append(c)
    for group in groups.values():
        parts = {}
        for c in group:
            rs = runs[cell_key(c)]
            parts[c["mode"]] = _parts(_hyper((([r for r in rs if r.get("status") == "ok"] or rs)[0])))
        common = {p: _common([parts[c["mode"]][p] for c in group]) for p in ("length", "cap", "warm-up", "scheduler")}
        for c in group:
            mine = parts[c["mode"]]
            shown = []
            for p in ("length", "cap", "warm-up", "scheduler"):
                if mine[p] != common[p]:
                    shown.append(_differs(p, mine[p], common[p]))
                elif p in ("length", "cap") and mine[p]:
                    shown.append(mine[p])
            ok = [r for r in runs[cell_key(c)] if r.get("status") == "ok"]
            ended = Counter(r.get("stop_reason") for r in ok)
            notes = ([f"cap hit {ended['max_seconds']}/{len(ok)}"] if ended["max_seconds"] and mine["cap"] else [])
            notes += [f"{name} {ended[why]}/{len(ok)}" for why, name in EARLY.items() if ended[why]]
            stops = [r["plateau"]["steps_run"] for r in ok if isinstance(r.get("plateau"), dict)]
            if stops:  # where each seed's plateau phase stopped, and how many the cap stopped still improving
                notes.append(f"stopped at {_span(stops)}" + (f", cap hit {ended['cap']}/{len(ok)}" if ended["cap"] else ""))
            text = ", ".join(shown) or fmt.NONE
            c["schedule"] = text + (f" ({', '.join(notes)})" if notes else "")
            steps = [r["optimizer_steps"] for r in ok if _number(r.get("optimizer_steps"))]
            c["optimizer_steps"] = statistics.fmean(steps) if steps else None


def _batch(r: dict) -> Optional[int]:
    """The effective batch as trained (per-device × processes × accumulation), else the configured batch_size."""
    parts = [r.get("per_device_batch"), r.get("grad_accum"), r.get("num_processes")]
    if all(_number(p) and p > 0 for p in parts):
        return parts[0] * parts[1] * parts[2]
    return _hyper(r).get("batch_size")


def _ratio(x: float) -> str:
    return f"{x:.2g}×"


def _budget_check(by_mode: dict[str, list[dict]]) -> tuple[list[str], Optional[str], dict]:
    """What the modes of one budget held equal (steps, wall, compute: every one that holds), the reason when none
    does, and the numbers the note quotes."""
    runs = [r for rs in by_mode.values() for r in rs]
    held, facts = [], {}
    steps = [r.get("optimizer_steps") for r in runs]
    batches = {_batch(r) for r in runs}
    if all(_number(s) for s in steps) and len(set(steps)) == 1 and len(batches) == 1 and None not in batches:
        held.append("steps")
        facts.update(steps=steps[0], batch=batches.pop())
    caps = {_hyper(r).get("max_seconds") for r in runs}
    if len(caps) == 1 and _number(next(iter(caps))) and all(r.get("stop_reason") == "max_seconds" for r in runs):
        held.append("wall")
        facts["cap"] = caps.pop()
    flops = {m: [r.get("flops_estimate") for r in rs] for m, rs in by_mode.items()}
    # the estimate (6 x parameters x tokens) counts a full backward pass: it says nothing about compute saved by
    # frozen weights, so equal estimates claim equal compute only where every run trains the same parameters
    same_training = len({r.get("params_trainable") for r in runs}) == 1
    if same_training and all(_number(f) and f > 0 for fs in flops.values() for f in fs):
        means = [statistics.fmean(fs) for fs in flops.values()]
        if max(means) - min(means) <= COMPUTE_TOLERANCE * max(means):
            held.append("compute")
    return held, None if held else _why_not(by_mode), facts


def _why_not(by_mode: dict[str, list[dict]]) -> str:
    """What differed between the modes of one budget, in a few words."""
    steps = {m: [r.get("optimizer_steps") for r in rs] for m, rs in by_mode.items()}
    if not all(_number(s) for ss in steps.values() for s in ss):
        return "unknown (the runs record no optimizer steps)"
    means = {m: statistics.fmean(ss) for m, ss in steps.items()}
    most, least = max(means, key=means.get), min(means, key=means.get)
    if means[most] > means[least]:
        others = [m for m in means if m != most]
        whom = "the other modes" if len(others) > 1 and all(means[m] == means[least] for m in others) else least
        ratio = _ratio(means[most] / means[least]) if means[least] else "more than"
        return f"{most} ran {ratio} the optimizer steps of {whom}"
    if len({s for ss in steps.values() for s in ss}) > 1:  # equal means, unequal runs: stops that differ by seed
        low, high = min(min(ss) for ss in steps.values()), max(max(ss) for ss in steps.values())
        return f"optimizer steps differ by seed ({low}–{high})"
    batches = {m: sorted({_batch(r) for r in rs}, key=str) for m, rs in by_mode.items()}
    big = max(batches, key=lambda m: str(batches[m]))
    small = next(m for m in batches if batches[m] != batches[big])
    return (f"{big} trained at batch {'/'.join(map(str, batches[big]))}, {small} at "
            f"{'/'.join(map(str, batches[small]))}")


def _span(values: list) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:g}" if lo == hi else f"{lo:g}–{hi:g}"


def _label(held: list[str], facts: list[dict], every: bool) -> str:
    """'equal: steps (20 optimizer steps of batch 16 at every budget)', 'equal: wall (a shared 60 s cap ...)'."""
    details = []
    if "steps" in held:
        steps = [f["steps"] for f in facts]
        where = " at every budget" if every and len(set(steps)) == 1 else ", by budget" if every else ""
        details.append(f"{_span(steps)} optimizer steps of batch {_span([f['batch'] for f in facts])}{where}")
    if "wall" in held:
        details.append(f"a shared {_span([f['cap'] for f in facts])} s cap ended every run")
    if "compute" in held and "steps" not in held:
        details.append(f"training FLOPs within {COMPUTE_TOLERANCE:.0%}")
    return f"equal: {', '.join(held)}" + (f" ({'; '.join(details)})" if details else "")


def _plateau_note(budgets: dict) -> Optional[str]:
    """'each mode to its plateau (cap 300 steps, floor 20, validation: 20% of the budget): scratch stopped at
    40–300 steps, finetune at 20–60; the cap ended 2 of 24 runs still improving' when every run of a benchmark
    trained to its plateau, else None."""
    runs = [r for by_mode in budgets.values() for rs in by_mode.values() for r in rs]
    if not runs or not all(isinstance(r.get("plateau"), dict) for r in runs):
        return None
    rules = {m: plateau_rule(_hyper(r)) for by_mode in budgets.values() for m, rs in by_mode.items() for r in rs}
    common = _common([rule["max_steps"] for rule in rules.values()])
    own = [f"{m} {rule['max_steps']}" for m, rule in rules.items() if rule["max_steps"] != common]
    first = next(iter(rules.values()))
    head = (f"each mode to its plateau (cap {common} steps{' (' + ', '.join(own) + ')' if own else ''}, floor "
            f"{first['min_steps']}, validation: {first['validation']:.0%} of the budget, then the whole budget "
            "retrained)")
    modes = list(dict.fromkeys(m for by_mode in budgets.values() for m in by_mode))
    stops = [f"{m} {'stopped at ' if i == 0 else 'at '}"
             f"{_span([r['plateau']['steps_run'] for bm in budgets.values() for r in bm.get(m, [])])}"
             for i, m in enumerate(modes)]
    capped = sum(r["plateau"]["stopped"] == "cap" for r in runs)
    tail = (f"; the cap ended {capped} of {len(runs)} runs still improving" if capped else
            "; no run hit the cap")
    return f"{head}: {', '.join(stops)} steps{tail}; its seconds are in the cost, not in train s"


def equal_notes(cells: list[dict], runs: dict[tuple, list[dict]]) -> list[dict]:
    """One note per benchmark (task, dataset, model) with two or more modes at some budget: per budget what its
    modes held equal (`held`: steps | wall | compute, or [] with `differs`), and `text`, the one line the report
    prints ("equal: steps (...)"; "not equal: finetune ran 2× the optimizer steps of scratch"). Only ok runs count."""
    benches = defaultdict(lambda: defaultdict(dict))
    for c in cells:
        ok = [r for r in runs[cell_key(c)] if r.get("status") == "ok"]
        if ok:
            benches[cell_key(c, BENCHMARK_KEY)][c["train_samples"]][c["mode"]] = ok
    notes = []
    for (task, dataset, model), budgets in benches.items():
        plateau_line = _plateau_note(budgets)
        if plateau_line is not None:
            notes.append(dict(task=task, dataset=dataset, model=model, text=plateau_line, budgets=[
                dict(train_samples=b, held=["plateau"], differs=None) for b in sorted(budgets, key=lambda b: b or 0)]))
            continue
        checked = []
        for budget, by_mode in sorted(budgets.items(), key=lambda kv: kv[0] or 0):
            if len(by_mode) > 1:
                held, why, facts = _budget_check(by_mode)
                checked.append(dict(train_samples=budget, held=held, differs=why, facts=facts))
        if not checked:
            continue
        groups: dict[str, list[dict]] = {}
        for b in checked:
            unknown = not b["held"] and b["differs"].startswith("unknown")
            groups.setdefault(", ".join(b["held"]) or f"{'equal' if unknown else 'not equal'}: {b['differs']}",
                              []).append(b)
        texts = []
        for key, bs in groups.items():
            every = len(groups) == 1 and len(checked) > 1
            text = _label(bs[0]["held"], [b["facts"] for b in bs], every) if bs[0]["held"] else key
            if len(groups) > 1 or (len(checked) > 1 and key.startswith("not equal")):
                at = "every budget" if len(bs) == len(checked) else \
                    f"{', '.join(fmt.count(b['train_samples']) for b in bs)} examples"
                text += f" at {at}"
            texts.append(text)
        searched = any(search_kind(r) for bs in budgets.values() for rs in bs.values() for r in rs)
        line = "; ".join(texts) + ("; the learning-rate search before training is not included" if searched else "")
        notes.append(dict(task=task, dataset=dataset, model=model, text=line,
                          budgets=[{k: v for k, v in b.items() if k != "facts"} for b in checked]))
    for c in cells:  # each cell: what its budget held equal (its row in CSV/JSON)
        note = next((b for n in notes if cell_key(n, BENCHMARK_KEY) == cell_key(c, BENCHMARK_KEY)
                     for b in n["budgets"] if b["train_samples"] == c["train_samples"]), None)
        c["equal"] = None if note is None else " ".join(note["held"]) or "none"
    return notes
