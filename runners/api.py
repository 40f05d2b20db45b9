"""The Python API (`transferbench.run`, `transferbench.load`, `Results`): the CLI's `run` and the leaderboard's
numbers for notebooks, as pandas DataFrames. Nothing here computes a number of its own: `run` drives the CLI's
`run` command (runners/suite.run_suite, then report.after_run), `cells()` are leaderboard.build's cells (the rows
of the Markdown table), `plan()` is planner.plan."""
from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from transferbench.errors import UserError

from .report.leaderboard import Leaderboard, build, default_title
from .report.merge import load as load_records

if TYPE_CHECKING:
    import pandas

# `run` arguments that are not options: the subcommand, the suite (run's first argument), and --dry-run (it trains
# nothing and leaves no results to return)
_NOT_OPTIONS = {"command", "suite", "dry_run"}


def run(suite: str | Path, **options: Any) -> "Results":
    """Run a suite (a shipped suite's name such as "quickstart", or a path to a YAML) exactly as `transferbench run`
    does, and return its results store. `options` are the `run` command's flags under their argparse names:
    results_dir, shard ("I/N"), price_per_device_hour, rebuild_stages, and whatever else `run` accepts (the
    executor flags such as jobs, overrides for --set, verbose / quiet); an unknown one is a TypeError naming
    them. Bad input raises transferbench.errors.UserError (the CLI's one-line message); runs that fail are rows
    with status "failed", as in the store."""
    from . import cli

    path = cli.resolve_suite(suite)
    args = cli._parser().parse_args(["run", str(path)])  # every flag at its command-line default
    accepted = sorted(set(vars(args)) - _NOT_OPTIONS)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"run() got unexpected option(s) {', '.join(unknown)}; `run` accepts: {', '.join(accepted)}")
    for key, value in options.items():
        setattr(args, key, str(value) if key == "results_dir" and value is not None else value)
    if args.results_dir is None:  # the CLI's default, made explicit so the store read back is the one written
        from transferbench.config import load_suite

        overrides = getattr(args, "overrides", None) or ()  # --set may rename the suite
        args.results_dir = str(Path("results") / load_suite(path, overrides).name)
    cli._quiet_libraries(getattr(args, "verbose", 0) - getattr(args, "quiet", 0))  # as main() does: -v / -q
    code = cli._run(args)
    if code >= 128:  # stopped by Ctrl-C / SIGTERM: finished runs are in the store, the message was printed
        raise KeyboardInterrupt(f"transferbench run stopped by signal {code - 128}; finished runs are in "
                                f"{Path(args.results_dir) / 'runs.jsonl'}")
    return load(args.results_dir)


def load(*results_dirs: str | Path) -> "Results":
    """The runs of one or several stores (folders holding runs.jsonl, or the files), each run_id once: the same
    reader and de-duplication as `transferbench report`. Read-only."""
    if not results_dirs:
        raise UserError("load() needs at least one results folder (one that `transferbench run` wrote)")
    paths = [Path(p) for p in results_dirs]
    return Results(load_records(paths), paths)


class Results:
    """The runs of one or several stores. `records` are the result records as stored (each run_id once)."""

    def __init__(self, records: list[dict], sources=()):
        self.records = records
        self.sources = [Path(s) for s in sources]

    def __len__(self) -> int:
        return len(self.records)

    def __repr__(self) -> str:
        ok = sum(r.get("status") == "ok" for r in self.records)
        suites = sorted({str(r.get("suite")) for r in self.records})
        return (f"Results({len(self.records)} runs, {ok} ok, suites {', '.join(suites) or '-'}, "
                f"from {', '.join(map(str, self.sources)) or '-'})")

    def to_pandas(self, nested: bool = False) -> "pandas.DataFrame":
        """One row per run; columns: the record's flat fields (run_id, suite, task, dataset, model, mode, seed,
        train_samples, metric, train_seconds, cost_usd, status ...), in the record's order. nested=True adds the
        list and dict fields (curve, loss_curve, metrics, config, env ...) as object columns."""
        import pandas as pd

        columns: dict[str, None] = {}
        for r in self.records:
            for key, value in r.items():
                if not key.startswith("_") and (nested or not isinstance(value, (dict, list))):
                    columns.setdefault(key)
        # a field that is a list or dict in any record is nested, even where another record holds None there
        if not nested:
            columns = {k: None for k in columns if not any(isinstance(r.get(k), (dict, list)) for r in self.records)}
        return pd.DataFrame([{k: r.get(k) for k in columns} for r in self.records], columns=list(columns))

    @functools.cached_property
    def leaderboard(self) -> Leaderboard:
        """leaderboard.build on these runs: what `transferbench report` tabulates (raises UserError when a cell's
        runs differ in config, as the report does)."""
        return build(self.records, default_title(self.records, self.sources or ["results"]), sources=self.sources)

    def cells(self) -> "pandas.DataFrame":
        """One row per leaderboard cell (task, dataset, model, train_samples, mode; its runs differ by seed): the
        numbers of the Markdown table (metric_mean, metric_std, n, delta_vs_scratch with delta_ci_low/high,
        time_to_target_s, train_seconds, samples_per_second, device_hours, cost_usd, cost_per_point ...)."""
        import pandas as pd

        rows = []
        for cell in self.leaderboard.cells:
            row = dict(cell)
            low, high = row.pop("delta_ci") or (None, None)
            row.update(delta_ci_low=low, delta_ci_high=high)
            rows.append(row)
        return pd.DataFrame(rows)

    def plan(self, target: Optional[float] = None, budgets=None, max_cost: Optional[float] = None,
             max_factor: float = 4.0) -> "Plan":
        """`transferbench plan` on these runs (planner.plan): fitted curves, predictions with intervals at
        `budgets` (default: the measured ones, 2× and 4× the largest), predicted crossovers, the cheapest mode to
        reach `target`, the best metric per mode under `max_cost`; refuses beyond max_factor × the largest
        budget measured."""
        from .report.planner import plan

        names = sorted({str(r.get("suite")) for r in self.records}) or [s.name for s in self.sources[:1]]
        return Plan(plan(self.records, target=target, budgets=budgets, max_cost=max_cost, max_factor=max_factor),
                    f"Plan: {', '.join(names)}")


class Plan:
    """planner.plan's result: `data` (what plan.json holds), `predictions()` as a DataFrame, `markdown()` (what
    plan.md holds)."""

    def __init__(self, data: dict, title: str = "Plan"):
        self.data, self.title = data, title

    def predictions(self) -> "pandas.DataFrame":
        """One row per fitted curve and budget: n, predicted mean with its interval (lo, hi), predicted cost and
        device-hours per run, the measured mean where that budget was run, and the extrapolation factor."""
        import pandas as pd

        keys = ("task", "dataset", "model", "mode", "metric_name", "status")
        return pd.DataFrame([{**{k: c[k] for k in keys}, **p} for c in self.data["curves"] for p in c["predictions"]])

    def markdown(self) -> str:
        from .report.planner_report import to_markdown

        return to_markdown(self.data, self.title)

    def _repr_markdown_(self) -> str:  # Jupyter renders the plan as plan.md reads
        return self.markdown()
