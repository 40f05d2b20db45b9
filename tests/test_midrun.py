"""Mid-run checkpoints (checkpoint_every): a run killed with SIGKILL after a checkpoint resumes from it on the next
invocation and ends exactly as the same run uninterrupted; checkpoints are removed once the record is written and
never change a run's identity."""
import json
import signal
import subprocess
import time

import pytest

from helpers import HANG_GUARD_S, bench, faulty_suite, run_main, start_cli
from transferbench.config import load_suite

# XOR rows, batch 20 in two accumulated halves: 15 optimizer steps an epoch, 60 in all, 8 evaluations; a checkpoint
# every 19 steps lands after the first epoch (the epoch's shuffle must be drawn again from the generator's state at
# its start), mid-epoch (the batches it had trained are skipped) and between evaluations
DEFAULTS = ("seeds: [0], epochs: 4, batch_size: 20, grad_accum: 2, lr: 0.05, eval_every: 0.5, "
            "checkpoint_every: {steps: 19}")


def _record(folder):
    lines = (folder / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 1, lines
    return json.loads(lines[0])


@pytest.mark.slow
def test_killed_run_resumes_from_its_checkpoint_with_the_uninterrupted_metric(tmp_path, monkeypatch, capsys):
    suite = faulty_suite(tmp_path, bench("[slow]"), defaults=DEFAULTS)
    killed, whole, marker = tmp_path / "killed", tmp_path / "whole", tmp_path / "marker"
    env = {"PYTHONPATH": str(tmp_path), "FAULT_MARKER": str(marker), "FAULT_SLEEP": "0.2"}  # 0.4 s a step
    proc = start_cli("run", suite, "--results-dir", killed, "--price-per-device-hour", "0", env=env,
                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + HANG_GUARD_S
    while time.time() < deadline and proc.poll() is None and not list(killed.glob("work/*/checkpoint/latest.json")):
        time.sleep(0.05)  # waits for the checkpoint itself, never for a length of time
    proc.send_signal(signal.SIGKILL)
    err = proc.communicate()[1].decode()
    assert proc.returncode == -signal.SIGKILL, err[-3000:]  # killed mid-run, not finished
    (latest,) = killed.glob("work/*/checkpoint/latest.json")
    saved_at = json.loads(latest.read_text())["step"]
    assert saved_at in (19, 38, 57)
    assert not (killed / "runs.jsonl").exists() or not (killed / "runs.jsonl").read_text().strip()

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FAULT_MARKER", str(marker))
    monkeypatch.setenv("FAULT_SLEEP", "0")
    assert run_main("run", suite, "--results-dir", killed, "--price-per-device-hour", "0") == 0
    assert run_main("run", suite, "--results-dir", whole, "--price-per-device-hour", "0") == 0
    capsys.readouterr()
    resumed, uninterrupted = _record(killed), _record(whole)
    print(f"killed after the checkpoint at step {saved_at}; resumed: {resumed['metric']!r} at step "
          f"{resumed['optimizer_steps']}, uninterrupted: {uninterrupted['metric']!r}")  # shown with pytest -rP
    assert resumed["run_id"] == uninterrupted["run_id"] and resumed["status"] == "ok"
    assert resumed["resumed_at_step"] == saved_at and uninterrupted["resumed_at_step"] is None
    assert resumed["optimizer_steps"] == uninterrupted["optimizer_steps"] == 60
    # on CPU the resumed run is the uninterrupted one, bit for bit: final metric, every curve point, every loss
    assert resumed["metric"] == uninterrupted["metric"] and resumed["metric"] > 0.6  # it learned XOR
    point = lambda r: [(p["step"], p["samples_seen"], p["metric"], p["train_loss"]) for p in r["curve"]]  # noqa: E731
    assert point(resumed) == point(uninterrupted) and len(resumed["curve"]) == 8
    assert resumed["loss_curve"] == uninterrupted["loss_curve"]
    assert not list(killed.glob("work/*/checkpoint")) and not list(whole.glob("work/*/checkpoint"))  # removed


def test_checkpoints_are_written_during_training_and_removed_with_the_record(tmp_path, monkeypatch):
    """A run that checkpoints every 19 steps wrote its checkpoint (seen from inside the model while it trains:
    the `slow` model's batches), and nothing of it is left once recorded; checkpoint_every is not identity."""
    from transferbench.runners.train import midrun

    suite = faulty_suite(tmp_path, bench("[slow]"), defaults=DEFAULTS)
    seen = []
    real_save = midrun.MidRun.save

    def save(self, state, epoch_start):
        real_save(self, state, epoch_start)
        seen.append((state["step"], sorted(p.name for p in self.folder.iterdir())))

    monkeypatch.setattr(midrun.MidRun, "save", save)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("FAULT_MARKER", str(tmp_path / "marker"))
    monkeypatch.setenv("FAULT_SLEEP", "0")
    assert run_main("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0") == 0
    assert [s for s, _ in seen] == [19, 38, 57]  # not at the end: the record is the end
    assert all(files == ["latest.json", f"step-{s}"] for s, files in seen)  # the older one dropped
    assert not (tmp_path / "res" / "work").exists() or not list((tmp_path / "res").glob("work/*/checkpoint"))
    off = load_suite(suite, ["defaults.checkpoint_every=null"])
    on = load_suite(suite)
    from transferbench.runners.orchestrate.plan import plan_runs

    assert [p.run_id for p in plan_runs(on)] == [p.run_id for p in plan_runs(off)]


@pytest.mark.parametrize("value, message", [("{}", "give steps: N"), ("{steps: 0}", "greater than 0"),
                                            ("{hours: 1}", "hours")])
def test_bad_checkpoint_every_is_one_line(tmp_path, value, message):
    from transferbench.errors import UserError

    suite = faulty_suite(tmp_path, bench("[fine]"))
    with pytest.raises(UserError, match=message):
        load_suite(suite, [f"defaults.checkpoint_every={value}"])


def test_no_checkpoint_without_checkpoint_every(tmp_path, monkeypatch):
    suite = faulty_suite(tmp_path, bench("[fine]"), defaults="seeds: [0], epochs: 2, batch_size: 20, lr: 0.05")
    monkeypatch.syspath_prepend(str(tmp_path))
    from transferbench.runners.train import midrun

    monkeypatch.setattr(midrun.MidRun, "save", lambda *a: pytest.fail("checkpointed without checkpoint_every"))
    assert run_main("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0") == 0


def test_a_checkpoint_that_cannot_be_written_is_a_warning_and_the_run_goes_on(tmp_path, monkeypatch, caplog):
    import errno
    import logging

    from accelerate import Accelerator

    def full(self, output_dir, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    suite = faulty_suite(tmp_path, bench("[fine]"), defaults=DEFAULTS)
    monkeypatch.setattr(Accelerator, "save_state", full)
    monkeypatch.syspath_prepend(str(tmp_path))
    caplog.set_level(logging.INFO, logger="transferbench")
    assert run_main("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0") == 0
    (record,) = [json.loads(x) for x in (tmp_path / "res" / "runs.jsonl").read_text().splitlines()]
    assert record["status"] == "ok" and record["optimizer_steps"] == 60
    warned = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
    assert len(warned) == 3 and "checkpoint at step 19 not written" in warned[0]
    assert "No space left on device); training goes on" in warned[0]
