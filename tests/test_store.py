"""The results store: the resume set, concurrent appends, torn lines, version-1 records, lines without a usable
run_id, shard stores merged by concatenation; `run` and `report` read it with one rule and write the same
leaderboard."""
import json
import multiprocessing as mp

import pytest

from helpers import KEEP, bench, faulty_suite, fixture_records, rec, result, run_main, write_store
from transferbench.errors import UserError
from transferbench.results import Result, Store
from transferbench.runners.cli import main


def test_a_torn_last_line_never_swallows_the_next_record(tmp_path):
    store = Store(tmp_path)
    store.append(result("a"))
    with open(store.path, "a") as f:
        f.write('{"run_id": "b", "sta')  # disk full, or a hand edit, left half a line
    store.append(result("c"))
    assert [r["run_id"] for r in store.records()] == ["a", "c"]  # lenient: reports skip the torn line
    with pytest.raises(UserError, match=r"runs.jsonl:2 is not a result record .* fix or delete that line"):
        store.completed(strict=True)  # a run refuses: line 2 might have been a finished run


def test_version_1_records_still_load(tmp_path):
    old = {k: v for k, v in json.loads(result("old").to_json()).items()
           if k not in ("stop_reason", "per_device_batch", "grad_accum", "oom_retries")}
    (tmp_path / "runs.jsonl").write_text(json.dumps({**old, "schema_version": 1}) + "\n")
    (record,) = Store(tmp_path).records(strict=True)
    assert Result(**record).stop_reason is None and Result(**record).oom_retries == 0


def test_shard_stores_merge_by_concatenation(tmp_path, monkeypatch, capsys):
    suite = faulty_suite(tmp_path, bench("[fine, also-fine]"), defaults="seeds: [0, 1, 2], epochs: 1, batch_size: 30, lr: default")
    monkeypatch.syspath_prepend(str(tmp_path))
    for i in (1, 2):
        assert run_main("run", suite, "--shard", f"{i}/2", "--results-dir", tmp_path / f"shard{i}") == 0
    parts = [(tmp_path / f"shard{i}" / "runs.jsonl").read_text() for i in (1, 2)]
    (tmp_path / "all").mkdir()
    (tmp_path / "all" / "runs.jsonl").write_text("".join(parts))  # cat shard*/runs.jsonl > all/runs.jsonl
    capsys.readouterr()
    assert run_main("run", suite, "--results-dir", tmp_path / "all") == 0
    assert "6 runs, 6 already in" in capsys.readouterr().out  # the merged store completes the whole suite
    assert [len(p.splitlines()) for p in parts] == [3, 3]
    assert (tmp_path / "all" / "runs.jsonl").read_text() == "".join(parts)


def test_run_and_report_read_the_store_with_one_rule(tmp_path):
    """A failed-then-ok run and a duplicate: `run` resumes from and `report` tabulates the same records."""
    from transferbench.runners.report.merge import load

    store = Store(tmp_path)
    for record in (result("a", status="failed", cost_usd=9.0), result("a", metric=0.7, cost_usd=1.0),
                result("a", metric=0.1, cost_usd=5.0), result("b", metric=0.2)):
        store.append(record)
    runs = store.runs(strict=True)
    assert [(r["run_id"], r["metric"], r["cost_usd"]) for r in runs] == [("a", 0.7, 1.0), ("b", 0.2, None)]
    assert [{k: v for k, v in r.items() if k != "_store"} for r in load([tmp_path])] == runs
    assert store.completed() == {"a", "b"}


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
    text = KEEP + "\n" + json.dumps({"run_id": None, "status": "ok"}) + "\n"
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


def _result(run_id, status="ok"):
    return result(run_id, schema_version=1, status=status,
                  curve=[{"step": i, "metric": 0.5} for i in range(200)])  # long lines: interleaving would show


def _writer(path, k):
    store = Store(path)
    for i in range(100):
        store.append(_result(f"{k}-{i}"))


def test_store_resume_set_and_corrupt_line_is_skipped(tmp_path, capsys):
    store = Store(tmp_path)
    store.append(_result("a"))
    store.append(_result("b", status="failed"))
    with open(store.path, "a") as f:
        f.write('{"run_id": "c", "sta')  # what a crash inside a non-atomic writer would leave
    assert store.completed() == {"a"}  # failed runs are redone; the torn line is ignored, with a warning
    assert "not a JSON record" in capsys.readouterr().err


def test_concurrent_writers_never_interleave(tmp_path):
    procs = [mp.get_context("spawn").Process(target=_writer, args=(tmp_path, k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 300
    assert sorted(json.loads(line)["run_id"] for line in lines) == sorted(f"{k}-{i}" for k in range(3) for i in range(100))


def test_a_hostile_store_line_never_counts_as_done(tmp_path, monkeypatch, capfd):
    """`{"run_id": <a real run's id>, "status": "ok"}` in the store: `run` refuses it (file:line, exit 2, the store
    byte-identical, nothing trained), `report` and `load` skip it with a warning; once the line is gone the run
    trains."""
    from transferbench.runners.api import dry_run, load

    suite = faulty_suite(tmp_path, bench("[fine]"), defaults="seeds: [0], epochs: 1, batch_size: 20, lr: 0.05")
    monkeypatch.syspath_prepend(str(tmp_path))
    (plan,) = dry_run(suite, results_dir=tmp_path / "res")
    res = tmp_path / "res"
    res.mkdir()
    store = res / "runs.jsonl"
    for bare in ({"run_id": plan.run_id, "status": "ok"},
                 {"run_id": plan.run_id, "status": "ok", "metric": 0.49, "train_samples": -5}):
        text = KEEP + "\n" + json.dumps(bare) + "\n"
        store.write_text(text)
        capfd.readouterr()
        assert run_main("run", suite, "--results-dir", res) == 2
        (line,) = capfd.readouterr().err.strip().splitlines()
        assert f"{store}:2 is not a result record" in line and "fix or delete that line" in line
        assert store.read_text() == text and not (res / "work").exists()  # nothing trained, nothing written
        assert [r["run_id"] for r in load(res).records] == ["keep"]  # the report's reader skips it
        capfd.readouterr()
        assert main(["report", str(res), "--out", str(tmp_path / "out")]) == 0
        err = capfd.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"{store}:2 is not a usable result record" in err[0]
        board = json.loads((tmp_path / "out" / "leaderboard.json").read_text())
        assert [r["run_id"] for r in board["runs"]] == ["keep"]
    store.write_text(KEEP + "\n")
    assert run_main("run", suite, "--results-dir", res) == 0  # the same run, now trained
    ours = [r for r in Store(res).records(strict=True) if r["run_id"] == plan.run_id]
    assert len(ours) == 1 and ours[0]["status"] == "ok" and ours[0]["train_samples"] == 300
    assert 0.0 <= ours[0]["metric"] <= 1.0


def test_the_claim_check_reads_only_what_was_appended(tmp_path):
    """StoreTail: the first read parses the store, each later one only whole lines appended since; a line still
    being written is read once whole; a bad line appended meanwhile is skipped with one warning, once."""
    from transferbench.results import StoreTail

    store = Store(tmp_path)
    store.append(result("a"))
    tail = StoreTail(store)
    assert [r["run_id"] for r in tail.read(strict=True)] == ["a"]
    assert tail.read() == []
    store.append(result("b"))
    with open(store.path, "a") as f:
        f.write(result("c").to_json()[:40])  # half a line: another writer mid-write
    assert [r["run_id"] for r in tail.read()] == ["b"]
    with open(store.path, "a") as f:
        f.write(result("c").to_json()[40:] + "\n")
    assert [r["run_id"] for r in tail.read()] == ["c"] and tail.line == 3
