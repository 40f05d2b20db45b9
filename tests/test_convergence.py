"""Convergence flags (transferbench/convergence.py) and the linear probe on cached features (runners/train/features.py)."""
import pytest

from transferbench.convergence import EVAL_TOLERANCE, MIN_STEPS, judge
from transferbench.outcome import TrainOutcome


def _points(*metrics):
    return [{"step": i, "metric": m} for i, m in enumerate(metrics)]


def test_a_run_whose_last_evaluation_still_gained_is_still_improving():
    converged, why = judge(_points(0.5, 0.7, 0.8), [], higher_is_better=True)
    assert converged is False and "+0.1000" in why
    assert judge(_points(0.80, 0.80 + EVAL_TOLERANCE / 2), [], True)[0] is True
    assert judge(_points(0.90, 0.85), [], True)[0] is True  # got worse: more of this schedule would not help
    assert judge(_points(2.0, 1.5), [], higher_is_better=False)[0] is False  # a loss-like metric still falling


def test_with_one_evaluation_the_training_loss_decides():
    falling = [4.0 - 0.1 * i for i in range(20)]
    assert judge(_points(0.5), falling, True)[0] is False
    assert judge(_points(0.5), [1.0] * 20, True)[0] is True
    converged, why = judge(_points(0.5), [1.0] * (MIN_STEPS - 1), True)
    assert converged is None and "too short" in why


def test_the_record_gets_the_flag_from_the_outcome():
    from transferbench.config import parse_suite
    from transferbench.runners.orchestrate.plan import plan_runs
    from transferbench.runners.orchestrate.record import Measured, build_record

    (plan,) = plan_runs(parse_suite({"name": "s", "benchmarks": [{
        "task": "text-classification", "dataset": "builtin:topics", "models": ["m"], "modes": {"finetune": {"lr": 1e-3}},
        "train_samples": [8]}]}))
    res = build_record(plan, TrainOutcome(metrics={"accuracy": 0.8}, curve=_points(0.6, 0.8), losses=[1.0] * 120),
                       Measured("CPU", 1, 1, {}))
    assert res.converged is False and res.metric == 0.8 and res.best_metric == 0.8
    assert len(res.loss_curve) == 40 and res.loss_curve[-1] == {"step": 120, "loss": 1.0}  # thinned to <= 50 points


@pytest.mark.parametrize("model_stage", ["glyphs-resnet"])
def test_cached_features_probe_equals_the_probe_through_the_model(model_stage):
    """Same subset, schedule and head init: training the head on cached features of the frozen backbone gives
    the very numbers of training it through the model (a ResNet: BatchNorm statistics stay frozen in both)."""
    from transferbench.config import parse_suite
    from transferbench.runners.orchestrate.execute import execute
    from transferbench.runners.orchestrate.stages import SHIPPED_STAGES
    from transferbench.runners.orchestrate.plan import plan_runs

    model = str(next(SHIPPED_STAGES.glob(f"{model_stage}-*")))

    def run(**mode):
        suite = parse_suite({"name": "lp", "defaults": {"seeds": [0], "batch_size": 16, "epochs": 3, "lr": "default"},
                             "benchmarks": [{"task": "image-classification", "dataset": "builtin:digits",
                                             "models": [model], "modes": {"linear-probe": mode or None},
                                             "train_samples": [64]}]})
        (plan,) = plan_runs(suite)
        return execute(plan)

    through, cached, again = run(), run(cached_features=True), run(cached_features=True)
    assert through.status == cached.status == "ok"
    assert cached.metric == pytest.approx(through.metric, abs=1e-4)
    assert [p["loss"] for p in cached.loss_curve] == pytest.approx([p["loss"] for p in through.loss_curve], abs=1e-4)
    assert cached.params_trainable == through.params_trainable
    # the second run finds its features cached, yet is charged what computing them costs
    assert again.metric == cached.metric
    # scoring the eval split's features is charged to the run that found them cached, as to the one that made them
    assert again.eval_seconds == pytest.approx(cached.eval_seconds, rel=0.5, abs=0.05) and again.eval_seconds > 0
    assert again.wall_seconds >= again.train_seconds + again.eval_seconds  # and billed
    assert again.curve[-1]["seconds"] >= again.eval_seconds  # the features came before the first step


def _es_suite(model, budgets, **early):
    from transferbench.config import parse_suite

    return parse_suite({"name": "es", "defaults": {"seeds": [0, 1], "batch_size": 16, "epochs": 30, "eval_every": 1},
                        "benchmarks": [{"task": "text-classification", "dataset": "builtin:topics", "models": [model],
                                        "task_args": {"max_length": 16}, "modes": {"finetune": {"lr": 1e-3}},
                                        "train_samples": budgets,
                                        "early_stopping": {"patience": 1, "validation_samples": 64, **early}}]})


def test_early_stopping_validates_on_a_carve_disjoint_from_every_budget(tiny_bert):
    from transferbench.runners.train import hf_loop
    from transferbench.runners.orchestrate.plan import plan_runs
    from transferbench.tasks import get_task

    held = None
    for spec in (p.spec for p in plan_runs(_es_suite(tiny_bert, [32, 128]))):
        data, train_set, _ = hf_loop.setup(spec, get_task(spec.task)(spec.task_args), spec.model)
        held = held or set(data.validation.indices)
        assert set(data.validation.indices) == held and len(held) == 64  # one carve, whatever the seed or budget
        assert not held & set(train_set.indices)  # never a training example
        assert not set(range(len(data.eval))) & set() and data.validation.dataset is data.train  # not the eval split


def test_early_stopping_stops_on_the_validation_metric(tiny_bert):
    from transferbench.runners.orchestrate.execute import execute
    from transferbench.runners.orchestrate.plan import plan_runs
    from transferbench.runners.orchestrate.preflight import preflight

    plan = plan_runs(_es_suite(tiny_bert, [64]))[0]
    preflight([plan])
    res = execute(plan)
    assert res.status == "ok" and res.stop_reason == "early_stopping" and res.epochs_run < 30
    assert all("validation" in p for p in res.curve) and res.converged is True
    values = [p["validation"] for p in res.curve]
    assert max(values[:-1]) >= values[-1]  # the last evaluation did not improve on the best before it


def test_a_budget_larger_than_the_pool_left_by_the_carve_is_refused(tiny_bert):
    from transferbench.errors import UserError
    from transferbench.runners.orchestrate.plan import plan_runs
    from transferbench.runners.orchestrate.preflight import preflight

    with pytest.raises(UserError, match="exceeds the 2336 training examples"):
        preflight(plan_runs(_es_suite(tiny_bert, [2350])))


def test_cached_features_on_a_mode_that_trains_the_backbone_is_refused(tiny_bert, tmp_path, capsys):
    from helpers import write_suite

    from transferbench.runners.cli import main

    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes="{finetune: {cached_features: true}}")
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "res")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cached_features applies to a mode that trains only the head" in err[0]
    assert not (tmp_path / "res" / "runs.jsonl").exists()
