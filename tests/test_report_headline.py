"""The headline, convergence-aware cells and verdicts, the fitted learning curves, the gap chart and the plan the
report writes, on synthetic stores (no training): a 4-budget curve where scratch catches up with finetune."""
import csv
import inspect
import json

import pytest
from helpers import fixture_records, rec, write_store

from transferbench.runners.report import crossover as xo
from transferbench.runners.report import fmt, headline, planner, plots
from transferbench.runners.report.leaderboard import build
from transferbench.runners.report.outputs import report
from transferbench.runners.report.tables import to_markdown

BUDGETS = (128, 256, 512, 1024)
# metric(n) = a - b·n^(-c) per mode: scratch rises fastest and nears finetune a little past the largest budget
CURVES = {"scratch": (0.96, 6.0, 0.6), "finetune": (0.92, 0.5, 0.5), "lora": (0.91, 0.5, 0.5),
          "linear-probe": (0.86, 0.2, 0.5)}
NOISE = (-0.01, 0.0, 0.01)  # per seed: each cell's mean on the curve, its std 0.01
STILL = {("finetune", 128, 0), ("finetune", 128, 1)}  # finetune at 128: 2 of 3 runs still improving


def catching_up(still=STILL, converged=True, noise=NOISE):
    out = []
    for mode, (a, b, c) in CURVES.items():
        for n in BUDGETS:
            for seed, e in enumerate(noise):
                improving = (mode, n, seed) in still
                out.append(rec(mode, seed, round(a - b * n**-c + e, 6), n, task="image-classification",
                               dataset="builtin:digits", model="efficientnet-lite0",
                               converged=False if improving else converged,
                               convergence="last evaluation +0.0310 over the previous (above the tolerance 0.01)"
                               if improving else "last evaluation +0.0020 over the previous"))
    return out


@pytest.fixture(scope="module")
def board():
    return build(catching_up())


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    store = write_store(tmp_path_factory.mktemp("catching-up"), catching_up())
    return store, report([store], publish=store / "published")


def test_cells_count_runs_still_improving(board):
    cell = next(c for c in board.cells if (c["mode"], c["train_samples"]) == ("finetune", 128))
    assert (cell["converged_runs"], cell["still_improving"], cell["n"]) == (1, 2, 3)
    assert all(c["still_improving"] == 0 for c in board.cells if c is not cell)
    unknown = build([dict(r, converged=None) for r in catching_up()[:24]])  # old stores: no field, no marker
    assert all(c["still_improving"] == c["converged_runs"] == 0 for c in unknown.cells)


def test_marker_in_every_format(reported):
    store, md = reported
    row = next(line for line in md.splitlines() if line.startswith("| efficientnet-lite0 | 128 | finetune |"))
    assert "still improving 2/3" in row.split("|")[6]
    assert md.count("still improving 2/3") == 1  # that cell only: the table's metric column
    html = (store / "leaderboard.html").read_text()
    assert "still improving 2/3" in html and 'class="metric best improving"' in html
    cells = json.loads((store / "leaderboard.json").read_text())["cells"]
    ft = next(c for c in cells if (c["mode"], c["train_samples"]) == ("finetune", 128))
    assert (ft["still_improving"], ft["converged_runs"]) == (2, 1)
    with open(store / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    cell_row = next(r for r in rows if r["row"] == "cell" and (r["mode"], r["train_samples"]) == ("finetune", "128"))
    assert (cell_row["still_improving"], cell_row["converged_runs"]) == ("2", "1")
    run_row = next(r for r in rows if r["run_id"] == "finetune-128-0")
    assert run_row["converged"] == "False" and run_row["convergence"].startswith("last evaluation +0.0310")


def test_verdicts_built_on_improving_cells_are_provisional(board):
    v128, v256 = (next(v for v in board.budget_verdicts if v["train_samples"] == n) for n in (128, 256))
    assert v128["text"].endswith("; provisional: finetune still improving at 128 examples (2/3 runs)")
    assert v128["provisional"] == [dict(mode="finetune", train_samples=128, still_improving=2, too_short=0, n=3)]
    assert "provisional" not in v256["text"] and v256["provisional"] == []
    (cross,) = board.crossovers
    assert "provisional: finetune still improving at 128 examples (2/3 runs)" in cross["text"]


def test_headline_opens_the_report_and_predicts_the_crossover(board, reported):
    (line,) = board.headlines
    text = line["text"]
    assert text.startswith("digits, efficientnet-lite0: finetune ahead at every budget run (128–1,024 examples; "
                           "lead over lora not significant)")  # 0.01 ahead of lora, seeds ± 0.01: no win
    assert "wins" not in text
    # the fitted curves are usable, but with seeds ± 0.01 their draws do not all cross before 4× the largest budget:
    # the line says the curves cannot tell, and claims nothing
    fits = {k[3]: f for k, f in board.fits.items()}
    assert all(f.status == "ok" for f in fits.values())
    assert ("scratch does not catch up with the best transfer mode at any budget run; the fitted curves cannot tell "
            "whether it does below 4,100 examples") in text and line["predicted_crossover"] is None
    # the data multiplier of the best transfer cell at the smallest budget, with its interval
    assert "finetune at 128 examples ≈ scratch at ~" in text and "× the data) [" in text
    # seeds ± 0.002: the whole interval lies below the limit, so the crossover is quoted as a prediction
    (sharp,) = build(catching_up(noise=(-0.002, 0.0, 0.002))).headlines
    pred = next(p for p in xo.predicted({k[3]: f for k, f in build(catching_up(noise=(-0.002, 0.0, 0.002))).fits.items()},
                                         0.01, headline.MAX_FACTOR) if p["mode"] == xo.BEST)
    claim = sharp["predicted_crossover"]
    assert claim["n"] == pred["crossover_budget"] and 1024 < claim["n"] <= 4096 and claim["lo"] <= claim["n"]
    assert (f"predicted to catch up at ~{fmt.examples(claim['n'])} examples [{fmt.examples(claim['lo'])}, "
            f"{fmt.examples(claim['hi'])}] (fitted curves, {claim['n'] / 1024:.1f}× the largest budget run)"
            ) in sharp["text"]
    assert "cheapest adequate mode (within the margin of the best): lora at 128–1,024 examples" in text
    assert text.endswith("; provisional: finetune still improving at 128 examples (2/3 runs)")
    # bold only where significant on settled cells: the Δ vs scratch at 1,024 is; at 128 finetune is still improving,
    # so its significant Δ is provisional and plain; the lead over lora is not significant
    assert "vs scratch: +0.24 at 128 (significant, provisional), **+0.038 at 1,024 (significant)**" in line["markdown"]
    assert "**finetune" not in line["markdown"]
    _, md = reported
    title, blank, first = md.splitlines()[:3]
    (decided,) = board.decisions
    assert title.startswith("## ") and blank == "" and first == f"- {decided['text']}"  # the decision first
    # the detailed line opens the fold
    assert md.split("<summary>", 1)[1].splitlines()[2] == f"- {line['markdown']}"
    # finetune leads at both budgets, lora is adequate and cheaper: lora is the one to use; scratch's fit says how
    # much more data it needs; finetune at 128 is still improving but lora's cells are settled
    assert decided["text"].startswith("digits · efficientnet-lite0: use lora at every budget run (128–1,024 "
                                      "examples; ties the best")
    assert "scratch does not catch up within 1,024 examples (needs ~" in decided["text"]


def test_headline_never_calls_a_non_significant_lead_a_win():
    board = build(fixture_records())  # 2 budgets: no fit, no prediction
    (line,) = board.headlines
    # 64: finetune 0.83 ± 0.03 vs lora 0.82 ± 0.01, not significant; 256: finetune 0.93 vs scratch 0.92, overlapping
    assert line["text"].startswith("topics, m: finetune ahead at every budget run (64–256 examples; lead over "
                                   "lora/scratch not significant)")
    assert "vs scratch: **+0.56 at 64 (significant)**, +0.010 at 256 (not significant)" in line["markdown"]
    assert "scratch catches up with the best transfer mode (within the margin) from 256 examples on" in line["text"]
    assert "predicted" not in line["text"] and line["predicted_crossover"] is None
    assert "wins" not in line["text"]
    # a clear lead over every other mode is a win, and bold
    clear = [r for r in fixture_records() if r["train_samples"] == 64 or r["mode"] == "finetune"]
    clear = [dict(r, metric=r["metric"] - 0.2) if r["mode"] == "lora" else r for r in clear if r["metric"] is not None]
    (line,) = build(clear).headlines
    assert "**finetune wins at 64 examples**" in line["markdown"]


def test_one_budget_gets_a_plain_single_budget_line():
    records = [r for r in fixture_records() if r["train_samples"] == 64 and r["metric"] is not None]
    (line,) = build(records).headlines
    assert line["text"] == ("topics, m (one budget: 64 examples): finetune ahead (lead over lora not significant); "
                            "vs scratch: +0.56 (significant); scratch does not catch up with the best transfer mode; "
                            "cheapest adequate mode (within the margin of the best): lora (-0.010 [-0.076, +0.056])")


def test_no_prediction_from_poor_fits():
    noisy = [dict(r, metric=r["metric"] + (0.2 if r["train_samples"] == 256 and r["mode"] == "scratch" else 0))
             for r in catching_up(still=())]  # scratch jumps at 256, then falls back: not a power law
    (line,) = build(noisy).headlines
    assert "predicted to come" not in line["text"] and line["predicted_crossover"] is None
    assert ("scratch does not catch up with the best transfer mode except at 256 examples (no crossover prediction: "
            "scratch: ill-behaved)") in line["text"]
    assert "**scratch wins at 256 examples**" in line["markdown"]
    assert ("cheapest adequate mode (within the margin of the best): lora at 128 examples (-0.010 [-0.033, +0.013]) "
            "and 512–1,024 examples") in line["text"]
    assert "provisional" not in line["text"]


def test_plots_draw_fits_crossover_and_the_gap_chart(board, tmp_path):
    figures = plots.write_all(board, tmp_path / "plots")
    # no cell reached the target: no time-to-target chart of "not reached" bars
    assert [f["kind"] for f in figures] == ["learning", "gap", "pareto", "training"]
    assert (tmp_path / "plots" / "gap-image-classification-builtin-digits.png").stat().st_size > 10_000
    fig = plots._figure()
    cells = [c for c in board.cells if c["n"]]
    caption = plots.learning_curves(board, cells, fig)
    (ax,) = fig.axes
    dashed = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    assert len(dashed) == 4 and max(dashed[0].get_xdata()) == pytest.approx(4 * 1024)  # to the planner's limit
    assert not [line for line in ax.get_lines() if line.get_linestyle() == ":"]  # no crossover claimed, none drawn
    assert "dashed: fitted curve (plan.md), 95% band" in caption and "dash-dot: chance (1 / classes)" in caption
    (chance,) = [line for line in ax.get_lines() if line.get_linestyle() == "-."]
    assert chance.get_ydata()[0] == pytest.approx(0.1)  # builtin:digits: 10 classes
    sharp = build(catching_up(noise=(-0.002, 0.0, 0.002)))  # a predicted crossover: marked where predicted
    fig = plots._figure()
    plots.learning_curves(sharp, [c for c in sharp.cells if c["n"]], fig)
    (mark,) = [line for line in fig.axes[0].get_lines() if line.get_linestyle() == ":"]
    claim = sharp.headlines[0]["predicted_crossover"]
    assert mark.get_xdata()[0] == claim["n"] and mark.get_label().startswith("predicted crossover ~")
    fig = plots._figure()
    plots.gap_vs_scratch(board, cells, fig)
    (ax,) = fig.axes
    series = {c.get_label(): c for c in ax.containers}
    assert set(series) == {"finetune", "lora", "linear-probe"}
    line, _, (bars,) = series["finetune"].lines
    ft = sorted((c for c in cells if c["mode"] == "finetune"), key=lambda c: c["train_samples"])
    assert list(line.get_ydata()) == pytest.approx([c["delta_vs_scratch"] for c in ft])
    assert [seg[0][1] for seg in bars.get_segments()] == pytest.approx([c["delta_ci"][0] for c in ft])
    assert any(list(h.get_ydata()) == [0, 0] for h in ax.get_lines())  # the zero line


def test_report_writes_the_plan_only_with_enough_budgets(reported, tmp_path):
    store, md = reported
    assert (store / "plan.md").read_text().startswith("## Plan: fixture")
    assert json.loads((store / "plan.json").read_text())["crossovers"][0]["model"] == "efficientnet-lite0"
    assert "[plan.md](plan.md)" in md
    for name in ("plan.md", "plan.json"):  # the published dataset folder carries the plan its card links to
        assert (store / "published" / name).read_text() == (store / name).read_text()
    two = write_store(tmp_path / "two", fixture_records())
    text = report([two])
    assert not (two / "plan.md").exists() and not (two / "plan.json").exists() and "plan.md" not in text


def test_headline_constants_follow_the_planner():
    assert inspect.signature(planner.plan).parameters["max_factor"].default == headline.MAX_FACTOR


def test_short_numbers():
    assert [fmt.short(x) for x in (0.31, 0.0423, -0.0037, 0.0, None)] == ["+0.31", "+0.042", "-0.0037", "+0.00", "—"]


def test_markdown_headline_escapes_and_bolds():
    records = [dict(r, model="m*1") for r in fixture_records()]
    md = to_markdown(build(records))
    assert "- topics, m\\*1: finetune ahead" in md
