"""`transferbench run | report | stages | list`. Bad input: one line on stderr, exit 2. Failed runs: exit 1."""
from __future__ import annotations

import argparse
import difflib
import errno
import logging
import math
import os
import sys
import warnings
from pathlib import Path

from transferbench.errors import UserError

# The shipped suites: benchmarks/ beside runners/ in a checkout, transferbench/benchmarks/ (package data, mapped in
# pyproject.toml) in an installed wheel; runners/ sits one level below either.
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
DEFAULT_SUITE = BENCHMARKS / "quickstart.yaml"


def shipped_suites() -> dict[str, Path]:
    """Suite name (the file's stem) -> its YAML, for every suite that ships with transferbench."""
    return {p.stem: p for p in sorted(BENCHMARKS.glob("*.yaml"))}


def resolve_suite(arg: str | Path) -> Path:
    """A suite given as a path to a YAML file, or as the name of a shipped suite (`quickstart`). A path that does
    not exist is returned as it is (loading it says so), unless it names no folder and no .yaml: then it was meant
    as a name, and an unknown one is refused in one line with the shipped names."""
    path = Path(arg)
    if path.is_file():
        return path
    shipped = shipped_suites()
    if str(arg) in shipped:
        return shipped[str(arg)]
    if path.suffix.lower() in (".yaml", ".yml") or len(path.parts) != 1:
        if path.stem in shipped:  # benchmarks/NAME.yaml from outside a checkout, say
            raise UserError(f"suite file not found: {arg}; the suite of that name ships with transferbench: "
                            f"`transferbench run {path.stem}`")
        return path
    close = difflib.get_close_matches(str(arg), list(shipped), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"unknown suite '{arg}': no such file, and no shipped suite of that name ({hint}shipped: "
                    f"{', '.join(shipped) or 'none'}); give a shipped name or a path to a suite YAML")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="transferbench", description="Fine-tune, LoRA, linear-probe or scratch? "
                                "Train each mode over budgets and seeds, then compare.")
    p.add_argument("-v", "--verbose", action="count", default=0, help="more output: library info logs and "
                   "dataset progress bars (-vv: debug logs); before the command, e.g. `transferbench -v run`")
    p.add_argument("-q", "--quiet", action="count", default=0, help="less output: no progress bars or per-epoch "
                   "lines, only warnings, errors and the results")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a suite (default: the offline quickstart suite)")
    run.add_argument("suite", nargs="?", default=str(DEFAULT_SUITE), help="suite YAML (default: %(default)s)")
    run.add_argument("--results-dir", help="where runs.jsonl lives (default: results/<suite name>)")
    run.add_argument("--shard", metavar="I/N", help="run only the I-th of N disjoint slices of the suite")
    run.add_argument("--price-per-device-hour", type=float, metavar="USD",
                     help="override the price table for every run's cost")
    run.add_argument("--dry-run", action="store_true", help="validate and list the runs; train nothing")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                     help="override a suite value (repeatable): a dotted path, VALUE in YAML, e.g. "
                     "--set benchmarks.0.epochs=3 --set defaults.seeds=[0,1]")
    ex = run.add_argument_group("executor", "how the pending runs are scheduled (default: here, one after another)")
    ex.add_argument("--executor", choices=["local", "ray"], help="local (default), or ray: one Ray task per run "
                    "on the devices Ray assigns (pip install 'transferbench[ray]')")
    ex.add_argument("--jobs", type=int, metavar="N", help="a local Ray instance training N runs at a time "
                    "(implies --executor ray)")
    ex.add_argument("--address", metavar="auto|HOST:PORT", help="join a running Ray cluster (implies --executor ray)")
    ex.add_argument("--gpus-per-run", type=float, metavar="K", help="GPUs each run reserves (default 1 where "
                    "the Ray instance has GPUs; K > 1 is not supported yet)")
    ex.add_argument("--cpus-per-run", type=float, default=1.0, metavar="C",
                    help="CPUs each run reserves (default: %(default)s)")
    run.add_argument("--rebuild-stages", action="store_true", help="retrain the suite's pretrain stages even when "
                     "a checkpoint for the same stage spec exists")
    rep = sub.add_parser("report", help="leaderboard of one or several results folders: Markdown (printed), CSV, "
                         "JSON, HTML and plots")
    rep.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR",
                     help="folders holding runs.jsonl (shards and machines merge; each run_id counts once)")
    rep.add_argument("--out", help="where the leaderboard files go (default: the one RESULTS_DIR)")
    rep.add_argument("--publish", metavar="DIR", help="also write a Hugging Face dataset folder (data + card)")
    rep.add_argument("--title", help="the leaderboard's title (default: from the suite names)")
    rep.add_argument("--push-to-hub", metavar="REPO_ID", help="upload the --publish folder to the Hub as the dataset "
                     "repo REPO_ID (USER/NAME; created if missing; needs a token: `hf auth login` or HF_TOKEN)")
    stg = sub.add_parser("stages", help="train (or find) a suite's pretrain stages; --ship copies them into the "
                         "package, where the suite then finds them without training")
    stg.add_argument("suite", nargs="?", default=str(DEFAULT_SUITE), help="suite YAML (default: %(default)s)")
    stg.add_argument("--rebuild", action="store_true", help="retrain even when a checkpoint exists")
    stg.add_argument("--ship", action="store_true", help="copy the checkpoints to transferbench/stages/ (replacing "
                     "older ones of the same stage)")
    stg.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                     help="override a suite value, as for `run` (repeatable)")
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

    suite = load_suite(args.suite, args.overrides)  # before the heavy imports: a typo is reported at once
    price = args.price_per_device_hour
    if price is not None and not (math.isfinite(price) and price >= 0):
        raise UserError(f"--price-per-device-hour must be >= 0 and finite (got {price})")
    from transferbench.energy import grid_intensity

    grid_intensity()  # a bad TRANSFERBENCH_GRID_GCO2_PER_KWH is one line now, not a failed row per run
    results_dir = Path(args.results_dir or Path("results") / suite.name)
    try:
        is_file = results_dir.exists() and not results_dir.is_dir()
    except OSError as err:  # a name longer than the filesystem allows, a loop of symlinks...
        what = "the filesystem cannot hold this name" if err.errno == errno.ENAMETOOLONG else err.strerror
        raise UserError(f"--results-dir {str(results_dir)[:100]}...: {what}; give another folder") from None
    if is_file:
        raise UserError(f"--results-dir {results_dir} is a file; give a folder (it holds runs.jsonl)")

    ray_options = _ray_options(args)
    from .orchestrate.suite import expand_runs, run_suite  # torch-free until a run trains: a dry run imports no torch

    if args.dry_run:  # everything `run` checks before training, checked here too; nothing written
        from transferbench.results import Store

        from .orchestrate.preflight import check_writable, preflight

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
    from .orchestrate.execute import process_state
    from .signals import Interrupted

    try:
        results = run_suite(suite, results_dir, args.shard, args.price_per_device_hour, args.rebuild_stages,
                            ray_options=ray_options)
    except Interrupted as stop:  # exit 128 + signal, as a shell reports it
        if process_state().is_main_process:
            print(f"transferbench: stopped by {stop}; finished runs are in {results_dir / 'runs.jsonl'}, the "
                  f"interrupted run was not recorded and runs again next time", file=sys.stderr)
        return 128 + stop.signum
    if process_state().is_main_process:  # the same loader and writers as `transferbench report` on this store
        from .report.outputs import after_run

        print("\n" + after_run(results_dir, title=f"Leaderboard: {suite.name}"))
    return 1 if any(r.status != "ok" for r in results) else 0


def _ray_options(args):
    """RayOptions when the run asks for Ray (--executor ray, --jobs or --address), checked at once; else None."""
    if args.executor == "local" and (args.jobs is not None or args.address is not None):
        raise UserError("--jobs and --address schedule runs on Ray; drop them or use --executor ray")
    if args.executor != "ray" and args.jobs is None and args.address is None:
        if args.gpus_per_run is not None:
            raise UserError("--gpus-per-run applies to the ray executor; add --jobs N or --executor ray")
        return None
    from .orchestrate.ray_executor import RayOptions, check_early

    options = RayOptions(address=args.address, jobs=args.jobs, gpus_per_run=args.gpus_per_run,
                         cpus_per_run=args.cpus_per_run)
    check_early(options)
    return options


def _folder_arg(flag: str, value) -> None:
    """An output folder flag that points at an existing file: one line, before anything is computed."""
    if value is not None and Path(value).exists() and not Path(value).is_dir():
        raise UserError(f"{flag} {value} is a file; give a folder (the leaderboard files go there)")


def _report(args) -> int:
    from .report.outputs import report

    _folder_arg("--out", args.out)
    _folder_arg("--publish", args.publish)
    if args.push_to_hub:
        from .report.publish import check_push

        check_push(args.push_to_hub, args.publish)  # a bad repo id or no --publish: one line, before the report

    print(report(args.results_dirs, args.out and Path(args.out), args.publish and Path(args.publish), args.title))
    if args.push_to_hub:
        from .report.publish import push_to_hub

        print(push_to_hub(Path(args.publish), args.push_to_hub))
    return 0


def _plan(args) -> int:
    _folder_arg("--out", args.out)
    from .report.planner_report import parse_budgets, write_plan

    print(write_plan(args.results_dirs, args.out and Path(args.out), args.target, parse_budgets(args.budgets),
                     args.max_cost, args.max_factor))
    return 0


def _stages(args) -> int:
    import shutil

    from transferbench.config import load_suite

    from .orchestrate.stages import SHIPPED_STAGES, ensure_stage, stage_dir
    from .orchestrate.suite import expand_runs

    stages = {r.stage.stage_name: r.stage for r in expand_runs(load_suite(args.suite, args.overrides)) if r.stage}
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
        grid = ", ".join(f"{x:g}" for x in mode.auto_grid)
        print(f"  {name:22s} {mode.summary} (lr: auto searches {grid}; default lr {mode.default_lr:g})")
    print("built-in datasets:")
    for name, card in builtin.describe().items():
        print(f"  builtin:{name:14s} {card}")
    print("model aliases:")
    for name, (_, what) in models.ALIASES.items():
        print(f"  {name:22s} {what}")
    print("suites (`transferbench run NAME`, or a path to your own YAML):")
    for name, path in shipped_suites().items():
        print(f"  {name:22s} {path}")
    return 0


_HANDLER = logging.StreamHandler(sys.stderr)  # transferbench's own lines (per-epoch lines, warnings); added once


def _quiet_libraries(verbosity: int = 0) -> None:
    """Our progress bars and result lines are the output; library load reports are noise unless -v asks for them.
    verbosity: -1 and below (-q) warnings only, no bars; 0 our info lines; 1 (-v) libraries' info too; 2 debug.
    A library's own environment variable (TRANSFORMERS_VERBOSITY, ...) wins when no flag is given."""
    logger = logging.getLogger("transferbench")
    logger.setLevel(logging.WARNING if verbosity < 0 else logging.INFO if verbosity < 2 else logging.DEBUG)
    if _HANDLER not in logger.handlers:
        logger.addHandler(_HANDLER)
    library = {-1: "error", 0: "error", 1: "info", 2: "debug"}[max(-1, min(2, verbosity))]
    put = os.environ.__setitem__ if verbosity else os.environ.setdefault
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    put("TRANSFORMERS_VERBOSITY", library)
    put("DATASETS_VERBOSITY", "warning" if library == "error" else library)
    # Download bars of the Hub (and of datasets) show where something may download; offline there is nothing
    # to show, and -q hides them. Dataset processing bars (map, splits) are shown from -v.
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    put("HF_HUB_DISABLE_PROGRESS_BARS", "1" if offline or verbosity < 0 else "0")
    put("HF_DATASETS_DISABLE_PROGRESS_BARS", "0" if verbosity > 0 else "1")
    if verbosity < 1:
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    # imported before main() (a notebook, tests): the variables came too late for them
    level = lambda name: getattr(logging, os.environ[name].upper(), logging.WARNING)  # noqa: E731
    if "datasets" in sys.modules:
        sys.modules["datasets"].utils.logging.set_verbosity(level("DATASETS_VERBOSITY"))
        if os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] == "1":
            sys.modules["datasets"].disable_progress_bars()
        else:
            sys.modules["datasets"].enable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].logging.set_verbosity(level("TRANSFORMERS_VERBOSITY"))
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

        (disable_progress_bars if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1" else enable_progress_bars)()


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    _quiet_libraries(args.verbose - args.quiet)
    try:
        if getattr(args, "suite", None) is not None:  # run, stages: a shipped suite's name or a path
            args.suite = str(resolve_suite(args.suite))
        return {"run": _run, "report": _report, "stages": _stages, "list": _list, "plan": _plan}[args.command](args)
    except UserError as err:
        print(f"transferbench: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("transferbench: interrupted; finished runs are in the store", file=sys.stderr)
        return 130
