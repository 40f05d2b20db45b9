"""Stopping runs: Ctrl-C stops after the current step, SIGINT/SIGTERM stop a detection run, a run killed mid-way
leaves no partial record; the store stays whole and a rerun completes."""
import json
import os
import signal
import subprocess
import textwrap
import time

import pytest

from helpers import HANG_GUARD_S, bench, faulty_suite, run_main, start_cli
from transferbench.results import Store


@pytest.mark.slow
def test_ctrl_c_stops_after_the_current_step_and_the_store_stays_whole(tmp_path, monkeypatch, capsys):
    suite = faulty_suite(tmp_path, bench("[fine]") + bench("[slow]", ", epochs: 20"))  # slow: 300 steps of 0.5 s
    marker, store = tmp_path / "marker", tmp_path / "res" / "runs.jsonl"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FAULT_MARKER": str(marker), "FAULT_SLEEP": "0.5"}
    proc = start_cli("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + HANG_GUARD_S
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    assert marker.exists(), proc.communicate()[1][-3000:]  # the slow run is training
    began = len(marker.read_text().splitlines())  # batches the slow model began (one line each)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 130, err[-3000:]
    # after the current step, not at the end of the run: the step under way ends, no further step begins (a
    # second line only if a step began between counting and signalling, 0.5 s apart; the run has 300 steps)
    assert len(marker.read_text().splitlines()) - began <= 1, (began, marker.read_text().count("\n"))
    assert "stopping after the current step" in err and "stopped by SIGINT" in err and "Traceback" not in err
    (line,) = store.read_text().splitlines()  # the finished run only, as one whole line
    assert json.loads(line)["model"] == "fine" and json.loads(line)["status"] == "ok"

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FAULT_MARKER", str(marker))
    monkeypatch.setenv("FAULT_SLEEP", "0")
    assert run_main("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0") == 0
    assert "1 already in" in capsys.readouterr().out  # the interrupted run is redone, the finished one kept
    records = Store(tmp_path / "res").records(strict=True)
    assert [r["model"] for r in records] == ["fine", "slow"] and records[1]["status"] == "ok"


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_detection_run_within_seconds(tmp_path, signum):
    suite = tmp_path / "s.yaml"
    suite.write_text(textwrap.dedent("""
        name: det
        defaults: {seeds: [0], epochs: 50, batch_size: 8, lr: default}
        benchmarks:
          - task: object-detection
            dataset: builtin:shapes
            models: [yolov8n.yaml]
            modes: [scratch]
            train_samples: [64]
            task_args: {imgsz: 64, ultralytics: {mosaic: 0.0}}
        """))
    proc = start_cli("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + HANG_GUARD_S
    work = tmp_path / "res" / "work"
    while proc.poll() is None and time.time() < deadline and not list(work.rglob("results.csv")):
        time.sleep(0.2)  # an epoch has finished: training is under way
    assert proc.poll() is None, proc.communicate()[1][-3000:]

    def epochs() -> int:  # the epochs Ultralytics finished (one row each in its results.csv)
        return sum(len(p.read_text().splitlines()) - 1 for p in work.rglob("results.csv"))

    finished = epochs()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 128 + signum, err[-3000:]  # 130 / 143
    # within the epoch under way (Ultralytics' stop flag after its batch), not after the 50 the suite asks for
    assert 1 <= finished <= epochs() <= finished + 1 < 50, (finished, epochs())
    assert "Traceback" not in err
    assert not (tmp_path / "res" / "runs.jsonl").exists() or not (tmp_path / "res" / "runs.jsonl").read_text()


@pytest.mark.slow
def test_kill_mid_run_leaves_no_partial_record_and_rerun_completes(tmp_path, monkeypatch, capsys):
    """kill -9 the CLI while a run trains (a test task whose `slow` model sleeps each batch), then rerun."""
    from helpers import bench, faulty_suite, start_cli

    from transferbench.runners.cli import main

    suite = faulty_suite(tmp_path, bench("[fine, slow]", ", epochs: 20"), defaults="seeds: [0, 1], batch_size: 30, lr: default")
    store, marker = tmp_path / "res" / "runs.jsonl", tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FAULT_MARKER": str(marker), "FAULT_SLEEP": "0.05"}
    proc = start_cli("run", suite, "--results-dir", tmp_path / "res", stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + HANG_GUARD_S
    while time.time() < deadline and not marker.exists() and proc.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)  # inside the third run (slow, seed 0: about 15 s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    lines = store.read_text().splitlines()
    assert [(json.loads(x)["model"], json.loads(x)["status"]) for x in lines] == [("fine", "ok")] * 2  # whole lines

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FAULT_MARKER", str(marker))
    monkeypatch.setenv("FAULT_SLEEP", "0")
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "res"), "--price-per-device-hour", "0"]) == 0
    assert "2 already in" in capsys.readouterr().out
    records = [json.loads(line) for line in store.read_text().splitlines()]
    assert len(records) == 4 == len({r["run_id"] for r in records})  # every run exactly once
    assert [(r["model"], r["seed"]) for r in records[2:]] == [("slow", 0), ("slow", 1)]
