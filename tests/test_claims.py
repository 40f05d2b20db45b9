"""Claims: invocations sharing one store (concurrently, or from another machine) train each run exactly once; stale
claims are taken over. Concurrency runs real processes (@pytest.mark.slow)."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from helpers import HANG_GUARD_S, bench, faulty_suite, result, run_args, run_main, start_cli, xor_suite
from transferbench.claims import Claim
from transferbench.results import Store


def test_claims_detect_stale_live_and_remote_holders(tmp_path):
    path = tmp_path / "r.claim"
    mine = Claim(path)
    assert mine.try_acquire() and not Claim(path).try_acquire()  # held by this live process
    mine.release()
    assert not path.exists()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid, "ticks": "1"}))
    taker = Claim(path)
    assert taker.try_acquire()  # the claimer is gone: stale, taken over
    assert json.loads(path.read_text())["pid"] == os.getpid()
    taker.release()

    path.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    other = Claim(path)
    assert not other.try_acquire() and other.remote() and "delete" in other.describe()

    reused = {"host": os.uname().nodename, "pid": os.getpid(), "ticks": "not-my-start-time"}
    path.write_text(json.dumps(reused))
    assert Claim(path).try_acquire()  # a reused pid: a different process started at another time


def test_a_run_claimed_on_another_machine_is_not_trained(reliability_env, capsys):
    tmp = reliability_env
    xor_suite(tmp)
    from transferbench.config import load_suite
    from transferbench.runners.orchestrate.plan import plan_runs

    (run,) = plan_runs(load_suite(tmp / "s.yaml"))
    claims = tmp / "res" / "claims"
    claims.mkdir()
    (claims / f"{run.run_id}.claim").write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "x"}))
    before = (tmp / "res" / "runs.jsonl").read_bytes()
    assert run_main(*run_args(tmp)) == 0
    assert "claimed by another machine" in capsys.readouterr().out
    assert (tmp / "res" / "runs.jsonl").read_bytes() == before


def test_a_stale_claim_is_taken_over_and_the_run_recorded_once(reliability_env):
    tmp = reliability_env
    xor_suite(tmp)
    from transferbench.config import load_suite
    from transferbench.runners.orchestrate.plan import plan_runs

    (run,) = plan_runs(load_suite(tmp / "s.yaml"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp / "res" / "claims").mkdir()
    (tmp / "res" / "claims" / f"{run.run_id}.claim").write_text(
        json.dumps({"host": os.uname().nodename, "pid": dead.pid, "ticks": "1"}))
    assert run_main(*run_args(tmp)) == 0
    ids = [r["run_id"] for r in Store(tmp / "res").records(strict=True)]
    assert ids.count(run.run_id) == 1 and not list((tmp / "res" / "claims").glob("*.claim"))


def test_a_run_recorded_meanwhile_by_another_invocation_is_not_trained_again(reliability_env):
    """`_claim_run` after another invocation recorded the run (even as failed) since this one read the store."""
    tmp = reliability_env
    xor_suite(tmp)
    from transferbench.config import load_suite
    from transferbench.runners.orchestrate.execute import process_state
    from transferbench.runners.orchestrate.plan import plan_runs
    from transferbench.runners.orchestrate.suite import Recorded, _claim_run

    (run,) = plan_runs(load_suite(tmp / "s.yaml"))
    store = Store(tmp / "res")
    recorded = Recorded(store)  # the store as this invocation first read it, then followed
    assert _claim_run(run, tmp / "res", recorded, process_state())[0] == "run"
    Claim(tmp / "res" / "claims" / f"{run.run_id}.claim").path.unlink()
    store.append(result(run.run_id, status="failed"))
    assert _claim_run(run, tmp / "res", recorded, process_state()) == ("done", None)


# --- real processes ----------------------------------------------------------------------------------------
def _leaderboard_table(text: str) -> str:
    """The leaderboard's tables (without the lines that name where files went or when)."""
    return "\n".join(line for line in text.splitlines() if line.startswith("|"))


@pytest.mark.slow
def test_two_concurrent_invocations_train_each_run_once(tmp_path):
    suite = faulty_suite(tmp_path, bench("[fine, fine2, fine3]"), "seeds: [0, 1], epochs: 2, batch_size: 20, lr: 0.05")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    procs = [start_cli("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=HANG_GUARD_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    ids = [r["run_id"] for r in Store(tmp_path / "res").records(strict=True)]
    assert len(ids) == 6 and len(set(ids)) == 6  # each run_id exactly once
    report = subprocess.run([sys.executable, "-m", "transferbench", "report", tmp_path / "res", "--out",
                             tmp_path / "rep"], capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert report.returncode == 0
    tables = {_leaderboard_table(o[0]) for o in outs}
    assert _leaderboard_table(report.stdout) in tables and _leaderboard_table(report.stdout)


@pytest.mark.slow
def test_two_invocations_needing_one_uncached_stage_train_it_once(tiny_bert, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(textwrap.dedent(f"""
        name: stagerace
        defaults: {{seeds: [0, 1], epochs: 1, batch_size: 8}}
        pretrain:
          base: {{task: text-classification, dataset: builtin:topics, model: {tiny_bert}, mode: finetune,
                  train_samples: 32, task_args: {{max_length: 8}}}}
        benchmarks:
          - task: text-classification
            dataset: builtin:topics
            models: [pretrain:base]
            modes: [finetune, linear-probe]
            train_samples: [16]
            task_args: {{max_length: 8}}
        """))
    env = {**os.environ, "TRANSFERBENCH_CACHE": str(tmp_path / "cache")}
    procs = [start_cli("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=HANG_GUARD_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    text = "".join(o[0] for o in outs)
    assert text.count("pretrain stage base: training") == 1  # the other invocation waited and reused it
    records = Store(tmp_path / "res").records(strict=True)
    assert len(records) == 4 == len({r["run_id"] for r in records}) and all(r["status"] == "ok" for r in records)
