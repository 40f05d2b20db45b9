"""Run plans (runners/orchestrate/plan.py): a suite resolved once into frozen runs. The learning rate is a number or a
search with its grid, the loop and the stage are resolved, the price is policy, and run_ids are those the stores
hold."""
import dataclasses
import json
from pathlib import Path

import pytest

from transferbench.config import load_suite, parse_suite
from transferbench.errors import UserError
from transferbench.hyper import LrSearch
from transferbench.modes import MODES
from transferbench.runners.orchestrate.plan import LrSearchPlan, plan_runs

REPO = Path(__file__).resolve().parents[1]
SUITE = {
    "name": "t",
    "defaults": {"seeds": [0]},
    "benchmarks": [{"task": "text-classification", "dataset": "builtin:topics", "models": ["m"],
                    "modes": {"scratch": None, "finetune": {"lr": 5e-5}, "lora": {"lr": "default"},
                              "linear-probe": {"lr": [1e-2, 1e-3]}},
                    "train_samples": [64]}],
}


def test_the_learning_rate_is_resolved_once_into_a_number_or_a_search():
    plans = {p.spec.mode: p for p in plan_runs(parse_suite(SUITE))}
    scratch, probe = plans["scratch"], plans["linear-probe"]
    scratch_default = MODES["scratch"].default_lr  # a tie goes to it
    # unset: searched, once per cell: by its first seed's run (the only seed here: its own)
    assert scratch.lr == LrSearchPlan(MODES["scratch"].auto_grid, "auto", LrSearch(), scratch_default, seed=0,
                                      by=scratch.run_id)
    assert scratch.spec.hyper.lr == "auto" and scratch.search is scratch.lr
    assert plans["finetune"].lr == 5e-5 and plans["finetune"].search is None
    assert plans["lora"].lr == MODES["lora"].default_lr == plans["lora"].spec.hyper.lr  # "default": the number
    assert probe.lr == LrSearchPlan((1e-3, 1e-2), "grid", LrSearch(), MODES["linear-probe"].default_lr, seed=0,
                                    by=probe.run_id)  # kept sorted
    assert {p.loop for p in plans.values()} == {"hf"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        scratch.lr = 1.0


def test_a_loop_without_a_search_gets_the_mode_default_and_refuses_auto():
    bench = {"task": "object-detection", "dataset": "builtin:shapes", "models": ["yolov8n.yaml"],
             "modes": {"scratch": None}, "train_samples": [16]}
    (plan,) = plan_runs(parse_suite({**SUITE, "benchmarks": [bench]}))
    assert plan.loop == "ultralytics" and plan.lr == MODES["scratch"].default_lr
    with pytest.raises(UserError, match=r"benchmarks\[0\].modes.scratch.lr: this task trains with its own loop"):
        plan_runs(parse_suite({**SUITE, "benchmarks": [{**bench, "modes": {"scratch": {"lr": "auto"}}}]}))


def test_a_stage_is_planned_once_at_one_rate_and_feeds_its_runs():
    suite = load_suite(REPO / "benchmarks" / "quickstart.yaml")
    staged = [p for p in plan_runs(suite) if p.stage is not None]
    assert staged and all(p.spec.stage == p.stage.spec for p in staged)
    assert all(isinstance(p.stage.lr, float) and p.stage.search is None for p in staged)
    assert all(p.spec.model_source == p.stage.spec.model != p.spec.model for p in staged)
    bad = {**SUITE, "pretrain": {"s": {"task": "text-classification", "dataset": "builtin:topics", "model": "m",
                                       "lr": "auto"}},
           "benchmarks": [{**SUITE["benchmarks"][0], "models": ["pretrain:s"]}]}
    with pytest.raises(UserError, match="pretrain.s.lr: a pretrain stage trains once at one rate"):
        plan_runs(parse_suite(bad))


def test_the_price_is_policy_not_identity():
    given = parse_suite({**SUITE, "defaults": {"seeds": [0], "price_per_device_hour": 3.0}})
    plain, priced, overridden = plan_runs(parse_suite(SUITE)), plan_runs(given), plan_runs(given, None, 0.5)
    assert [p.run_id for p in plain] == [p.run_id for p in priced] == [p.run_id for p in overridden]
    assert {p.policy.price_per_device_hour for p in priced} == {3.0}
    assert {p.policy.price_per_device_hour for p in overridden} == {0.5}  # the command line wins
    assert {p.policy.price_per_device_hour for p in plain} == {None}  # the dated table decides at run time


def test_the_budget_and_the_model_source_are_spelled_once():
    fractions = {**SUITE["benchmarks"][0], "train_samples": None, "train_fraction": [0.5]}
    whole = {k: v for k, v in fractions.items() if k != "train_fraction"}
    budgets = [p.spec.budget for p in plan_runs(parse_suite({**SUITE, "benchmarks": [SUITE["benchmarks"][0],
                                                                                    fractions, whole]}))]
    assert budgets == [64] * 4 + [0.5] * 4 + ["all"] * 4
    assert all(p.spec.model_source == "m" for p in plan_runs(parse_suite(SUITE)))


def test_plans_keep_the_run_ids_of_the_published_stores():
    """The plans of the shipped default suite are the runs its published store holds, id for id."""
    published = REPO / "results" / "published" / "quickstart" / "runs.jsonl"
    stored = {json.loads(line)["run_id"] for line in published.read_text().splitlines()}
    planned = {p.run_id for p in plan_runs(load_suite(REPO / "benchmarks" / "quickstart.yaml"))}
    assert planned == stored


def test_a_shard_is_every_nth_plan():
    suite = parse_suite({**SUITE, "defaults": {"seeds": [0, 1, 2]}})
    everything = [p.run_id for p in plan_runs(suite)]
    parts = [[p.run_id for p in plan_runs(suite, f"{i}/3")] for i in (1, 2, 3)]
    assert sorted(sum(parts, [])) == sorted(everything) and parts[0] == everything[0::3]
    with pytest.raises(UserError, match="--shard must look like I/N"):
        plan_runs(suite, "4/3")
