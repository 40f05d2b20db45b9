"""A benchmark names its verdict metric (`metric:`): an evaluate module (shipped name, local module path, Hub id) or a
scikit-learn scorer (`sklearn:NAME`), with its direction. It becomes the run's metric_name and the leaderboard's;
bad names are one line and exit 2 before anything trains."""
import shutil

import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score, matthews_corrcoef

from helpers import run_main, write_suite
from transferbench import metrics
from transferbench.config import Metric, load_suite, parse_suite
from transferbench.errors import UserError
from transferbench.results import Store

PREDS, REFS = [0, 1, 2, 2, 1, 0, 3, 3, 1], [0, 1, 1, 2, 1, 0, 3, 0, 2]


def test_the_shorthand_and_the_directions_that_are_known():
    assert Metric.model_validate("matthews_correlation") == Metric(name="matthews_correlation", higher_is_better=True)
    assert Metric.model_validate("sklearn:neg_log_loss").higher_is_better  # scorers: higher is better, always
    assert not Metric.model_validate({"name": "org/my-loss", "higher_is_better": False}).higher_is_better


@pytest.mark.parametrize("given, message", [
    ("org/my-loss", "say whether higher is better for metric 'org/my-loss'"),
    ({"name": "sklearn:f1_macro", "higher_is_better": False}, "scikit-learn scorers are higher-is-better"),
    ({"name": "sklearn:f1_macro", "args": {"average": "micro"}}, "a scikit-learn scorer's arguments come with its"),
    ({"name": "accuracy", "colour": 1}, "unknown key"),
])
def test_the_schema_refuses_in_one_line(given, message):
    suite = {"name": "s", "benchmarks": [{"task": "text-classification", "dataset": "builtin:topics",
                                          "models": ["m"], "modes": ["scratch"], "metric": given}]}
    with pytest.raises(UserError, match=message) as err:
        parse_suite(suite)
    assert "\n" not in str(err.value)


def test_the_named_metrics_give_scikit_learns_numbers(tmp_path):
    shipped = Metric.model_validate("matthews_correlation")
    assert metrics.named(shipped)(PREDS, REFS) == pytest.approx(matthews_corrcoef(REFS, PREDS))
    assert metrics.named(Metric.model_validate("sklearn:f1_macro"))(PREDS, REFS) == pytest.approx(
        f1_score(REFS, PREDS, average="macro"))
    assert metrics.named(Metric.model_validate("sklearn:balanced_accuracy"))(PREDS, REFS) == pytest.approx(
        balanced_accuracy_score(REFS, PREDS))
    # a local module path (a folder holding NAME.py, or the file), recorded under the module's name or `key`
    local = tmp_path / "mcc"
    local.mkdir()
    shutil.copy(metrics.METRICS_DIR / "matthews_correlation" / "matthews_correlation.py", local / "mcc.py")
    for name in (str(local), str(local / "mcc.py")):
        spec = Metric(name=name, higher_is_better=True, key="matthews_correlation")
        metrics.check(spec, "metric")
        assert metrics.metric_name(spec) == "matthews_correlation"
        assert metrics.named(spec)(PREDS, REFS) == pytest.approx(matthews_corrcoef(REFS, PREDS))
    assert metrics.metric_name(Metric(name=str(local), higher_is_better=True)) == "mcc"  # its only key, under its name
    assert metrics.named(Metric(name=str(local), higher_is_better=True))(PREDS, REFS) == pytest.approx(
        matthews_corrcoef(REFS, PREDS))


@pytest.mark.parametrize("metric, message", [
    ("sklearn:matthew_corrcoef", "'matthew_corrcoef' is not a scikit-learn scorer (did you mean 'matthews_corrcoef'?)"),
    ("sklearn:roc_auc", "'sklearn:roc_auc' scores probabilities or decision values"),
    ("{name: ./no/such/module.py, higher_is_better: true}", "metric module './no/such/module.py' not found"),
    # offline (the tests' HF_HUB_OFFLINE=1), a Hub id cannot load: refused by the run's preflight, not mid-run
    ("{name: someone/their-metric, higher_is_better: true}", "evaluate cannot load metric 'someone/their-metric'"),
])
def test_bad_metric_names_fail_before_training(metric, message, tiny_bert, tmp_path, capsys):
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes="[linear-probe]", budget="[16]",
                        extra=f"    metric: {metric}\n")
    assert run_main("run", suite, "--results-dir", tmp_path / "res") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "res" / "runs.jsonl").exists()


def test_detection_computes_its_own_metrics():
    from transferbench.tasks import get_task

    with pytest.raises(UserError, match="object-detection computes its own metrics"):
        get_task("object-detection")({}, Metric.model_validate("sklearn:f1_macro"))


def test_a_named_metric_judges_the_run(tiny_bert, tmp_path):
    """sklearn:f1_macro is the headline (metric_name, curve, target) and scores what the shipped macro-F1 scores; the
    task's own metrics are still recorded beside it."""
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes="[linear-probe]", budget="[32]",
                        extra="    metric: sklearn:f1_macro\n    target: {metric: f1_macro, value: 0.99}\n")
    assert run_main("run", suite, "--results-dir", tmp_path / "res") == 0
    (r,) = Store(tmp_path / "res").records()
    assert r["metric_name"] == "f1_macro" and r["higher_is_better"] is True
    assert r["metric"] == pytest.approx(r["metrics"]["f1"]) and "accuracy" in r["metrics"]
    assert r["curve"][-1]["metric"] == pytest.approx(r["metrics"]["f1_macro"])
    assert r["config"]["metric"] == {"name": "sklearn:f1_macro", "higher_is_better": True, "key": None, "args": {}}


def test_runs_without_a_named_metric_keep_their_run_ids():
    suite = parse_suite({"name": "s", "benchmarks": [{"task": "text-classification", "dataset": "builtin:topics",
                                                      "models": ["m"], "modes": ["scratch"]}]})
    named = parse_suite({"name": "s", "benchmarks": [{"task": "text-classification", "dataset": "builtin:topics",
                                                      "models": ["m"], "modes": ["scratch"],
                                                      "metric": "sklearn:f1_macro"}]})
    from transferbench.runners.orchestrate.plan import plan_runs

    (plain,), (judged,) = plan_runs(suite), plan_runs(named)
    assert "metric" not in plain.spec.model_dump()  # unset: not in the record's config, not in the hash
    assert plain.run_id != judged.run_id


@pytest.mark.parametrize("name, metric", [("metric-mcc", "matthews_correlation"),
                                          ("metric-sklearn", "sklearn:balanced_accuracy")])
def test_the_shipped_metric_suites_name_their_metric(name, metric):
    from pathlib import Path

    suite = load_suite(Path(__file__).parents[1] / "benchmarks" / f"{name}.yaml")
    assert [b.metric.name for b in suite.benchmarks] == [metric]
    assert suite.benchmarks[0].target.metric == metrics.metric_name(suite.benchmarks[0].metric)
