"""Convergence flags (transferbench/convergence.py) and the linear probe on cached features (runners/features.py)."""
import pytest

from transferbench.convergence import EVAL_TOLERANCE, MIN_STEPS, judge
from transferbench.outcome import TrainOutcome
from transferbench.results import Result


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
    res = Result(schema_version=4, run_id="r", suite="s", task="t", dataset="d", model="m", mode="finetune", seed=0,
                 train_samples=None, metric_name="accuracy", higher_is_better=True, device_name="CPU", device_count=1)
    res.apply(TrainOutcome(metrics={"accuracy": 0.8}, curve=_points(0.6, 0.8), losses=[1.0] * 120))
    assert res.converged is False and res.metric == 0.8 and res.best_metric == 0.8
    assert len(res.loss_curve) == 40 and res.loss_curve[-1] == {"step": 120, "loss": 1.0}  # thinned to <= 50 points


@pytest.mark.parametrize("model_stage", ["glyphs-resnet"])
def test_cached_features_probe_equals_the_probe_through_the_model(model_stage):
    """Same subset, schedule and head init: training the head on cached features of the frozen backbone gives
    the very numbers of training it through the model (a ResNet: BatchNorm statistics stay frozen in both)."""
    from transferbench.config import parse_suite
    from transferbench.runners.execute import execute
    from transferbench.runners.stages import SHIPPED_STAGES
    from transferbench.runners.suite import expand_runs

    model = str(next(SHIPPED_STAGES.glob(f"{model_stage}-*")))

    def run(**mode):
        suite = parse_suite({"name": "lp", "defaults": {"seeds": [0], "batch_size": 16, "epochs": 3},
                             "benchmarks": [{"task": "image-classification", "dataset": "builtin:digits",
                                             "models": [model], "modes": {"linear-probe": mode or None},
                                             "train_samples": [64]}]})
        (spec,) = expand_runs(suite)
        return execute(spec)

    through, cached, again = run(), run(cached_features=True), run(cached_features=True)
    assert through.status == cached.status == "ok"
    assert cached.metric == pytest.approx(through.metric, abs=1e-4)
    assert [p["loss"] for p in cached.loss_curve] == pytest.approx([p["loss"] for p in through.loss_curve], abs=1e-4)
    assert cached.params_trainable == through.params_trainable
    # the second run finds its features cached, yet is charged what computing them costs
    assert again.metric == cached.metric
    assert again.eval_seconds >= 0.3 * through.eval_seconds  # scoring the eval split's features is charged
    assert again.wall_seconds >= again.train_seconds + again.eval_seconds  # and billed
    assert again.curve[-1]["seconds"] >= again.eval_seconds  # the features came before the first step
