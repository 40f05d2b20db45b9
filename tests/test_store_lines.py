"""Store lines without a usable run_id, and the leaderboard `transferbench run` ends with: the same loader (each
run_id once) and the same writers as `transferbench report`."""
import json

import pytest
from helpers import write_store
from test_report import fixture_records, rec

from transferbench.errors import UserError
from transferbench.results import Store
from transferbench.runners.cli import main

SUITE = """name: fixture
defaults: {seeds: [0], epochs: 1, batch_size: 16}
benchmarks:
  - task: text-classification
    dataset: builtin:topics
    models: [all-minilm-l6-v2]
    modes: [finetune]
    train_samples: [32]
"""
BAD_RUN_IDS = [None, 7, "", ["a"]]


def _store_with_bad_lines(folder):
    """Line 1 good, lines 2-5 a run_id that is null, a number, empty, a list; line 6 good."""
    lines = [rec("finetune", 0, 0.9)] + [rec("finetune", 1, 0.8, run_id=bad) for bad in BAD_RUN_IDS]
    lines.append(rec("finetune", 2, 0.7))
    return write_store(folder, lines)


def test_lines_without_a_string_run_id_are_skipped_with_a_warning(tmp_path, capsys):
    store = Store(_store_with_bad_lines(tmp_path))
    assert [r["seed"] for r in store.records()] == [0, 2]
    err = capsys.readouterr().err.splitlines()
    assert [line.split(" has no run_id")[0] for line in err] == [
        f"transferbench: warning: {store.path}:{n}" for n in range(2, 6)]
    with pytest.raises(UserError, match=r"runs.jsonl:2 is not a result record \(its run_id is missing, null or not "
                                        r"a string\); fix or delete that line"):
        store.records(strict=True)


def test_report_skips_a_null_run_id_and_exits_0(tmp_path, capsys):
    store = _store_with_bad_lines(tmp_path / "store")
    assert main(["report", str(store)]) == 0  # was: NameError in merge.load, exit 1
    out, err = capsys.readouterr()
    assert f"{store / 'runs.jsonl'}:2 has no run_id" in err and "Traceback" not in err
    data = json.loads((store / "leaderboard.json").read_text())
    assert [r["seed"] for r in data["runs"]] == [0, 2] and "0.8000 ± 0.1414 (n=2)" in out


def test_run_refuses_a_null_run_id_with_one_line(tmp_path, capfd):
    (tmp_path / "s.yaml").write_text(SUITE)
    res = tmp_path / "res"
    res.mkdir()
    text = json.dumps({"run_id": "keep", "status": "ok"}) + "\n" + json.dumps({"run_id": None, "status": "ok"}) + "\n"
    (res / "runs.jsonl").write_text(text)
    assert main(["run", str(tmp_path / "s.yaml"), "--results-dir", str(res)]) == 2
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert line.startswith("transferbench: error: ") and f"{res / 'runs.jsonl'}:2 is not a result record" in line
    assert (res / "runs.jsonl").read_text() == text and sorted(p.name for p in res.iterdir()) == ["runs.jsonl"]


def test_run_ends_with_the_leaderboard_report_writes(tmp_path, monkeypatch, capsys):
    """A store holding every run twice (appended to twice, or shards concatenated): `run` counts each run_id
    once, as `report` does, and writes the same leaderboard.md."""
    (tmp_path / "s.yaml").write_text(SUITE)
    store = write_store(tmp_path / "res", fixture_records() * 2)
    monkeypatch.setattr("transferbench.runners.orchestrate.suite.run_suite", lambda *a, **k: [])  # the runs are all done
    assert main(["run", str(tmp_path / "s.yaml"), "--results-dir", str(store)]) == 0
    printed = capsys.readouterr().out
    after_run = (store / "leaderboard.md").read_text()
    assert after_run.strip() in printed and "0.8300 ± 0.0300 (n=3)" in after_run and "(n=6)" not in after_run
    assert {"leaderboard.csv", "leaderboard.json", "leaderboard.html", "plots"} <= {p.name for p in store.iterdir()}
    assert main(["report", str(store)]) == 0
    assert (store / "leaderboard.md").read_text() == after_run


def test_run_prints_why_there_is_no_leaderboard(tmp_path, monkeypatch, capsys):
    (tmp_path / "s.yaml").write_text(SUITE)
    other = rec("finetune", 1, 0.8)
    other["config"] = {**other["config"], "hyper": {"lr": 5e-5, "epochs": 1}}
    store = write_store(tmp_path / "res", [rec("finetune", 0, 0.9), other])
    monkeypatch.setattr("transferbench.runners.orchestrate.suite.run_suite", lambda *a, **k: [])
    assert main(["run", str(tmp_path / "s.yaml"), "--results-dir", str(store)]) == 0
    assert "No leaderboard: runs finetune-256-0" in capsys.readouterr().out
    assert "No leaderboard: runs finetune-256-0" in (store / "leaderboard.md").read_text()
