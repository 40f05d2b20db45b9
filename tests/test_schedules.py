"""`schedule: plateau`: each mode trained to its validation plateau between a floor and a cap, validation taken from
inside the budget and disjoint from the final evaluation; the learning-rate search's tie rules."""
import json
import math

import pytest
import torch

from helpers import run_main
from transferbench.config import parse_suite
from transferbench.hyper import Plateau
from transferbench.modes import MODES
from transferbench.outcome import TrainOutcome
from transferbench.results import Store
from transferbench.runners.orchestrate.plan import plan_runs
from transferbench.runners.train import lr_search, plateau


def _suite(modes, **bench):
    return {"name": "s", "defaults": {"seeds": [0]},
            "benchmarks": [{"task": "text-classification", "dataset": "builtin:topics", "models": ["m"],
                            "modes": modes, "train_samples": [40], **bench}]}


def test_a_run_without_a_length_trains_to_its_plateau_and_one_with_a_length_as_given():
    plans = {p.spec.mode: p for p in plan_runs(parse_suite(_suite({"finetune": {"lr": 1e-3}, "scratch": {"lr": 1e-3}},
                                                                  )))}
    assert {p.spec.hyper.schedule for p in plans.values()} == {"plateau"}
    fixed = plan_runs(parse_suite(_suite({"finetune": {"lr": 1e-3, "epochs": 2}})))
    assert fixed[0].spec.hyper.schedule == "fixed" and "schedule" not in fixed[0].spec.model_dump()["hyper"]
    assert plans["finetune"].run_id != fixed[0].run_id
    dumped = plans["finetune"].spec.model_dump()["hyper"]
    assert dumped["schedule"] == "plateau" and dumped["plateau"] == Plateau().model_dump()  # its rule is identity


def test_validation_is_inside_the_budget_and_disjoint_from_what_the_run_fits():
    data = torch.utils.data.TensorDataset(torch.arange(100))
    budget = torch.utils.data.Subset(data, list(range(10, 50)))
    fit, validation = plateau.split(budget, Plateau(), seed=3)
    assert len(validation) == 8 and len(fit) == 32  # 20% of 40
    assert set(fit.indices) | set(validation.indices) == set(budget.indices)  # nothing beyond the budget
    assert not set(fit.indices) & set(validation.indices)
    assert plateau.split(budget, Plateau(), seed=3)[1].indices == validation.indices  # the seed decides
    tiny = torch.utils.data.Subset(data, [0, 1, 2, 3, 4])
    with pytest.raises(Exception, match="needs at least 2 left to fit"):
        plateau.split(tiny, Plateau(), seed=0)


def test_the_watch_stops_at_the_plateau_but_never_before_the_floor():
    watch = plateau.Watch(Plateau(patience=2, min_steps=20, eval_steps=5), higher_is_better=True)
    scores = [(5, 0.5, 1.0), (10, 0.7, 0.8), (15, 0.7, 0.9), (20, 0.7, 0.9), (25, 0.69, 0.9)]
    stops = [watch.update(step, metric, loss) for step, metric, loss in scores]
    assert stops == [False, False, False, True, True] and watch.best["step"] == 10
    saturated = plateau.Watch(Plateau(patience=1, min_steps=1), True)  # all right already: a falling loss is
    saturated.update(1, 1.0, 0.5)                                       # no reason to go on
    assert saturated.update(2, 1.0, 0.1) and saturated.best["step"] == 1
    assert plateau.final_steps(best_step=10, fit_batches=2, all_batches=3) == 15  # as many epochs of the budget


def test_floor_and_cap_apply_per_mode_and_the_final_run_is_scored_once_on_the_test_subset(tiny_bert, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(f"""
name: plateau
defaults: {{seeds: [0], batch_size: 8, lr: 1.0e-3, task_args: {{max_length: 16}}, eval_samples: 64}}
benchmarks:
  - task: text-classification
    dataset: builtin:topics
    models: [{tiny_bert}]
    plateau: {{min_steps: 6, max_steps: 12, eval_steps: 2, patience: 1}}
    modes:
      finetune: null
      scratch: {{plateau: {{min_steps: 6, max_steps: 18, eval_steps: 2, patience: 1}}}}
    train_samples: [40]
""")
    assert run_main("run", suite, "--results-dir", tmp_path / "r") == 0
    runs = {r["mode"]: r for r in Store(tmp_path / "r").records(strict=True)}
    for mode, cap in (("finetune", 12), ("scratch", 18)):
        p = runs[mode]["plateau"]
        assert p["cap"] == cap and p["floor"] == 6 and 6 <= p["steps_run"] <= cap, (mode, p)
        assert p["fit_samples"] + p["validation_samples"] == runs[mode]["train_samples"] == 40
        assert p["best_step"] in [q["step"] for q in p["curve"]] and all(q["step"] % 2 == 0 for q in p["curve"])
        assert runs[mode]["stop_reason"] == p["stopped"] in ("plateau", "cap")
        assert runs[mode]["converged"] is (p["stopped"] == "plateau")
        assert runs[mode]["optimizer_steps"] == p["final_steps"]  # the final run: the whole budget, chosen steps
        assert len(runs[mode]["curve"]) == 1 and runs[mode]["eval_samples"] == 64  # the test subset, once
        assert runs[mode]["wall_seconds"] >= p["seconds"] + runs[mode]["train_seconds"]


def _fake(scores: dict):
    def train(c, **rung):
        return TrainOutcome(metrics={"accuracy": scores(c.hyper.lr), "loss": 1.0 + c.hyper.lr})
    return train


def test_a_tie_at_chance_never_extends_the_grid_and_says_no_candidate_beat_chance():
    # the tie rule among candidates that trained all the steps (halving: 1; a first rung promotes by validation
    # loss and may look past an end the loss leads: tests/test_lr_search.py)
    one = {"halving": 1}
    (plan,) = plan_runs(parse_suite(_suite({"scratch": {"lr": "auto", "epochs": 1, "lr_search": one}})))
    chosen, record, _ = lr_search.search(plan.spec, plan.search, 40, _fake(lambda lr: 0.25), "accuracy", True, 20,
                                         chance=0.25)
    assert [s["lr"] for s in record["scores"]] == list(plan.search.grid)  # nothing tried beyond the grid
    # scratch's grid 1e-4 ... 3e-3 lacks its default 5e-4: the tie goes to the rates nearest the grid's centre
    # (3e-4 and 1e-3, equally near in log scale), of which the lower validation loss wins
    assert MODES["scratch"].default_lr not in plan.search.grid
    assert chosen == 3e-4 and record["outright"] is False and record["beat_chance"] is False
    (lora,) = plan_runs(parse_suite(_suite({"lora": {"lr": "auto", "epochs": 1, "lr_search": one}})))
    chosen, record, _ = lr_search.search(lora.spec, lora.search, 40, _fake(lambda lr: 0.25), "accuracy", True, 20)
    assert MODES["lora"].default_lr in lora.search.grid and chosen == MODES["lora"].default_lr


def test_a_tie_without_the_default_goes_to_the_grid_centre_and_an_outright_end_extends():
    one = {"halving": 1}  # the winner's rules at full length (successive halving: tests/test_lr_search.py)
    (plan,) = plan_runs(parse_suite(_suite({"finetune": {"lr": [1e-5, 1e-4, 1e-3, 1e-2], "epochs": 1,
                                                         "lr_search": one}})))
    chosen, record, _ = lr_search.search(plan.spec, plan.search, 40, _fake(lambda lr: 0.9 if lr >= 1e-4 else 0.5),
                                         "accuracy", True, 20, chance=0.25)
    centre = (math.log10(1e-5) + math.log10(1e-2)) / 2
    assert chosen == min((1e-4, 1e-3, 1e-2), key=lambda lr: abs(math.log10(lr) - centre)) and record["beat_chance"]
    (auto,) = plan_runs(parse_suite(_suite({"finetune": {"lr": "auto", "epochs": 1, "lr_search": one}})))
    top = max(auto.search.grid)
    chosen, record, _ = lr_search.search(auto.spec, auto.search, 40, _fake(lambda lr: min(0.99, 0.5 + lr * 100)),
                                         "accuracy", True, 20)
    assert record["outright"] and chosen > top  # the top end won outright: the grid extended past it
    assert json.loads(json.dumps(record))["validation"] == "budget"
