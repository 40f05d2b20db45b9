"""The Python API: transferbench.run / load / Results. DataFrames hold the store's runs and the leaderboard's cells
with the very numbers `transferbench report` publishes; run() is the CLI's run. The published store is read-only
here: every test that touches it checks that nothing in results/published changed."""
import csv
import hashlib
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

import transferbench
from helpers import HANG_GUARD_S, assert_json_close, bench, faulty_suite, result, run_main, write_store
from transferbench.errors import UserError
from transferbench.results import Store
from transferbench.runners.report import leaderboard, merge

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "results" / "published" / "quickstart"


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def published():
    """The published quickstart store, and a check afterwards that nothing in it was written."""
    before = _snapshot(PUBLISHED)
    yield PUBLISHED
    assert _snapshot(PUBLISHED) == before


def test_the_api_is_lazy_and_lives_in_runners():
    code = ("import sys, transferbench; assert 'transferbench.runners' not in sys.modules; "
            "print(transferbench.load.__module__, transferbench.Results.__module__, transferbench.run.__module__); "
            "assert {'run', 'load', 'Results'} <= set(dir(transferbench))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["transferbench.runners.api"] * 3
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        transferbench.nope  # noqa: B018


def test_to_pandas_is_one_row_per_deduplicated_run(published):
    results = transferbench.load(published)
    runs = Store(published).runs()  # the store's reader, each run_id once
    df = results.to_pandas()
    assert len(df) == len(results) == len(runs) == 108
    assert list(df["run_id"]) == [r["run_id"] for r in runs] and df["run_id"].is_unique
    assert df["metric"].tolist() == [r["metric"] for r in runs]
    assert {"suite", "task", "dataset", "model", "mode", "seed", "train_samples", "metric", "cost_usd",
            "status"} <= set(df.columns)
    # flat fields only: lists and dicts (curve, config, env ...) on request, never the "_store" bookkeeping
    assert not {"curve", "loss_curve", "config", "env", "metrics", "_store"} & set(df.columns)
    nested = results.to_pandas(nested=True)
    assert nested["config"].iloc[0] == runs[0]["config"] and "_store" not in nested.columns
    # the same store given twice, as shards are: each run_id still counts once
    assert len(transferbench.load(published, published / "runs.jsonl").to_pandas()) == 108


def test_a_retried_run_is_one_row_its_success(tmp_path):
    store = write_store(tmp_path / "s", [json.loads(result("a", status="failed", error="boom").to_json()),
                                         json.loads(result("a", metric=0.5).to_json()),
                                         json.loads(result("b", metric=0.7, seed=1).to_json())])
    df = transferbench.load(store).to_pandas()
    assert df[["run_id", "status", "metric"]].values.tolist() == [["a", "ok", 0.5], ["b", "ok", 0.7]]


def test_cells_are_the_numbers_of_the_published_table(published):
    cells = transferbench.load(published).cells()
    board = leaderboard.build(merge.load([published]))  # what `transferbench report` computes
    assert len(cells) == len(board.cells) == 36
    for row, cell in zip(cells.to_dict("records"), board.cells):
        for key in ("task", "dataset", "model", "train_samples", "mode", "n", "metric_mean", "metric_std",
                    "delta_vs_scratch", "cost_usd", "cost_per_point", "best"):
            assert row[key] == cell[key] or (row[key] != row[key] and cell[key] is None), key
        assert (row["delta_ci_low"], row["delta_ci_high"]) == (cell["delta_ci"] or (None, None)) or \
            cell["delta_ci"] is None and math.isnan(row["delta_ci_low"])
    # ... which are the committed CSV's cell rows (full precision) and the Markdown table's metric column
    committed = [r for r in csv.DictReader(open(published / "leaderboard.csv", encoding="utf-8")) if r["row"] == "cell"]
    markdown = (published / "leaderboard.md").read_text(encoding="utf-8")
    assert len(committed) == len(cells)
    for row, line in zip(cells.to_dict("records"), committed):
        assert (row["model"], row["train_samples"], row["mode"]) == (line["model"], int(line["train_samples"]),
                                                                     line["mode"])
        # full precision, up to the last bits that another CPU or scipy build may compute differently
        assert (row["metric_mean"], row["metric_std"]) == pytest.approx((float(line["metric"]),
                                                                        float(line["metric_std"])), rel=1e-9)
        if line["delta_ci_low"]:
            assert (row["delta_ci_low"], row["delta_ci_high"]) == pytest.approx((float(line["delta_ci_low"]),
                                                                                 float(line["delta_ci_high"])), rel=1e-9)
        assert f"| {row['model']} | {row['train_samples']} | {row['mode']} | " in markdown
        assert f"{row['metric_mean']:.4f} ± {row['metric_std']:.4f} (n={row['n']})" in markdown


def test_plan_is_the_planners(published):
    plan = transferbench.load(published).plan()
    committed = json.loads((published / "plan.json").read_text())
    fitted = {" ".join((c["task"], c["model"], c["mode"])): [c["family"], c["params"]] for c in committed["curves"]}
    assert_json_close({" ".join((c["task"], c["model"], c["mode"])): [c["family"], c["params"]]
                       for c in plan.data["curves"]}, fitted)  # fits differ in the last bits across CPUs
    predictions = plan.predictions()
    assert len(predictions) == sum(len(c["predictions"]) for c in plan.data["curves"]) > 0
    assert {"n", "mean", "lo", "hi", "cost_usd", "mode"} <= set(predictions.columns)
    assert plan.markdown() == (published / "plan.md").read_text()  # `transferbench plan`'s page, word for word
    with pytest.raises(UserError, match="beyond 4× the largest budget"):
        transferbench.load(published).plan(budgets=[100_000])


def test_load_refuses_what_is_not_a_store(tmp_path):
    with pytest.raises(UserError, match="no results store"):
        transferbench.load(tmp_path)
    with pytest.raises(UserError, match="at least one results folder"):
        transferbench.load()


@pytest.mark.slow
def test_notebook_snippet_in_a_fresh_interpreter(published, tmp_path):
    """What a notebook cell does: import, load the published store, group the runs with pandas."""
    snippet = (f"import transferbench\n"
               f"df = transferbench.load({str(published)!r}).to_pandas()\n"
               f"print(df.groupby(['mode'])['metric'].mean().to_string())\n")
    out = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr
    print(out.stdout)  # shown with -s: the acceptance output
    printed = {line.split()[0]: float(line.split()[1]) for line in out.stdout.strip().splitlines()[1:]}
    runs = Store(published).runs()
    expected = {m: statistics.fmean(r["metric"] for r in runs if r["mode"] == m) for m in {r["mode"] for r in runs}}
    assert printed.keys() == expected.keys() == {"scratch", "finetune", "lora", "linear-probe"}
    for mode, mean in expected.items():
        assert printed[mode] == pytest.approx(mean, abs=1e-6)


def test_run_is_the_cli_run(tmp_path, monkeypatch, capsys):
    suite = faulty_suite(tmp_path, bench("[fine, also-fine]"), defaults="seeds: [0, 1], epochs: 1, batch_size: 30, lr: default")
    monkeypatch.syspath_prepend(str(tmp_path))
    results = transferbench.run(suite, results_dir=tmp_path / "api", price_per_device_hour=0.5)
    out = capsys.readouterr().out
    assert "4 runs, 0 already in" in out and "Leaderboard: faults" in out  # run_suite's line, after_run's table
    df = results.to_pandas()
    assert len(df) == 4 and set(df["status"]) == {"ok"} and set(df["price_per_device_hour"]) == {0.5}
    assert (tmp_path / "api" / "leaderboard.md").is_file()  # after_run wrote the report, as `run` does
    assert len(results.cells()) == 2
    # the CLI on the same suite: the same runs
    assert run_main("run", suite, "--results-dir", tmp_path / "cli", "--price-per-device-hour", "0.5") == 0
    cli_ids = {r["run_id"] for r in Store(tmp_path / "cli").runs()}
    assert set(df["run_id"]) == cli_ids
    # resume, and a shard, as the flags do
    capsys.readouterr()
    assert len(transferbench.run(suite, results_dir=tmp_path / "api")) == 4
    assert "4 runs, 4 already in" in capsys.readouterr().out
    assert len(transferbench.run(suite, results_dir=tmp_path / "shard", shard="1/2")) == 2
    monkeypatch.chdir(tmp_path)  # no results_dir: results/<suite name>/ under the working directory, as the CLI
    assert len(transferbench.run(suite, shard="2/2")) == 2 and len(Store(tmp_path / "results" / "faults").runs()) == 2


def test_run_refuses_bad_input_before_training(tmp_path, monkeypatch):
    with pytest.raises(UserError, match=r"unknown suite 'quickstrat'.*did you mean 'quickstart'"):
        transferbench.run("quickstrat")
    with pytest.raises(TypeError, match=r"unexpected option\(s\) epochs.*results_dir"):
        transferbench.run("quickstart", epochs=3)
    with pytest.raises(TypeError, match="dry_run"):
        transferbench.run("quickstart", dry_run=True)
    with pytest.raises(UserError, match="--price-per-device-hour must be >= 0"):
        transferbench.run("quickstart", price_per_device_hour=-1, results_dir=tmp_path / "r")
    assert not (tmp_path / "r").exists()
