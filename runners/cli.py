"""`transferbench run | report | stages | plan | list`: argument parsing over the Python API (runners/api.py). Bad input:
one line on stderr, exit 2. Failed runs: exit 1. Stopped by a signal: 128 + its number."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import transferbench
from transferbench.errors import UserError
from transferbench.folders import check_name, check_output_folder, not_written

from . import api
from .suites import DEFAULT_SUITE, resolve_suite, shipped_suites
from .verbosity import set_verbosity

def _global_flags(parser: argparse.ArgumentParser, where: str) -> None:
    """-v/-q and --version, on the top-level parser and on every command's (`transferbench run x -q` as
    `transferbench -q run x`); each level counts into its own dest (`where`), summed by `_verbosity`."""
    parser.add_argument("-v", "--verbose", action="count", default=0, dest=f"{where}verbose", help="more output: "
                        "library info logs and dataset progress bars (-vv: debug logs); before or after the command")
    parser.add_argument("-q", "--quiet", action="count", default=0, dest=f"{where}quiet", help="less output: no "
                        "progress bars or per-epoch lines, only warnings, errors and the results")
    parser.add_argument("--version", action="version", version=f"transferbench {transferbench.__version__}")


def _verbosity(args) -> int:
    return args.verbose + args.command_verbose - args.quiet - args.command_quiet


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="transferbench", description="Fine-tune, LoRA, linear-probe or scratch? "
                                "Train each mode over budgets and seeds, then compare.")
    _global_flags(p, "")
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
    _push_models_option(run)
    rep = sub.add_parser("report", help="leaderboard of one or several results folders: Markdown (printed), CSV, "
                         "JSON, HTML and plots")
    rep.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR",
                     help="folders holding runs.jsonl (shards and machines merge; each run_id counts once)")
    rep.add_argument("--out", help="where the leaderboard files go (default: the one RESULTS_DIR)")
    rep.add_argument("--publish", metavar="DIR", help="also write a Hugging Face dataset folder (data + card)")
    rep.add_argument("--title", help="the leaderboard's title (default: from the suite names)")
    rep.add_argument("--space", metavar="DIR", help="also write a Gradio app serving the --publish folder (app.py, "
                     "README.md with Space front matter, requirements.txt): `python DIR/app.py` serves it locally; "
                     "push DIR as a Hugging Face Space")
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
    pln = sub.add_parser("plan", help="fit each learning curve (the family that predicts best) and predict metric "
                         "and cost at budgets not yet run, with calibrated intervals: crossover, data multiplier, "
                         "cheapest mode to a target, best metric per dollar; prints, writes only with --out")
    pln.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR",
                     help="folders holding runs.jsonl (shards and machines merge; each run_id counts once)")
    pln.add_argument("--target", metavar="VALUE", help="metric value to reach: the cheapest mode predicted to reach it")
    pln.add_argument("--budgets", metavar="N,N,...", help="predict at these numbers of examples (default: the "
                     "measured budgets, 2x and 4x the largest)")
    pln.add_argument("--max-cost", metavar="USD", help="per mode, the best predicted metric at <= USD per run")
    pln.add_argument("--max-factor", metavar="F", default="4", help="refuse budgets beyond F x the largest measured "
                     "(default: %(default)s)")
    pln.add_argument("--out", help="also write plan.md and plan.json to this folder (default: print only; `report` "
                     "writes them beside the leaderboard)")
    for command in sub.choices.values():
        _global_flags(command, "command_")
    return p


def _push_models_option(run) -> None:
    run.add_argument("--push-models", metavar="ORG", help="after the runs, push each saved model or adapter "
                     "(save_models: final) to the Hub as ORG/<suite>-<model>-<mode>-n<budget>-s<seed>-<run_id> "
                     "with a model card (needs a token: `hf auth login` or HF_TOKEN)")


def _check_push_models(args) -> None:
    """--push-models: a bad org, no run saving its model, no Hub or no token: one line, before anything trains."""
    from transferbench.config import load_suite

    from .orchestrate.plan import plan_runs
    from .report.hub_models import check

    plans = plan_runs(load_suite(args.suite, args.overrides), args.shard)
    check(args.push_models, any(p.spec.hyper.save_models == "final" for p in plans))


def _push_models(args, folder: Path) -> None:
    from .orchestrate.execute import process_state
    from .report.hub_models import push

    if process_state().is_main_process:
        for line in push(folder, args.push_models):
            print(line)


def _run(args) -> int:
    if args.push_models is not None and not args.dry_run:
        _check_push_models(args)
    if args.dry_run:  # everything `run` checks before training, checked here too; nothing written
        plans = api.dry_run(args.suite, results_dir=args.results_dir, shard=args.shard,
                            rebuild_stages=args.rebuild_stages, overrides=args.overrides)
        processes = int(os.environ.get("WORLD_SIZE", "1"))  # under `accelerate launch`, as the runs will split
        for plan in plans:
            print(f"{plan.run_id}  {plan.describe(processes)}")
        print(f"{len(plans)} runs")
        return 0
    from .signals import Interrupted

    try:
        folder, results = api.launch(args.suite, results_dir=args.results_dir, shard=args.shard,
                                     price_per_device_hour=args.price_per_device_hour,
                                     rebuild_stages=args.rebuild_stages, overrides=args.overrides,
                                     executor=args.executor, jobs=args.jobs, address=args.address,
                                     gpus_per_run=args.gpus_per_run, cpus_per_run=args.cpus_per_run)
    except Interrupted as stop:  # exit 128 + signal, as a shell reports it
        if stop.main_process:
            print(f"transferbench: stopped by {stop}; finished runs are in {stop.store}, the interrupted run was "
                  f"not recorded and runs again next time", file=sys.stderr)
        return 128 + stop.signum
    if args.push_models is not None:
        _push_models(args, folder)
    return 1 if any(r.status != "ok" for r in results) else 0


def _folder_arg(flag: str, value) -> None:
    """An output folder flag that cannot be a folder (a file at or above it, a dangling symlink, a name that is
    not UTF-8): one line, before anything is computed."""
    if value is not None:
        check_output_folder(flag, value)


def _report(args) -> int:
    from .report.outputs import report

    for folder in args.results_dirs:
        check_name("RESULTS_DIR", folder)
    _folder_arg("--out", args.out)
    _folder_arg("--publish", args.publish)
    _folder_arg("--space", args.space)
    from .report.space import check_space

    check_space(args.space, args.publish)
    if args.push_to_hub is not None:  # "" too: refused as a repo id, never silently ignored
        from .report.publish import check_push

        check_push(args.push_to_hub, args.publish)  # a bad repo id or no --publish: one line, before the report

    print(report(args.results_dirs, args.out and Path(args.out), args.publish and Path(args.publish), args.title))
    if args.push_to_hub is not None:
        from .report.publish import push_to_hub

        print(push_to_hub(Path(args.publish), args.push_to_hub))
    if args.space is not None:  # gradio is imported here only (its version goes into the Space's card)
        from .report.space import write_space

        title = json.loads((Path(args.publish) / "decisions.json").read_text(encoding="utf-8"))["title"]
        app = write_space(Path(args.space), Path(args.publish), title, args.push_to_hub)[0]
        print(f"Space written to {args.space}: serve it with `python {app}` (http://127.0.0.1:7860)")
    return 0


def _plan(args) -> int:
    for folder in args.results_dirs:
        check_name("RESULTS_DIR", folder)
    _folder_arg("--out", args.out)
    from .report.planner_report import parse_budgets, write_plan

    try:
        text = write_plan(args.results_dirs, args.out and Path(args.out), args.target, parse_budgets(args.budgets),
                          args.max_cost, args.max_factor)
    except OSError as err:  # read-only, full, over a file-size limit
        raise not_written(err) from None
    print(text)
    return 0


def _stages(args) -> int:
    from .orchestrate.stages import StageFailed

    try:
        built = api.stages(args.suite, rebuild=args.rebuild, ship=args.ship, overrides=args.overrides)
    except StageFailed as err:  # it trained and failed (a full disk while saving...): one line, exit 1
        print(f"transferbench: error: {err}", file=sys.stderr)
        return 1
    for name, path in built.items():
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


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    set_verbosity(_verbosity(args))
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
