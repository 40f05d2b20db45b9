"""Executors. The ray executor (`--jobs N`, `--executor ray`): one Ray task per run on a local Ray instance with
2 CPUs, the driver alone writing the store; same numbers as the local executor; a killed worker is retried
once, then a failed row; a stopped driver leaves a whole store that the next invocation completes, each run
exactly once. Data-parallel on 2 CPU processes (gloo) under `accelerate launch`: one record per run, the same
metric as one process within noise."""
import json
import os
import signal
import subprocess
import time
from collections import Counter

import pytest
from datasets import load_dataset

from helpers import HANG_GUARD_S, KEEP, accelerate_launch, bench, cli, faulty_suite, run_main, start_cli, write_suite
from transferbench.builtin import materialize
from transferbench.results import Store


@pytest.mark.slow
def test_two_process_run_matches_one_process(tmp_path):
    suite = write_suite(tmp_path / "s.yaml", "all-minilm-l6-v2", modes="{linear-probe: {lr: 1.0e-2}}",
                        budget="[256]", extra="    epochs: 4\n    batch_size: 32\n    eval_every: 2.0")
    two = accelerate_launch("run", suite, "--results-dir", tmp_path / "two", "--price-per-device-hour", "0")
    assert two.returncode == 0, two.stderr[-3000:]
    from transferbench.runners.cli import main  # the 1-process baseline in this process: no start-up cost

    assert main(["run", str(suite), "--results-dir", str(tmp_path / "one"), "--price-per-device-hour", "0"]) == 0
    (r2,), (r1,) = Store(tmp_path / "two").records(), Store(tmp_path / "one").records()  # written once
    assert r2["num_processes"] == 2 and r1["num_processes"] == 1
    # The effective batch is the suite's batch_size: 2 x 16 per device = 1 x 32, so the same number of steps.
    assert (r2["per_device_batch"], r1["per_device_batch"], r2["grad_accum"], r1["grad_accum"]) == (16, 32, 1, 1)
    assert r2["optimizer_steps"] == r1["optimizer_steps"] == 32  # 256/32 x 4 epochs
    assert r2["train_samples"] == r1["train_samples"] == 256
    assert [p["samples_seen"] for p in r2["curve"]] == [p["samples_seen"] for p in r1["curve"]] == [512, 1024]
    # Every eval example scored exactly once, although 600 does not split into whole eval batches of 2 x 32:
    # accelerate pads the last batch with repeats and gather_for_metrics drops them again.
    eval_split = len(load_dataset("csv", data_files=str(materialize("topics") / "test.csv"))["train"])
    assert 600 % (2 * 2 * 16) and r2["eval_samples"] == r1["eval_samples"] == eval_split == 600
    assert abs(r2["metric"] - r1["metric"]) < 0.05, (r1["metric"], r2["metric"])  # same optimisation, within noise
    assert abs(r2["metrics"]["f1"] - r1["metrics"]["f1"]) < 0.05
    assert r1["metric"] > 0.7  # a pretrained encoder's probe learns: the comparison is not between two chance runs
    assert r2["status"] == r1["status"] == "ok" and r2["stop_reason"] == r1["stop_reason"] == "epochs"


pytestmark = pytest.mark.slow  # each test starts a Ray instance (~5 s) and worker processes


def _reap_ray_agents(started: float) -> None:
    """After a driver's kill -9, Ray's own DashboardAgent/RuntimeEnvAgent of its local instance outlive it
    (orphans of init; the raylet, GCS and workers do exit): a user clears them with `ray stop`. The test kills
    the ones that instance started, so they don't pile up."""
    import psutil

    time.sleep(2)
    since = time.time() - (time.perf_counter() - started) - 300
    for p in psutil.process_iter(["name", "ppid", "create_time", "cmdline"]):
        if p.info["ppid"] == 1 and p.info["create_time"] > since and \
                " ".join(p.info["cmdline"] or []).startswith("ray::"):
            p.kill()


def records(folder):
    return [json.loads(line) for line in (folder / "runs.jsonl").read_text().splitlines()]


def test_jobs_2_gives_the_sequential_numbers(tiny_bert, tmp_path, capsys):
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, budget="[32, 64]")  # 4 modes x 2 budgets = 8 runs
    assert run_main("run", suite, "--results-dir", tmp_path / "seq") == 0
    par = cli("run", suite, "--results-dir", tmp_path / "par", "--jobs", "2")
    assert par.returncode == 0, par.stderr[-3000:]
    assert "8 to run on Ray" in par.stdout and "0 GPU / 1 CPU per run, on 2 CPUs" in par.stdout
    seq, ray = {r["run_id"]: r for r in records(tmp_path / "seq")}, records(tmp_path / "par")
    assert len(seq) == 8 and sorted(r["run_id"] for r in ray) == sorted(seq)  # each run once, same run_ids
    for r in ray:
        s = seq[r["run_id"]]
        assert r["status"] == s["status"] == "ok"
        assert round(r["metric"], 4) == round(s["metric"], 4), (r["mode"], r["train_samples"])
        assert [round(p["metric"], 4) for p in r["curve"]] == [round(p["metric"], 4) for p in s["curve"]]
        assert r["params_trainable"] == s["params_trainable"] and set(r) == set(s)  # same schema
        where = r["env"]["executor"]
        assert where["name"] == "ray" and where["host"] and where["node_id"] and where["gpu_ids"] == []
    assert len({r["env"]["executor"]["pid"] for r in ray}) == 2  # two worker processes shared the runs
    assert all("executor" not in r["env"] for r in seq.values())


def test_a_killed_worker_is_retried_once_then_a_failed_row(tmp_path):
    suite = faulty_suite(tmp_path, bench("[a, die-once, b, die, c, d, e, f]"))
    env = {"PYTHONPATH": str(tmp_path), "FAULT_MARKER": str(tmp_path / "marker")}
    res = cli("run", suite, "--results-dir", tmp_path / "res", "--jobs", "2", env=env)
    assert res.returncode == 1, res.stderr[-3000:]  # a failed run: exit 1, the suite went on
    rows = records(tmp_path / "res")
    assert Counter(r["run_id"] for r in rows).most_common(1)[0][1] == 1 and len(rows) == 8  # no duplicate line
    status = {r["model"]: r["status"] for r in rows}
    assert status == {**{m: "ok" for m in "abcdef"}, "die-once": "ok", "die": "failed"}
    (dead,) = [r for r in rows if r["model"] == "die"]
    assert dead["error"].startswith("ray worker died: ") and "died" in dead["error"].lower()[17:]
    assert (tmp_path / "marker").exists()  # die-once really was killed once before its retry succeeded


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_stopped_driver_leaves_a_whole_store_and_the_rerun_completes_each_run_once(tmp_path, sig):
    suite = faulty_suite(tmp_path, bench("[slow]"),  # 8 runs of ~2 s each
                         defaults="seeds: [0, 1, 2, 3, 4, 5, 6, 7], epochs: 2, batch_size: 20, lr: 0.05")
    store = tmp_path / "res" / "runs.jsonl"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FAULT_MARKER": str(tmp_path / "marker"),
           "FAULT_SLEEP": "0.05"}
    proc = start_cli("run", suite, "--results-dir", tmp_path / "res", "--jobs", "2", stdout=subprocess.PIPE,
                     stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    deadline = time.time() + HANG_GUARD_S
    while not (store.exists() and store.read_text().count("\n") >= 1) and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    sent = time.perf_counter()
    recorded = store.read_text().count("\n")  # runs finished when the driver is stopped
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=HANG_GUARD_S)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err[-3000:]
        assert "stopped by SIGINT" in err and "Traceback" not in err
    else:
        assert proc.returncode == -signal.SIGKILL
        _reap_ray_agents(started=sent)
    first = [json.loads(line) for line in store.read_text().splitlines()]  # every line whole
    assert 1 <= len(first) < 8 and all(r["status"] == "ok" for r in first)
    assert len(first) <= recorded + 2  # at most the 2 runs in flight finished meanwhile: no run started after the stop

    again = cli("run", suite, "--results-dir", tmp_path / "res", "--jobs", "2",
                env={"PYTHONPATH": str(tmp_path), "FAULT_MARKER": str(tmp_path / "marker"), "FAULT_SLEEP": "0"})
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{len(first)} already in" in again.stdout
    rows = records(tmp_path / "res")
    assert sorted(Counter(r["run_id"] for r in rows).values()) == [1] * 8  # each run exactly once
    assert [r["run_id"] for r in rows[:len(first)]] == [r["run_id"] for r in first]  # nothing lost or rewritten


STORE = KEEP + "\n"  # one finished run, a whole record


@pytest.mark.parametrize("args, says", [
    (["--jobs", "0"], "--jobs must be >= 1 (got 0)"),
    (["--address", "127.0.0.1:9"], "--address 127.0.0.1:9: no Ray head answers there"),
    (["--address", "somewhere"], "give 'auto' or HOST:PORT of the Ray head"),
    (["--jobs", "2", "--gpus-per-run", "2"], "--gpus-per-run 2: this machine has no GPUs"),
    (["--jobs", "2", "--address", "auto"], "give one of them"),
    (["--executor", "local", "--jobs", "2"], "--jobs and --address schedule runs on Ray"),
    (["--gpus-per-run", "1"], "--gpus-per-run applies to the ray executor"),
    (["--jobs", "2", "--cpus-per-run", "0"], "--cpus-per-run must be > 0"),
    (["--jobs", "2", "--cpus-per-run", "1.5"], "--cpus-per-run 1.5: Ray reserves whole numbers of devices above 1"),
    (["--jobs", "1", "--cpus-per-run", "1e9"], "--cpus-per-run 1e+09: this machine has"),
    (["--jobs", "1", "--cpus-per-run", "nan"], "--cpus-per-run must be > 0 (got nan)"),
    (["--address", "[::1]:1"], "--address [::1]:1: no Ray head answers there"),
    (["--address", "127.0.0.1:0"], "give 'auto' or HOST:PORT"),
])
def test_bad_executor_options_are_one_line_and_leave_the_store(tiny_bert, tmp_path, capfd, monkeypatch, args,
                                                                says):
    suite = write_suite(tmp_path / "s.yaml", tiny_bert)
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "runs.jsonl").write_text(STORE)
    import ray

    started = []  # Ray retries an unreachable head for minutes: every bad option is refused before Ray starts
    monkeypatch.setattr(ray, "init", lambda *a, **k: started.append(a or k))
    assert run_main("run", suite, "--results-dir", tmp_path / "res", *args) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("transferbench: ") and says in err[0], err
    assert not started, started
    assert (tmp_path / "res" / "runs.jsonl").read_text() == STORE


def test_ray_not_installed_is_one_line(tiny_bert, tmp_path):
    shim = tmp_path / "shim" / "ray"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text("raise ImportError('No module named ray')\n")
    suite = write_suite(tmp_path / "s.yaml", tiny_bert)
    res = cli("run", suite, "--results-dir", tmp_path / "res", "--jobs", "2",
              env={"PYTHONPATH": str(tmp_path / "shim")})
    assert res.returncode == 2 and res.stderr.strip().splitlines() == [
        "transferbench: error: --executor ray needs Ray: pip install 'transferbench[ray]' (or pip install ray)"]
    assert not (tmp_path / "res").exists()


def test_ray_address_in_the_environment_with_jobs_is_one_line(tiny_bert, tmp_path, capfd, monkeypatch):
    suite = write_suite(tmp_path / "s.yaml", tiny_bert)
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "runs.jsonl").write_text(STORE)
    import ray

    started = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: started.append(a or k))
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    assert run_main("run", suite, "--results-dir", tmp_path / "res", "--jobs", "2") == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert err == ["transferbench: error: RAY_ADDRESS=10.0.0.1:6379 is set, and --jobs starts a local Ray instance: "
                   "unset RAY_ADDRESS for a local one, or join that cluster with --address 10.0.0.1:6379"]
    assert not started and (tmp_path / "res" / "runs.jsonl").read_text() == STORE


def test_an_address_that_is_not_a_ray_head_is_refused_before_ray_starts(tiny_bert, tmp_path, capfd, monkeypatch):
    """A TCP port that answers, but not as Ray's GCS (gRPC) does: one line, instead of Ray retrying for minutes."""
    import socket
    import threading

    import ray

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def answer_http():  # a web server's answer to anything
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(1024)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

    threading.Thread(target=answer_http, daemon=True).start()
    suite = write_suite(tmp_path / "s.yaml", tiny_bert)
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "runs.jsonl").write_text(STORE)
    started = []
    monkeypatch.setattr(ray, "init", lambda *a, **k: started.append(a or k))
    try:
        assert run_main("run", suite, "--results-dir", tmp_path / "res", "--address", f"127.0.0.1:{port}") == 2
    finally:
        server.close()
    (line,) = capfd.readouterr().err.strip().splitlines()
    assert f"--address 127.0.0.1:{port}: something listens there but it is not a Ray head" in line
    assert not started and (tmp_path / "res" / "runs.jsonl").read_text() == STORE


def test_a_ray_start_that_never_returns_is_one_line(monkeypatch):
    from transferbench.errors import UserError
    from transferbench.runners.orchestrate import ray_executor

    def never(**kwargs):  # Ray retrying a head that never answers: a Python loop that never returns
        while True:
            time.sleep(0.01)

    monkeypatch.setattr(ray_executor, "INIT_TIMEOUT_S", 0.2)
    before = signal.getsignal(signal.SIGALRM)
    with pytest.raises(UserError, match="a local Ray instance: Ray did not start within 0.2 s"):
        ray_executor._bounded(never, {}, "a local Ray instance")
    assert signal.getsignal(signal.SIGALRM) == before  # the timer's handler is gone again


def _slow_suite(tmp_path, seeds=4):
    return faulty_suite(tmp_path, bench("[slow]"), defaults=f"seeds: {list(range(seeds))}, epochs: 2, batch_size: 20, "
                                                           f"lr: 0.05")


def _wait_for(predicate, proc):
    deadline = time.time() + HANG_GUARD_S
    while not predicate() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)


def test_a_second_ray_driver_waits_for_the_first_and_takes_over_when_it_dies(tmp_path):
    """Two `--jobs 2` drivers on one results folder: the second waits for the runs the first holds (it never exits
    0 having done nothing); when the first is killed (-9), the second takes its runs over; each run is recorded
    exactly once, none lost."""
    suite = _slow_suite(tmp_path, seeds=6)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "FAULT_MARKER": str(tmp_path / "marker"), "FAULT_SLEEP": "1.0"}
    res = tmp_path / "res"
    first = start_cli("run", suite, "--results-dir", res, "--jobs", "2", stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    claims = res / "claims"
    _wait_for(lambda: claims.is_dir() and len(list(claims.glob("*.claim"))) == 6, first)  # it holds every run
    assert first.poll() is None
    out = open(tmp_path / "second.out", "w")
    second = start_cli("run", suite, "--results-dir", res, "--jobs", "2", stdout=out, stderr=subprocess.STDOUT,
                       env={**env, "FAULT_SLEEP": "0"}, text=True)
    said = lambda: "waiting to take over any it does not record" in (tmp_path / "second.out").read_text()  # noqa
    _wait_for(said, second)
    assert second.poll() is None and said()
    killed = time.perf_counter()
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(timeout=HANG_GUARD_S)
    assert second.wait(timeout=HANG_GUARD_S) == 0, (tmp_path / "second.out").read_text()[-3000:]
    _reap_ray_agents(started=killed)
    rows = records(res)
    assert sorted(Counter(r["run_id"] for r in rows).values()) == [1] * 6  # each run exactly once
    assert all(r["status"] == "ok" for r in rows)
    text = (tmp_path / "second.out").read_text()
    assert "claimed by another machine" not in text and "No leaderboard" not in text
