"""The budget planner on synthetic records with known curves: family choice, intervals that cover, crossovers and
data multipliers of known answer; no training."""
import json
import math

import numpy as np
import pytest
from helpers import write_store
from scipy.optimize import brentq

from transferbench.errors import UserError
from transferbench.runners.cli import main
from transferbench.runners.report import crossover, curves, planner
from transferbench.runners.report.planner_report import to_markdown, write_plan

BUDGETS = (64, 128, 256, 512, 1024)
KEY = ("image-classification", "builtin:digits", "effnet")


def records(mode, curve, budgets=BUDGETS, noise=(-0.003, 0.0, 0.003), higher_is_better=True, model="effnet",
            cost=(0.001, 1e-5), eval_samples=None):
    """One record per (budget, seed): metric = curve(n) + noise[seed]. Symmetric offsets keep each cell mean on the
    curve exactly and make the seed std known (0.003 for the default)."""
    return [dict(run_id=f"{model}-{mode}-{n}-{s}", suite="synthetic", task=KEY[0], dataset=KEY[1], model=model,
                 mode=mode, seed=s, train_samples=n, metric_name="accuracy" if higher_is_better else "error",
                 higher_is_better=higher_is_better, metric=float(curve(n) + e), status="ok",
                 cost_usd=cost[0] + cost[1] * n, device_hours=0.01 + 1e-4 * n, price_per_device_hour=0.1,
                 price_date="2026-11-25", eval_samples=eval_samples)
            for n in budgets for s, e in enumerate(noise)]


def simulated(curve, budgets, seeds, sd, rng, mode="scratch"):
    """Seeds drawn around a known curve: what a suite of `seeds` seeds measures."""
    return [dict(run_id=f"{mode}-{n}-{s}", suite="sim", task=KEY[0], dataset=KEY[1], model="effnet", mode=mode,
                 seed=s, train_samples=n, metric_name="accuracy", higher_is_better=True, status="ok",
                 metric=float(np.clip(curve(n) + rng.normal(0, sd), 0, 1))) for n in budgets for s in range(seeds)]


def power(a, b, c, sign=1):
    return lambda n: a - sign * b * n ** -c


def fitted(recs, mode):
    return curves.fit_curves(recs)[(*KEY, mode)]


def test_recovers_a_known_power_law_and_cost_line():
    rng = np.random.default_rng(7)
    recs = records("finetune", power(0.9, 2.0, 0.5), noise=tuple(rng.normal(0, 0.002, 3)))
    recs = [dict(r, metric=r["metric"] + rng.normal(0, 0.002)) for r in recs]  # noise per point, not only per seed
    fit = fitted(recs, "finetune")
    assert fit.status == "ok" and fit.r2 > 0.99 and fit.family == "power law"
    A, B, C = fit.params
    assert fit.a == pytest.approx(0.9, abs=0.02) and C == pytest.approx(0.5, abs=0.1)
    assert B * fit.n_ref ** C == pytest.approx(2.0, rel=0.3)  # b in n's own units
    mean, lo, hi = fit.predict(2048)
    assert lo <= mean <= hi and mean == pytest.approx(power(0.9, 2.0, 0.5)(2048), abs=0.01)
    assert fit.cost.alpha == pytest.approx(0.001) and fit.cost.beta == pytest.approx(1e-5)
    means, lows, highs = fit.predict(np.array([100.0, 1000.0]))  # arrays, for plots
    assert means.shape == lows.shape == highs.shape == (2,)


@pytest.mark.parametrize("truth, curve", [
    ("power law", power(0.95, 3.0, 0.7)),
    ("exponential", lambda n: 0.93 - 0.8 * math.exp(-n / 150)),
    ("logistic in log n", lambda n: 0.1 + 0.85 / (1 + (n / 300) ** -2.0)),  # flat, then up, then flat again
])
def test_the_family_that_made_the_curve_is_chosen(truth, curve):
    budgets = (32, 64, 128, 256, 512, 1024, 2048)
    fit = fitted(records("scratch", curve, budgets=budgets, noise=(-0.002, 0.0, 0.002)), "scratch")
    assert fit.family == truth, fit.errors
    assert fit.errors[truth] == min(fit.errors.values()) and len(fit.errors) == 3
    assert "predicting 2,048 from the smaller budgets" in fit.choice
    assert fit.mean(2048) == pytest.approx(curve(2048), abs=0.01)


def test_three_budgets_are_never_ok_and_choose_by_aicc():
    fit = fitted(records("lora", power(0.9, 2.0, 0.5), budgets=(64, 128, 256)), "lora")
    assert fit.status == "few budgets" and "ok needs 4+" in fit.reason
    assert fit.choice.startswith("AICc") and set(fit.errors) == set(curves.FAMILIES)
    assert not fit.trusted and fit.predict(512)[1] is not None  # shown with an interval, not trusted


def test_intervals_cover_held_out_means_of_simulated_seeds(monkeypatch):
    """Seeds around known curves of each family: fit the smaller budgets, predict the largest. The 95% intervals
    must cover at least 80% of the measured means (the issue's bar; a calibrated interval covers ~95%)."""
    monkeypatch.setattr(curves, "BOOTSTRAP", 100)  # fewer refits: the coverage, not the last digit, is tested
    rng = np.random.default_rng(3)
    truths = [power(0.97, 1.2, 0.5), lambda n: 0.95 - 0.6 * math.exp(-n / 300),
              lambda n: 0.1 + 0.85 / (1 + (n / 200) ** -1.5)]
    inside = []
    for rep in range(6):
        for curve in truths:
            held = planner.validate(simulated(curve, (45, 90, 180, 360, 720, 1440), 3, 0.02, rng))["curves"][0]
            inside.append(held["inside"])
    assert sum(inside) / len(inside) >= 0.8, inside


def test_flat_curve_is_stated_not_crashed():
    fit = fitted(records("scratch", lambda n: 0.25, noise=(0.0, 0.0, 0.0)), "scratch")
    assert fit.status == "flat" and "same value" in fit.reason
    assert fit.predict(4096) == (pytest.approx(0.25), None, None)  # no noise anywhere: nothing to draw from
    result = planner.plan(records("scratch", lambda n: 0.25, noise=(0.0, 0.0, 0.0)), target=0.5)
    assert result["curves"][0]["status"] == "flat"
    assert result["targets"][0]["cheapest"] is None
    jitter = [0.001, -0.002, 0.0015, -0.001, 0.0005]  # within the seeds' noise: flat, with an interval
    noisy = fitted(records("lora", lambda n: 0.7 + jitter[BUDGETS.index(n)], noise=(-0.01, 0.0, 0.01)), "lora")
    assert noisy.status == "flat"
    mean, lo, hi = noisy.predict(4096)
    assert lo < 0.7 < hi and hi - lo > 0.01  # at least the seeds' own noise of a 3-seed mean


def test_a_curve_that_drops_is_ill_behaved():
    zigzag = dict(zip(BUDGETS, (0.5, 0.8, 0.4, 0.9, 0.45)))
    fit = fitted(records("lora", zigzag.get, noise=(-0.01, 0.0, 0.01)), "lora")
    assert fit.status == "ill-behaved" and "128 to 256" in fit.reason and "not trusted" in fit.reason
    result = planner.plan(records("lora", zigzag.get, noise=(-0.01, 0.0, 0.01)))
    assert result["curves"][0]["predictions"]  # shown, flagged
    assert "ill-behaved" in to_markdown(result)
    # a drop within the seeds' noise is not a break
    wobble = dict(zip(BUDGETS, (0.5, 0.7, 0.695, 0.8, 0.85)))
    assert fitted(records("lora", wobble.get, noise=(-0.01, 0.0, 0.01)), "lora").status != "ill-behaved"


def test_too_few_budgets_not_fitted_and_refused_when_nothing_fits():
    two = records("scratch", power(0.9, 2.0, 0.5), budgets=(64, 128))
    fit = fitted(two, "scratch")
    assert fit.status == "not fitted" and fit.reason == "2 budgets; a fit needs at least 3"
    with pytest.raises(ValueError):
        fit.predict(100)
    with pytest.raises(UserError, match="no curve has 3 or more budgets"):
        planner.plan(two)
    result = planner.plan(two + records("finetune", power(0.9, 2.0, 0.5)))  # one fittable curve is enough
    statuses = {c["mode"]: (c["status"], c["reason"]) for c in result["curves"]}
    assert statuses["scratch"] == ("not fitted", "2 budgets; a fit needs at least 3")
    assert statuses["finetune"][0] == "ok"
    assert "no predicted crossover (scratch is not fitted)" in to_markdown(result)


def test_extrapolation_beyond_the_factor_is_refused():
    recs = records("finetune", power(0.9, 2.0, 0.5))
    ok = planner.plan(recs, budgets=[4096])  # exactly 4x the largest
    assert [p["n"] for p in ok["curves"][0]["predictions"]] == [4096]
    assert ok["curves"][0]["predictions"][0]["extrapolated"] == 4.0
    with pytest.raises(UserError, match=r"beyond 4× the largest budget measured .* at most 4,096"):
        planner.plan(recs, budgets=[5000])
    assert planner.plan(recs, budgets=[5000], max_factor=8)["curves"][0]["predictions"][0]["n"] == 5000
    default = [p["n"] for p in planner.plan(recs, max_factor=3)["curves"][0]["predictions"]]
    assert default == [*BUDGETS, 2048, 3072]  # measured, 2x and the cap instead of 4x
    with pytest.raises(UserError, match="--max-factor"):
        planner.plan(recs, max_factor=0.5)


def test_predicted_crossover_of_known_answer():
    finetune, scratch = power(0.9, 0.5, 0.5), power(0.9, 10.0, 0.9)
    budgets = BUDGETS + (2048,)
    recs = records("finetune", finetune, budgets=budgets) + records("scratch", scratch, budgets=budgets)
    result = planner.plan(recs)
    cross = result["crossovers"][0]
    margin = 0.01  # no eval_samples recorded: the margin's floor
    expected = brentq(lambda n: finetune(n) - scratch(n) - margin, 100, 8000)
    pred = next(p for p in cross["predicted"] if p["mode"] == "finetune")
    assert cross["margin"] == margin and pred["crossover_budget"] == pytest.approx(expected, rel=0.03)
    assert pred["lo"] <= expected <= (pred["hi"] or math.inf)
    measured = next(m for m in cross["measured"] if m["mode"] == "finetune")
    first = min(n for n in budgets if finetune(n) - scratch(n) <= margin)
    assert measured["crossover_budget"] == first
    text = to_markdown(result)
    assert f"scratch vs finetune: catches up from {first:,} on (measured)" in text
    assert "scratch vs finetune: predicted to catch up at ~" in text


def test_no_crossover_when_scratch_never_catches_up():
    recs = records("finetune", power(0.9, 0.5, 0.5)) + records("scratch", power(0.6, 10.0, 0.9))
    result = planner.plan(recs)
    pred = result["crossovers"][0]["predicted"][0]
    assert pred["crossover_budget"] is None and crossover.verdict(pred) == "not reached"
    assert "scratch vs finetune: not predicted below 4,096 examples" in to_markdown(result)
    assert "scratch vs finetune: not reached up to 1,024 examples (measured)" in to_markdown(result)


def test_measured_crossover_uses_the_margin_and_must_hold_to_the_largest_budget():
    means = {"scratch": {10: 0.5, 20: 0.795, 40: 0.7, 80: 0.9}, "finetune": {10: 0.8, 20: 0.8, 40: 0.8, 80: 0.9},
             "lora": {10: 0.6, 20: 0.85, 40: 0.6, 80: 0.905}}
    margins = {n: 0.01 for n in (10, 20, 40, 80)}
    found = {m["mode"]: m["crossover_budget"] for m in crossover.measured(means, margins, 1)}
    assert found == {"finetune": 80, "lora": 40, crossover.BEST: 80}  # 20 catches finetune, 40 does not
    means["lora"][80] = 0.95  # beyond the margin at the largest budget: no crossover, whatever came before
    found = {m["mode"]: m["crossover_budget"] for m in crossover.measured(means, margins, 1)}
    assert found == {"finetune": 80, "lora": None, crossover.BEST: None}


def test_data_multiplier_of_known_answer():
    """Scratch 0.9 − 10·n^(−0.9): a finetune cell measuring v at 64 examples is worth (10 / (0.9 − v))^(1/0.9)
    scratch examples."""
    scratch = power(0.9, 10.0, 0.9)
    budgets = (64, 128, 256, 512, 1024, 2048)
    finetune = {64: 0.8, 256: 0.86, 1024: 0.95}
    recs = records("scratch", scratch, budgets=budgets) + [
        dict(r, metric=finetune[r["train_samples"]] + (r["seed"] - 1) * 0.003)
        for r in records("finetune", lambda n: 0.0, budgets=tuple(finetune))]
    rows = {(e["mode"], e["budget"]): e for e in planner.multipliers(recs)}
    for n, v in ((64, 0.8), (256, 0.86)):
        e = rows[("finetune", n)]
        expected = (10.0 / (0.9 - v)) ** (1 / 0.9)
        assert e["scratch_budget"] == pytest.approx(expected, rel=0.03)
        assert e["multiplier"] == pytest.approx(expected / n, rel=0.03)
        assert e["multiplier_lo"] <= e["multiplier"] <= (e["multiplier_hi"] or math.inf)
    assert rows[("finetune", 64)]["note"] == "interpolated"  # ~160, inside scratch's budgets
    assert rows[("finetune", 256)]["note"] == "interpolated" or rows[("finetune", 256)]["scratch_budget"] < 8192
    assert rows[("finetune", 1024)]["scratch_budget"] is None and rows[("finetune", 1024)]["note"] == "not reached"
    text = to_markdown(planner.plan(recs))
    assert "effnet, data transferred: finetune at 64 examples (0.8000) ≈ scratch at ~" in text
    assert "| effnet | finetune | 1,024 | 0.9500 | — " in text


def test_hindcast_predicts_a_measured_crossover_from_a_quarter_of_it():
    finetune, scratch = power(0.92, 0.5, 0.5), power(0.95, 6.0, 0.7)
    budgets = (32, 64, 128, 256, 512, 1024, 2048)
    recs = records("finetune", finetune, budgets=budgets) + records("scratch", scratch, budgets=budgets)
    rows = planner.hindcast(recs)
    h = next(r for r in rows if r["mode"] == "finetune")
    first = min(n for n in budgets if finetune(n) - scratch(n) <= 0.01)
    assert h["measured"] == first and max(h["fit_on"]) * 4 <= first and h["outcome"] == "agrees"
    assert "### Validation: each measured crossover predicted from the budgets ≤ 1/4 of it" in to_markdown(
        planner.plan(recs))


def test_validation_reports_the_holdout_error_and_the_coverage():
    good = records("finetune", power(0.9, 2.0, 0.5))
    off = [dict(r, metric=r["metric"] + (0.08 if r["train_samples"] == 1024 else 0.0))
           for r in records("scratch", power(0.9, 20.0, 0.8))]
    few = records("lora", power(0.9, 2.0, 0.5), budgets=(64, 128, 256))  # 3 budgets: nothing to hold out
    v = planner.validate(good + off + few)
    by_mode = {e["mode"]: e for e in v["curves"]}
    assert set(by_mode) == {"finetune", "scratch"}
    assert by_mode["finetune"]["fit_on"] == [64, 128, 256, 512] and by_mode["finetune"]["largest"] == 1024
    assert by_mode["finetune"]["abs_error"] < 0.005 and by_mode["finetune"]["inside"]
    assert by_mode["scratch"]["abs_error"] == pytest.approx(0.08, abs=0.02) and not by_mode["scratch"]["inside"]
    assert v["coverage"] == dict(inside=1, checked=2, level=0.95)
    text = to_markdown(planner.plan(good + off + few))
    assert "Calibration: 1 of 2 held-out measured means inside their 95% interval (50%" in text
    assert "### Validation: fit on smaller budgets, predict the largest" in text and "| miss |" in text


def test_one_seed_per_budget_and_determinism():
    recs = records("finetune", power(0.9, 2.0, 0.5), noise=(0.0,))
    fit = fitted(recs, "finetune")
    assert fit.predict(2048)[1] is not None  # no seeds, but budgets to spare: the misfit gives the interval
    three = records("finetune", power(0.9, 2.0, 0.5), noise=(0.0,), budgets=(64, 128, 256))
    assert fitted(three, "finetune").predict(512)[1] is None and "no interval" in fitted(three, "finetune").reason
    both = records("scratch", power(0.9, 20.0, 0.8)) + records("finetune", power(0.9, 2.0, 0.5))
    curves._FITS.clear()
    first = json.dumps(planner.plan(both))
    curves._FITS.clear()
    assert json.dumps(planner.plan(both)) == first  # a fixed RNG: the same store, the same plan


def test_cli_plan_prints_and_writes_only_with_out(tmp_path, capsys):
    store = write_store(tmp_path / "res", records("finetune", power(0.9, 0.5, 0.5)) +
                        records("scratch", power(0.9, 10.0, 0.9)))
    before = sorted(p.name for p in store.iterdir())
    assert main(["plan", str(store), "--target", "0.85", "--max-cost", "0.005", "--budgets", "256,2048"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## Plan: synthetic") and sorted(p.name for p in store.iterdir()) == before
    assert main(["plan", str(store), str(store), "--target", "0.85"]) == 0  # several stores: printed too
    assert main(["plan", str(store), "--target", "0.85", "--max-cost", "0.005", "--budgets", "256,2048",
                 "--out", str(tmp_path / "plan")]) == 0
    printed = capsys.readouterr().out.split("## Plan: synthetic")[-1]
    assert (tmp_path / "plan" / "plan.md").read_text() + "\n" == "## Plan: synthetic" + printed
    data = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert {c["mode"] for c in data["curves"]} == {"finetune", "scratch"}
    assert all(math.isfinite(p["mean"]) for c in data["curves"] for p in c["predictions"])
    assert data["crossovers"][0]["predicted"][0]["text"] and data["targets"][0]["text"]
    assert data["multipliers"] and all(e["text"] for e in data["multipliers"])


@pytest.mark.parametrize("args", [
    ["--budgets", "256,lots"],
    ["--budgets", "5000"],  # beyond 4x the largest
    ["--max-cost", "-1"],
    ["--target", "-0.5"],
    ["--target", "high"],
    ["--max-factor", "0"],
    ["{tmp}/nowhere"],
])
def test_cli_plan_bad_input_is_one_line_exit_2(tmp_path, capsys, args):
    store = write_store(tmp_path / "res", records("finetune", power(0.9, 0.5, 0.5)))
    argv = ["plan", *(a.replace("{tmp}", str(tmp_path)) for a in args), "--out", str(tmp_path / "plan")]
    if not args[0].startswith("{tmp}"):
        argv.insert(1, str(store))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("transferbench: error: ")
    assert not (tmp_path / "plan").exists()


def test_published_single_budget_store_is_refused(tmp_path):
    from pathlib import Path

    with pytest.raises(UserError, match="no curve has 3 or more budgets"):
        write_plan([Path(__file__).resolve().parents[1] / "results/published/topics"], out=tmp_path)
