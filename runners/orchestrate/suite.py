"""Run a suite: plan its runs, skip what the store already has, check every pending run's inputs before the first
one trains, then claim each run, hand it to the executor and append its record (the driver, main process only,
is the one writer). A failed run is a row, not a crash."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Optional

from transferbench.claims import Claim
from transferbench.config import Suite
from transferbench.results import Result, Store

from ..signals import check_stop, graceful_stop
from ..train.midrun import remove as remove_checkpoints
from .executor import Executor, LocalExecutor
from .plan import RunPlan, plan_runs
from .preflight import before_training

# .execute and the HF loop import torch: imported where a suite trains, so `run --dry-run` stays torch-free


class Recorded:
    """What the store says about runs, kept current by following its appends (results.StoreTail): the claim check
    before each run parses only the lines added since the last one, never the whole store again. `ok`: run_ids
    with an ok record; `since`: run_ids recorded (ok or not) after this invocation first read the store."""

    def __init__(self, store: Store):
        self.tail = store.tail()
        # a line it cannot read might be a finished run: the user decides (strict); a torn last line included
        self.ok = {r["run_id"] for r in self.tail.read(strict=True, partial=True) if r["status"] == "ok"}
        self.since: set[str] = set()

    def done(self, run_id: str) -> bool:
        """Recorded ok at any time, or recorded at all by another invocation meanwhile (not trained twice)."""
        for r in self.tail.read():
            self.since.add(r["run_id"])
            if r["status"] == "ok":
                self.ok.add(r["run_id"])
        return run_id in self.ok or run_id in self.since


def _claim_run(plan: RunPlan, results_dir: Path, recorded: Recorded, state) -> tuple[str, Optional[Claim]]:
    """Claim a run before training it: ('run', claim) when this invocation now holds it; ('done', None) when
    another invocation recorded it since this one started (ok, or failed: it is not trained twice); ('busy',
    None) while a live invocation on this machine holds it; ('remote', None) when another machine holds it. The
    main process decides; under a multi-process launch every process follows its verdict."""
    verdict, claim = "run", None
    if state.is_main_process:
        claim = Claim(results_dir / "claims" / f"{plan.run_id}.claim")
        if not claim.try_acquire():
            verdict, claim = ("remote" if claim.remote() else "busy"), None
        elif recorded.done(plan.run_id):
            claim.release()
            verdict, claim = "done", None
    if state.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        verdict = broadcast_object_list([verdict], from_process=0)[0]
    return verdict, claim


def run_suite(suite: Suite, results_dir: Path, shard: Optional[str] = None, *, rebuild_stages: bool = False,
              price_per_device_hour: Optional[float] = None, executor: Optional[Executor] = None,
              log=print) -> list[Result]:
    """Run every pending run of the suite on `executor` (default: local); returns this invocation's results. The
    driver claims each run, submits it and is the one writer of the store, whichever executor trains."""
    t0 = time.perf_counter()
    startup = process_seconds()  # interpreter start and imports, before this call
    from .execute import process_state

    state = process_state()
    plans = plan_runs(suite, shard, price_per_device_hour)
    store = Store(results_dir)
    recorded = Recorded(store)
    state.wait_for_everyone()  # every process has read the store before the main one appends to it
    pending = [p for p in plans if p.run_id not in recorded.ok]
    if not state.is_main_process:
        log = lambda *a, **k: None  # noqa: E731 - only the main process logs
    if executor is None:
        executor = LocalExecutor(results_dir, rebuild_stages, state.num_processes, log)
    log(f"suite {suite.name}: {len(plans)} runs, {len(plans) - len(pending)} already in {store.path}, "
        f"{len(pending)} to run on {executor.where}")
    t_pre = time.perf_counter()
    with state.main_process_first():  # the main process writes dataset caches; the others then read them
        before_training(results_dir, pending, rebuild_stages, state.num_processes,
                        main_process=state.is_main_process)
    times = {"preflight_seconds": time.perf_counter() - t_pre}
    results = []
    bar = _suite_bar(suite.name, len(pending), state.is_main_process)
    say = bar.write if not bar.disable else log  # log lines above the bar, not through it
    executor.log = say
    index = {p.run_id: i for i, p in enumerate(pending, 1)}
    holds: dict[str, Optional[Claim]] = {}

    def finish(plan: RunPlan, res: Result) -> None:
        """The one place a finished run is recorded (the main process alone appends)."""
        check_stop()  # Ctrl-C during the run (a foreign loop's child may have died of it): not recorded
        results.append(res)
        if state.is_main_process:
            store.append(res)
            remove_checkpoints(results_dir / "work" / plan.run_id)  # recorded: nothing left to resume
            spec = plan.spec
            metric = f"{res.metric_name}={res.metric:.4f}" if res.metric is not None else res.error
            say(f"[{index[plan.run_id]}/{len(pending)}] {spec.task} {spec.model} {spec.mode} n={res.train_samples} "
                f"seed={spec.seed}: {res.status} {metric} ({res.wall_seconds:.1f}s)")
        held = holds.pop(plan.run_id, None)
        if held is not None:
            held.release()
        bar.update(1)

    from tqdm.contrib.logging import logging_redirect_tqdm

    try:  # log lines (a YOLO run's epochs) are written above the suite bar, not through it
        with graceful_stop(), logging_redirect_tqdm([logging.getLogger("transferbench")]):
            if pending:
                executor.start(pending)
            queue, waited = list(pending), False
            while queue:
                busy = []
                for plan in queue:
                    check_stop()
                    verdict, held = _claim_run(plan, results_dir, recorded, state)
                    if verdict == "busy":
                        busy.append(plan)
                        continue
                    if verdict != "run":
                        _skipped(plan, verdict, results_dir, say, index, len(pending))
                        bar.update(1)
                        continue
                    holds[plan.run_id] = held
                    bar.set_postfix_str(f"{plan.spec.model} {plan.spec.mode} n={plan.spec.budget} "
                                        f"seed={plan.spec.seed}", refresh=True)
                    executor.submit(plan)
                    for done_plan, res in executor.finished(wait=False):
                        finish(done_plan, res)
                for done_plan, res in executor.finished(wait=True):
                    finish(done_plan, res)
                queue = busy
                if queue:
                    if not waited:
                        say(f"suite {suite.name}: {len(queue)} run(s) are being trained by another invocation; "
                            f"waiting to take over any it does not record")
                    waited = True
                    time.sleep(1.0)
    finally:
        bar.close()
        executor.cancel()
        for held in holds.values():
            if held is not None:
                held.release()
        executor.close()
    if results and state.is_main_process:
        _record_timing(suite.name, results, results_dir, startup, time.perf_counter() - t0,
                       {**times, **executor.times}, log)
    return results


def _skipped(plan: RunPlan, verdict: str, results_dir: Path, say, index: dict, total: int) -> None:
    why = ("recorded meanwhile by another invocation; not trained again" if verdict == "done" else
           "claimed by another machine; skipped (its claim: "
           f"{Claim(results_dir / 'claims' / f'{plan.run_id}.claim').describe()})")
    spec = plan.spec
    say(f"[{index[plan.run_id]}/{total}] {spec.task} {spec.model} {spec.mode} seed={spec.seed}: {why}")


def _suite_bar(name: str, total: int, main: bool):
    """The outer bar: runs done / total, elapsed, and the rest estimated from the runs finished so far (off
    when stderr is not a terminal, under -q, and on every process but the main one)."""
    from tqdm.auto import tqdm

    quiet = logging.getLogger("transferbench").level > logging.INFO  # -q
    return tqdm(total=total, desc=f"suite {name}", unit="run", dynamic_ncols=True, position=0,
                disable=None if main and not quiet else True)


def process_seconds() -> Optional[float]:
    """Seconds since this process started (psutil), so a suite's wall time includes start-up and imports."""
    import psutil

    try:
        started = psutil.Process().create_time()
    except psutil.Error:
        return None
    return max(0.0, time.time() - started)


def _record_timing(name: str, results: list[Result], results_dir: Path, startup: Optional[float], seconds: float,
                   times: dict, log) -> None:
    """The invocation's wall time against the train + eval seconds its runs spent, appended to suite_timing.jsonl:
    what the harness costs beyond training (start-up, preflight, stages, per-run setup, learning-rate searches).
    Seconds billed to a run for shared work done once (charged_seconds: cached features) are not time this
    invocation spent twice: they leave the denominator."""
    import json

    from .record import now

    total = lambda key: sum(getattr(r, key) or 0.0 for r in results)  # noqa: E731
    work = total("train_seconds") + total("eval_seconds") - total("charged_seconds")
    wall = seconds + (startup or 0.0)
    row = dict(suite=name, finished_at=now(), runs=len(results), runs_ok=sum(r.status == "ok" for r in results),
               wall_seconds=round(wall, 3), startup_seconds=startup and round(startup, 3),
               suite_seconds=round(seconds, 3), train_eval_seconds=round(work, 3),
               train_seconds=round(total("train_seconds"), 3), eval_seconds=round(total("eval_seconds"), 3),
               setup_seconds=round(total("setup_seconds"), 3), runs_wall_seconds=round(total("wall_seconds"), 3),
               charged_seconds=round(total("charged_seconds"), 3),
               search_seconds=round(sum((r.lr_search or {}).get("seconds", 0.0) for r in results
                                        if r.lr_search and not r.lr_search.get("reused")), 3),
               **{k: round(v, 3) for k, v in times.items()}, overhead_ratio=round(wall / work, 4) if work else None)
    try:
        results_dir.mkdir(parents=True, exist_ok=True)
        with open(results_dir / "suite_timing.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    except OSError as err:  # the runs are recorded; their timing summary is not worth a failure
        log(f"suite {name}: timing not written to {results_dir / 'suite_timing.jsonl'} ({err.strerror})")
        return
    log(f"suite {name}: wall {wall:.1f}s (start-up {row['startup_seconds']}s, preflight {row['preflight_seconds']}s, "
        + (f"Ray start {row['ray_start_seconds']}s, " if "ray_start_seconds" in row else
           f"warm-up {row.get('warmup_seconds')}s, ")
        + f"stages {row['stages_seconds']}s, runs' setup {row['setup_seconds']}s"
        + (f", lr searches {row['search_seconds']}s" if row["search_seconds"] else "")
        + f") vs runs' train + eval {work:.1f}s"
        + (f": {wall / work:.2f}x" if work else "") + f" -> {results_dir / 'suite_timing.jsonl'}")
