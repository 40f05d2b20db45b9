"""The budget planner on synthetic records with known curves: no training, a few seconds."""
import json
import math

import numpy as np
import pytest
from helpers import write_store
from scipy.optimize import brentq

from transferbench.errors import UserError
from transferbench.runners.report import curves, planner
from transferbench.runners.cli import main
from transferbench.runners.report.planner_report import to_markdown, write_plan

BUDGETS = (64, 128, 256, 512, 1024)
KEY = ("image-classification", "builtin:digits", "effnet")


def records(mode, curve, budgets=BUDGETS, noise=(-0.003, 0.0, 0.003), higher_is_better=True, model="effnet",
            cost=(0.001, 1e-5)):
    """One record per (budget, seed): metric = curve(n) + noise[seed]. Symmetric offsets keep each cell mean on the
    curve exactly and make the seed std known (0.003 for the default)."""
    return [dict(run_id=f"{model}-{mode}-{n}-{s}", suite="synthetic", task=KEY[0], dataset=KEY[1], model=model,
                 mode=mode, seed=s, train_samples=n, metric_name="accuracy" if higher_is_better else "error",
                 higher_is_better=higher_is_better, metric=float(curve(n) + e), status="ok",
                 cost_usd=cost[0] + cost[1] * n, device_hours=0.01 + 1e-4 * n, price_per_device_hour=0.1,
                 price_date="2026-11-25")
            for n in budgets for s, e in enumerate(noise)]


def power(a, b, c, sign=1):
    return lambda n: a - sign * b * n ** -c


def test_recovers_known_parameters_and_cost_line():
    rng = np.random.default_rng(7)
    recs = records("finetune", power(0.9, 2.0, 0.5), noise=tuple(rng.normal(0, 0.002, 3)))
    recs = [dict(r, metric=r["metric"] + rng.normal(0, 0.002)) for r in recs]  # noise per point, not only per seed
    fit = curves.fit_curves(recs)[(*KEY, "finetune")]
    assert fit.status == "ok" and fit.r2 > 0.99
    assert fit.a == pytest.approx(0.9, abs=0.02)
    assert fit.c == pytest.approx(0.5, abs=0.1)
    assert fit.b == pytest.approx(2.0, rel=0.3)
    mean, lo, hi = fit.predict(2048)
    assert lo <= mean <= hi and mean == pytest.approx(power(0.9, 2.0, 0.5)(2048), abs=0.01)
    assert fit.cost.alpha == pytest.approx(0.001) and fit.cost.beta == pytest.approx(1e-5)
    assert fit.cost(2048) == pytest.approx(0.001 + 1e-5 * 2048)
    means, lows, highs = fit.predict(np.array([100.0, 1000.0]))  # arrays, for plots
    assert means.shape == lows.shape == highs.shape == (2,)


def test_lower_is_better_curve():
    fit = curves.fit_curves(records("lora", power(0.05, 3.0, 0.6, sign=-1), higher_is_better=False))[(*KEY, "lora")]
    assert fit.status == "ok"
    assert fit.a == pytest.approx(0.05, abs=0.01) and fit.c == pytest.approx(0.6, abs=0.05)
    assert fit.predict(4096)[0] == pytest.approx(0.05 + 3.0 * 4096 ** -0.6, abs=0.005)


def test_flat_curve_is_stated_not_crashed():
    fits = curves.fit_curves(records("scratch", lambda n: 0.25, noise=(0.0, 0.0, 0.0)))
    fit = fits[(*KEY, "scratch")]
    assert fit.status == "flat" and "same value" in fit.reason
    assert fit.predict(4096) == (pytest.approx(0.25), pytest.approx(0.25), pytest.approx(0.25))
    result = planner.plan(records("scratch", lambda n: 0.25, noise=(0.0, 0.0, 0.0)), target=0.5)
    assert result["curves"][0]["status"] == "flat"
    assert result["targets"][0]["cheapest"] is None
    # within the seeds' noise: flat or poor fit, both said in words, never a confident curve
    jitter = [0.001, -0.002, 0.0015, -0.001, 0.0005]
    noisy = records("lora", lambda n: 0.7 + jitter[BUDGETS.index(n)], noise=(-0.01, 0.0, 0.01))
    assert curves.fit_curves(noisy)[(*KEY, "lora")].status in ("flat", "poor fit")


def test_noisy_curve_is_an_honest_poor_fit():
    zigzag = dict(zip(BUDGETS, (0.5, 0.8, 0.4, 0.9, 0.45)))
    recs = records("lora", zigzag.get, noise=(-0.01, 0.0, 0.01))
    fit = curves.fit_curves(recs)[(*KEY, "lora")]
    assert fit.status == "poor fit" and fit.r2 < curves.R2_MIN
    assert "not trusted" in fit.reason
    result = planner.plan(recs)
    assert result["curves"][0]["predictions"]  # shown, flagged
    assert "poor fit" in to_markdown(result)


def test_too_few_budgets_not_fitted_and_refused_when_nothing_fits():
    two = records("scratch", power(0.9, 2.0, 0.5), budgets=(64, 128))
    fit = curves.fit_curves(two)[(*KEY, "scratch")]
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


def test_published_single_budget_store_is_refused(tmp_path):
    with pytest.raises(UserError, match="no curve has 3 or more budgets"):
        write_plan([planner_repo() / "results/published/topics"], out=tmp_path)


def planner_repo():
    from pathlib import Path

    return Path(__file__).resolve().parents[1]


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


def test_crossover_where_scratch_catches_up():
    finetune, scratch = power(0.9, 0.5, 0.5), power(0.9, 10.0, 0.9)
    budgets = BUDGETS + (2048,)
    recs = records("finetune", finetune, budgets=budgets) + records("scratch", scratch, budgets=budgets)
    result = planner.plan(recs)
    cross = result["crossovers"][0]
    std = 0.003  # finetune's seed std, by construction
    expected = brentq(lambda n: finetune(n) - scratch(n) - std, 200, 8000)
    assert cross["best_mode"] == "finetune" and cross["std"] == pytest.approx(std)
    assert cross["crossover_budget"] == pytest.approx(expected, rel=0.05)
    text = to_markdown(result)
    assert "scratch predicted to come within one std (0.0030, finetune's mean seed std) of finetune at ~" in text
    assert "within the budgets measured" in text


def test_no_crossover_when_scratch_never_catches_up():
    recs = records("finetune", power(0.9, 0.5, 0.5)) + records("scratch", power(0.6, 10.0, 0.9))
    result = planner.plan(recs)
    assert result["crossovers"][0]["crossover_budget"] is None
    assert "effnet: no crossover predicted below 4,096 examples" in to_markdown(result)


def test_target_and_cost_cap():
    recs = records("finetune", power(0.9, 0.5, 0.5), cost=(0.001, 2e-5)) + \
        records("lora", power(0.9, 0.5, 0.5), cost=(0.001, 1e-5)) + records("linear-probe", power(0.7, 0.5, 0.5))
    result = planner.plan(recs, target=0.88, max_cost=0.01)
    target = result["targets"][0]
    need = (0.5 / 0.02) ** 2  # 0.9 - 0.5 / sqrt(n) = 0.88
    by_mode = {r["mode"]: r for r in target["modes"]}
    assert by_mode["lora"]["n"] == pytest.approx(need, rel=0.02)
    assert target["cheapest"] == "lora" and target["cheapest_by"] == "cost_usd"  # same curve, half the price
    assert by_mode["linear-probe"]["n"] is None
    caps = {c["mode"]: c["max_cost"] for c in result["curves"]}
    assert caps["lora"]["n"] == pytest.approx((0.01 - 0.001) / 1e-5, rel=1e-6)
    assert caps["lora"]["cost_usd"] == pytest.approx(0.01)
    assert caps["finetune"]["mean"] < caps["lora"]["mean"]  # fewer examples for the same money
    text = to_markdown(result)
    assert "target 0.88: cheapest is lora" in text and "within $0.01 per run" in text
    with pytest.raises(UserError, match="write 0.9, not 90"):
        planner.plan(recs, target=90)


def test_validation_reports_the_holdout_error():
    good = records("finetune", power(0.9, 2.0, 0.5))
    off = [dict(r, metric=r["metric"] + (0.05 if r["train_samples"] == 1024 else 0.0))
           for r in records("scratch", power(0.9, 20.0, 0.8))]
    few = records("lora", power(0.9, 2.0, 0.5), budgets=(64, 128, 256))  # 3 budgets: nothing to hold out
    v = planner.validate(good + off + few)
    by_mode = {e["mode"]: e for e in v["curves"]}
    assert set(by_mode) == {"finetune", "scratch"}
    assert by_mode["finetune"]["fit_on"] == [64, 128, 256, 512] and by_mode["finetune"]["largest"] == 1024
    assert by_mode["finetune"]["abs_error"] < 0.005 and by_mode["finetune"]["inside"]
    assert by_mode["scratch"]["abs_error"] == pytest.approx(0.05, abs=0.01) and not by_mode["scratch"]["inside"]
    assert v["mae"][0]["mae"] == pytest.approx((by_mode["finetune"]["abs_error"] + by_mode["scratch"]["abs_error"]) / 2)
    text = to_markdown(planner.plan(good + off + few))
    assert "### Validation: fit on smaller budgets, predict the largest" in text and "| miss |" in text


def test_one_seed_per_budget_has_no_interval_and_output_is_deterministic():
    recs = records("finetune", power(0.9, 2.0, 0.5), noise=(0.0,))
    fit = curves.fit_curves(recs)[(*KEY, "finetune")]
    mean, lo, hi = fit.predict(2048)
    assert lo is None and hi is None and "no interval" in fit.reason
    both = records("scratch", power(0.9, 20.0, 0.8)) + records("finetune", power(0.9, 2.0, 0.5))
    assert json.dumps(planner.plan(both)) == json.dumps(planner.plan(both))


def test_cli_plan_writes_files(tmp_path, capsys):
    store = write_store(tmp_path / "res", records("finetune", power(0.9, 0.5, 0.5)) +
                        records("scratch", power(0.9, 10.0, 0.9)))
    assert main(["plan", str(store), "--target", "0.85", "--max-cost", "0.005", "--budgets", "256,2048"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## Plan: synthetic")
    assert (store / "plan.md").read_text() + "\n" == out
    data = json.loads((store / "plan.json").read_text())
    assert {c["mode"] for c in data["curves"]} == {"finetune", "scratch"}
    assert all(math.isfinite(p["mean"]) for c in data["curves"] for p in c["predictions"])
    assert data["crossovers"][0]["text"] and data["targets"][0]["text"]


@pytest.mark.parametrize("args", [
    ["--budgets", "256,lots"],
    ["--budgets", "5000"],  # beyond 4x the largest
    ["--max-cost", "-1"],
    ["--target", "-0.5"],
    ["--target", "high"],
    ["--max-factor", "0"],
    ["{tmp}/nowhere"],
    ["{tmp}/res", "{tmp}/res"],  # several stores need --out
])
def test_cli_plan_bad_input_is_one_line_exit_2(tmp_path, capsys, args):
    store = write_store(tmp_path / "res", records("finetune", power(0.9, 0.5, 0.5)))
    argv = ["plan", *(a.replace("{tmp}", str(tmp_path)) for a in args)]
    if not args[0].startswith("{tmp}"):
        argv.insert(1, str(store))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("transferbench: error: ")
    assert not (store / "plan.md").exists()
