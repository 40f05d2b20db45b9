"""The Python API, the core the CLI is a thin layer over: `run` (and `launch`, `dry_run`, `stages`) a suite,
`load` a store as `Results` (pandas DataFrames of runs and leaderboard cells), `plan` from stores. Nothing here
computes a number of its own: `run` plans the suite and drives it (runners/orchestrate), then writes the report
(report.outputs.after_run); `cells()` are leaderboard.build's cells, `plan()` is planner.plan."""
from __future__ import annotations

import functools
import inspect
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from transferbench.errors import UserError
from transferbench.folders import check_output_folder, not_written

from .report.leaderboard import Leaderboard, build, default_title
from .report.merge import load as load_records
from .suites import resolve_suite
from .verbosity import set_verbosity

if TYPE_CHECKING:
    import pandas

    from transferbench.config import Suite

    from .orchestrate.plan import RunPlan


def _suite(suite: str | Path, overrides: Sequence[str]) -> tuple[Path, Suite]:
    from transferbench.config import load_suite  # pydantic's models (~0.2 s): not for `report`

    path = resolve_suite(suite)
    spec = load_suite(path, overrides)  # before the heavy imports: a typo is reported at once
    if overrides:
        from .orchestrate.unread import check_read

        check_read(path, list(overrides), spec)
    return path, spec


def _results_dir(results_dir: Optional[str | Path], suite: Suite) -> Path:
    """The store's folder (default results/<suite name>), refused in one line when it cannot be one."""
    path = Path(results_dir) if results_dir is not None else Path("results") / suite.name
    return check_output_folder("--results-dir", path)


def _executor(executor: Optional[str], jobs, address, gpus_per_run, cpus_per_run):
    """RayOptions when the run asks for Ray (executor "ray", jobs or address), checked at once; else None."""
    if executor not in (None, "local", "ray"):
        raise UserError(f"--executor must be local or ray (got {executor!r})")
    if executor == "local" and (jobs is not None or address is not None):
        raise UserError("--jobs and --address schedule runs on Ray; drop them or use --executor ray")
    if executor != "ray" and jobs is None and address is None:
        if gpus_per_run is not None:
            raise UserError("--gpus-per-run applies to the ray executor; add --jobs N or --executor ray")
        return None
    from .orchestrate.ray_executor import RayOptions, check_early

    options = RayOptions(address=address, jobs=jobs, gpus_per_run=gpus_per_run, cpus_per_run=cpus_per_run)
    check_early(options)
    return options


def launch(suite: str | Path, *, results_dir: Optional[str | Path] = None, shard: Optional[str] = None,
           price_per_device_hour: Optional[float] = None, rebuild_stages: bool = False,
           overrides: Sequence[str] = (), executor: Optional[str] = None, jobs: Optional[int] = None,
           address: Optional[str] = None, gpus_per_run: Optional[float] = None, cpus_per_run: float = 1.0,
           verbosity: Optional[int] = None) -> tuple[Path, list]:
    """What `run` does, returning (the results folder, this invocation's records); a Ctrl-C/SIGTERM raises
    runners.signals.Interrupted once the finished runs are recorded."""
    if verbosity is not None:
        set_verbosity(verbosity)
    _, spec = _suite(suite, overrides)
    price = price_per_device_hour
    if price is not None and not (math.isfinite(price) and price >= 0):
        raise UserError(f"--price-per-device-hour must be >= 0 and finite (got {price})")
    from transferbench.energy import grid_intensity

    grid_intensity()  # a bad TRANSFERBENCH_GRID_GCO2_PER_KWH is one line now, not a failed row per run
    folder = _results_dir(results_dir, spec)
    ray = _executor(executor, jobs, address, gpus_per_run, cpus_per_run)
    from .orchestrate.execute import process_state
    from .orchestrate.suite import run_suite

    chosen = None
    if ray is not None:
        from .orchestrate.ray_executor import RayExecutor

        chosen = RayExecutor(ray, folder, rebuild_stages, spec.imports, spec.trust_remote_code)
    from .signals import Interrupted

    try:
        results = run_suite(spec, folder, shard, rebuild_stages=rebuild_stages, price_per_device_hour=price,
                            executor=chosen)
    except Interrupted as stop:  # what the caller tells the user: where the finished runs are, and who says it
        stop.store, stop.main_process = folder / "runs.jsonl", process_state().is_main_process
        raise
    if process_state().is_main_process:  # the same loader and writers as `transferbench report` on this store
        from .report.outputs import after_run

        print("\n" + after_run(folder, title=f"Leaderboard: {spec.name}"))
    return folder, results


def run(suite: str | Path, **options: Any) -> "Results":
    """Run a suite (a shipped suite's name such as "quickstart", or a path to a YAML) as `transferbench run` does
    and return its results store. Options, as keywords: results_dir, shard ("I/N"), price_per_device_hour,
    rebuild_stages, overrides (the --set items), executor ("local" | "ray"), jobs, address, gpus_per_run,
    cpus_per_run, verbosity (-1 quiet ... 2 debug). Bad input raises transferbench.errors.UserError (the CLI's
    one-line message); runs that fail are rows with status "failed", as in the store."""
    accepted = [name for name, p in inspect.signature(launch).parameters.items() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"run() got unexpected option(s) {', '.join(unknown)}; `run` accepts: {', '.join(accepted)}")
    folder, _ = launch(suite, **options)
    return load(folder)


def dry_run(suite: str | Path, *, results_dir: Optional[str | Path] = None, shard: Optional[str] = None,
            rebuild_stages: bool = False, overrides: Sequence[str] = ()) -> list["RunPlan"]:
    """The suite's runs as plans after every check `run` makes before training (preflight, writable outputs);
    nothing is trained or written, and no torch is imported."""
    from transferbench.results import Store

    from .orchestrate.plan import plan_runs
    from .orchestrate.preflight import before_training

    _, spec = _suite(suite, overrides)
    folder = _results_dir(results_dir, spec)
    plans = plan_runs(spec, shard)
    done = Store(folder).completed(strict=True)
    pending = [p for p in plans if p.run_id not in done]
    before_training(folder, pending, rebuild_stages, int(os.environ.get("WORLD_SIZE", "1")), dry_run=True)
    return plans


def stages(suite: str | Path, *, rebuild: bool = False, ship: bool = False,
           overrides: Sequence[str] = ()) -> dict[str, Path]:
    """Train (or find) the suite's pretrain stages: {name: checkpoint folder}; `ship` copies each into the package
    (transferbench/stages/), where the suite then finds it without training."""
    import shutil

    from .orchestrate.plan import plan_runs
    from .orchestrate.preflight import check_stages
    from .orchestrate.stages import SHIPPED_STAGES, ensure_stage, stage_dir

    _, spec = _suite(suite, overrides)
    found = {p.stage.spec.stage_name: p.stage for p in plan_runs(spec) if p.stage}
    if not found:
        raise UserError(f"{suite} declares no pretrain stages")
    check_stages(list(found.values()), rebuild)  # what `run` checks before training a stage, checked here too
    out = {}
    for name, stage in found.items():
        path = Path(ensure_stage(stage, rebuild=rebuild))
        if ship and path.parent != SHIPPED_STAGES:
            shipped = SHIPPED_STAGES / stage_dir(stage.spec).name  # NAME-ID, not the cache's version folder
            try:
                for old in SHIPPED_STAGES.glob(f"{name}-*"):
                    shutil.rmtree(old)
                shutil.copytree(path, shipped)
            except OSError as err:  # an installed, read-only package; a full disk
                raise not_written(err, f"stage {name} into the package", "") from None
            path = shipped
        out[name] = path
    return out


def plan(*results_dirs: str | Path, target: Optional[float] = None, budgets=None, max_cost: Optional[float] = None,
         max_factor: float = 4.0) -> "Plan":
    """`transferbench plan` on one or several stores: load(...).plan(...)."""
    return load(*results_dirs).plan(target=target, budgets=budgets, max_cost=max_cost, max_factor=max_factor)


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
        time_to_target_s, train_seconds, samples_per_second, device_hours, cost_usd, cost_per_point, and for
        transfer cells the data multiplier: scratch_equivalent, data_multiplier with data_multiplier_low/high and
        data_multiplier_note ...)."""
        import pandas as pd

        rows = []
        for cell in self.leaderboard.cells:
            row = dict(cell)
            low, high = row.pop("delta_ci") or (None, None)
            m = row.pop("data_multiplier", None) or {}
            row.update(delta_ci_low=low, delta_ci_high=high, scratch_equivalent=m.get("scratch_budget"),
                       data_multiplier=m.get("multiplier"), data_multiplier_low=m.get("multiplier_lo"),
                       data_multiplier_high=m.get("multiplier_hi"), data_multiplier_note=m.get("note"))
            rows.append(row)
        return pd.DataFrame(rows)

    def plan(self, target: Optional[float] = None, budgets=None, max_cost: Optional[float] = None,
             max_factor: float = 4.0) -> "Plan":
        """`transferbench plan` on these runs (planner.plan): fitted curves, predictions with intervals at
        `budgets` (default: the measured ones, 2× and 4× the largest), predicted crossovers, the cheapest mode to
        reach `target`, the best metric per mode under `max_cost`, measured and predicted crossovers, data
        multipliers and the planner's checks of itself; refuses beyond max_factor × the largest budget measured."""
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

    def multipliers(self) -> "pandas.DataFrame":
        """One row per transfer cell: the scratch budget reaching its measured mean (scratch_budget, lo, hi) and the
        data multiplier (multiplier, multiplier_lo, multiplier_hi), with its note."""
        import pandas as pd

        return pd.DataFrame(self.data["multipliers"])

    def markdown(self) -> str:
        from .report.planner_report import to_markdown

        return to_markdown(self.data, self.title)

    def _repr_markdown_(self) -> str:  # Jupyter renders the plan as plan.md reads
        return self.markdown()
