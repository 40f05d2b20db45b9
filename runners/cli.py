"""`transferbench run | report | stages | list`. Bad input: one line on stderr, exit 2. Failed runs: exit 1."""
from __future__ import annotations

import argparse
import errno
import math
import os
import sys
import warnings
from pathlib import Path

from transferbench.errors import UserError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
DEFAULT_SUITE = BENCHMARKS / "quickstart.yaml"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="transferbench", description="Fine-tune, LoRA, linear-probe or scratch? "
                                "Train each mode over budgets and seeds, then compare.")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a suite (default: the offline quickstart suite)")
    run.add_argument("suite", nargs="?", default=str(DEFAULT_SUITE), help="suite YAML (default: %(default)s)")
    run.add_argument("--results-dir", help="where runs.jsonl lives (default: results/<suite name>)")
    run.add_argument("--shard", metavar="I/N", help="run only the I-th of N disjoint slices of the suite")
    run.add_argument("--price-per-device-hour", type=float, metavar="USD",
                     help="override the price table for every run's cost")
    run.add_argument("--dry-run", action="store_true", help="validate and list the runs; train nothing")
    run.add_argument("--rebuild-stages", action="store_true", help="retrain the suite's pretrain stages even when "
                     "a checkpoint for the same stage spec exists")
    rep = sub.add_parser("report", help="leaderboard of one or several results folders: Markdown (printed), CSV, "
                         "JSON, HTML and plots")
    rep.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR",
                     help="folders holding runs.jsonl (shards and machines merge; each run_id counts once)")
    rep.add_argument("--out", help="where the leaderboard files go (default: the one RESULTS_DIR)")
    rep.add_argument("--publish", metavar="DIR", help="also write a Hugging Face dataset folder (data + card)")
    rep.add_argument("--title", help="the leaderboard's title (default: from the suite names)")
    stg = sub.add_parser("stages", help="train (or find) a suite's pretrain stages; --ship copies them into the "
                         "package, where the suite then finds them without training")
    stg.add_argument("suite", nargs="?", default=str(DEFAULT_SUITE), help="suite YAML (default: %(default)s)")
    stg.add_argument("--rebuild", action="store_true", help="retrain even when a checkpoint exists")
    stg.add_argument("--ship", action="store_true", help="copy the checkpoints to transferbench/stages/ (replacing "
                     "older ones of the same stage)")
    sub.add_parser("list", help="tasks, modes, built-in datasets, model aliases and shipped suites")
    pln = sub.add_parser("plan", help="fit each curve (saturating power law) and predict metric and cost at budgets "
                         "not yet run, with intervals: crossover, cheapest mode to a target, best metric per dollar")
    pln.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR",
                     help="folders holding runs.jsonl (shards and machines merge; each run_id counts once)")
    pln.add_argument("--target", metavar="VALUE", help="metric value to reach: the cheapest mode predicted to reach it")
    pln.add_argument("--budgets", metavar="N,N,...", help="predict at these numbers of examples (default: the "
                     "measured budgets, 2x and 4x the largest)")
    pln.add_argument("--max-cost", metavar="USD", help="per mode, the best predicted metric at <= USD per run")
    pln.add_argument("--max-factor", metavar="F", default="4", help="refuse budgets beyond F x the largest measured "
                     "(default: %(default)s)")
    pln.add_argument("--out", help="where plan.md and plan.json go (default: the one RESULTS_DIR)")
    return p


def _run(args) -> int:
    from transferbench.config import load_suite

    suite = load_suite(args.suite)  # before the heavy imports: a typo in the suite is reported at once
    price = args.price_per_device_hour
    if price is not None and not (math.isfinite(price) and price >= 0):
        raise UserError(f"--price-per-device-hour must be >= 0 and finite (got {price})")
    results_dir = Path(args.results_dir or Path("results") / suite.name)
    try:
        is_file = results_dir.exists() and not results_dir.is_dir()
    except OSError as err:  # a name longer than the filesystem allows, a loop of symlinks...
        what = "the filesystem cannot hold this name" if err.errno == errno.ENAMETOOLONG else err.strerror
        raise UserError(f"--results-dir {str(results_dir)[:100]}...: {what}; give another folder") from None
    if is_file:
        raise UserError(f"--results-dir {results_dir} is a file; give a folder (it holds runs.jsonl)")

    from .suite import expand_runs, run_suite  # torch-free until a run trains: a dry run imports no torch

    if args.dry_run:  # everything `run` checks before training, checked here too; nothing written
        from transferbench.results import Store

        from .preflight import check_writable, preflight

        runs = expand_runs(suite, args.shard)
        done = Store(results_dir).completed(strict=True)
        pending = [r for r in runs if r.run_id not in done]
        if pending:
            check_writable(results_dir, pending, keep=False)
        preflight(pending, args.rebuild_stages)
        for spec in runs:
            budget = spec.train_samples if spec.train_samples is not None else spec.train_fraction or "all"
            print(f"{spec.run_id}  {spec.task}  {spec.dataset.source}  {spec.model}  {spec.mode}  "
                  f"budget={budget}  seed={spec.seed}")
        print(f"{len(runs)} runs")
        return 0
    from .execute import process_state
    from .signals import Interrupted

    try:
        results = run_suite(suite, results_dir, args.shard, args.price_per_device_hour, args.rebuild_stages)
    except Interrupted as stop:  # exit 128 + signal, as a shell reports it
        if process_state().is_main_process:
            print(f"transferbench: stopped by {stop}; finished runs are in {results_dir / 'runs.jsonl'}, the "
                  f"interrupted run was not recorded and runs again next time", file=sys.stderr)
        return 128 + stop.signum
    if process_state().is_main_process:  # the same loader and writers as `transferbench report` on this store
        from .report import after_run

        print("\n" + after_run(results_dir, title=f"Leaderboard: {suite.name}"))
    return 1 if any(r.status != "ok" for r in results) else 0


def _folder_arg(flag: str, value) -> None:
    """An output folder flag that points at an existing file: one line, before anything is computed."""
    if value is not None and Path(value).exists() and not Path(value).is_dir():
        raise UserError(f"{flag} {value} is a file; give a folder (the leaderboard files go there)")


def _report(args) -> int:
    from .report import report

    _folder_arg("--out", args.out)
    _folder_arg("--publish", args.publish)

    print(report(args.results_dirs, args.out and Path(args.out), args.publish and Path(args.publish), args.title))
    return 0


def _plan(args) -> int:
    _folder_arg("--out", args.out)
    from .planner_report import parse_budgets, write_plan

    print(write_plan(args.results_dirs, args.out and Path(args.out), args.target, parse_budgets(args.budgets),
                     args.max_cost, args.max_factor))
    return 0


def _stages(args) -> int:
    import shutil

    from transferbench.config import load_suite

    from .stages import SHIPPED_STAGES, ensure_stage, stage_dir
    from .suite import expand_runs

    stages = {r.stage.stage_name: r.stage for r in expand_runs(load_suite(args.suite)) if r.stage}
    if not stages:
        raise UserError(f"{args.suite} declares no pretrain stages")
    for name, stage in stages.items():
        path = Path(ensure_stage(stage, rebuild=args.rebuild))
        if args.ship and path.parent != SHIPPED_STAGES:
            for old in SHIPPED_STAGES.glob(f"{name}-*"):
                shutil.rmtree(old)
            shipped = SHIPPED_STAGES / stage_dir(stage).name  # NAME-ID, not the cache's version folder
            shutil.copytree(path, shipped)
            path = shipped
        print(f"{name}: {path}")
    return 0


def _list(args) -> int:
    from transferbench import builtin, models
    from transferbench.modes import MODES
    from transferbench.tasks import all_tasks

    print("tasks:")
    for name, cls in all_tasks().items():
        print(f"  {name:22s} metric {cls.metric_name} ({', '.join(cls.metric_names)})")
    print("modes:")
    for name, mode in MODES.items():
        print(f"  {name:22s} {mode.summary} (default lr {mode.default_lr:g})")
    print("built-in datasets:")
    for name, card in builtin.describe().items():
        print(f"  builtin:{name:14s} {card}")
    print("model aliases:")
    for name, (_, what) in models.ALIASES.items():
        print(f"  {name:22s} {what}")
    print("suites:")
    for path in sorted(BENCHMARKS.glob("*.yaml")):
        print(f"  {path}")
    return 0


def _quiet_libraries() -> None:
    """Our progress bar and result lines are the output; library load reports and bars are noise."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    if "datasets" in sys.modules and os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1":
        sys.modules["datasets"].disable_progress_bars()  # imported before (a notebook, tests): the variable came late


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    _quiet_libraries()
    try:
        return {"run": _run, "report": _report, "stages": _stages, "list": _list, "plan": _plan}[args.command](args)
    except UserError as err:
        print(f"transferbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transferbench: interrupted; finished runs are in the store", file=sys.stderr)
        return 130
