"""Run plans: a suite resolved once into frozen, fully concrete runs.

`plan_runs(suite)` expands the matrix (models x budgets x seeds x modes, budgets smallest first, modes innermost so
one comparison finishes together) and resolves, once per run, everything that needs the registries: the mode, the
learning rate (a number, or a search with its grid and rule), the loop that trains it, the pretrain stage behind
`pretrain:NAME`, and the policy (price, retries, outputs). Executors, preflight, the dry run and the loops read plans;
nothing downstream re-interprets a suite value.
"""
from __future__ import annotations

import dataclasses
import importlib
import json
from typing import Any, Optional, Sequence, Union

from pydantic import BaseModel

from transferbench import models, peft_modes
from transferbench.config import RunSpec, Stage, Suite
from transferbench.errors import UserError, did_you_mean
from transferbench.hyper import Hyper, LrSearch, is_searched
from transferbench.modes import MODES, get_mode
from transferbench.tasks import get_task

from ..train.loops import loop_for


@dataclasses.dataclass(frozen=True)
class LrSearchPlan:
    """A learning rate chosen per run by runners/train/lr_search.py: the candidates, whether the grid was the
    mode's (`auto`: it extends past a winning end) or the suite's (`grid`: searched as given), and the rule."""
    grid: tuple[float, ...]
    kind: str
    rule: LrSearch
    default: Optional[float] = None  # the mode's default rate: a tie goes to it
    # whose search a run uses (lr_search.per): the seed it trains with and that run's run_id (its own under per: run)
    seed: Optional[int] = None
    by: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Policy:
    """How a run is handled, not what it measures (outside its run_id)."""
    price_per_device_hour: Optional[float] = None  # None: the dated price table's entry for the device
    oom_retries: int = 1


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One run, resolved: identity (spec, run_id), its stage, the learning rate, the loop, the policy."""
    spec: RunSpec
    lr: Union[float, LrSearchPlan]
    loop: str
    policy: Policy
    stage: Optional["RunPlan"] = None

    @property
    def run_id(self) -> str:
        return self.spec.run_id

    @property
    def search(self) -> Optional[LrSearchPlan]:
        return self.lr if isinstance(self.lr, LrSearchPlan) else None

    def describe(self, num_processes: int = 1) -> str:
        """One line for logs and the dry run: what the run is, and what it trains with: the learning rate (the
        number, or the search and its grid), the length (epochs or max_steps, with the optimizer steps where the
        budget is a number of examples; a plateau's floor and cap), the time cap, the effective batch."""
        s, h = self.spec, self.spec.hyper
        rates = ",".join(f"{x:g}" for x in self.search.grid) if self.search else ""
        lr = f"lr={self.lr:g}" if self.search is None else f"lr={self.search.kind}[{rates}]"
        return (f"{s.task}  {s.dataset.source}  {s.model}  {s.mode}  budget={s.budget}  seed={s.seed}  {lr}  "
                f"{self._length(num_processes)}  batch={h.batch_size}" + (f"  max_seconds={h.max_seconds:g}"
                                                                          if h.max_seconds else ""))

    def _length(self, num_processes: int) -> str:
        h = self.spec.hyper
        if h.schedule == "plateau":
            p = h.plateau
            return f"plateau({p.min_steps}-{p.max_steps} steps, eval every {p.eval_steps}, patience {p.patience})"
        length = f"max_steps={h.max_steps}" if h.max_steps else f"epochs={h.epochs:g}"
        if self.loop != "hf" or h.max_steps or self.spec.train_samples is None:
            return length
        from ..train.steps import planned_steps

        try:
            return f"{length} ({planned_steps(h, self.spec.train_samples, num_processes)} steps)"
        except UserError:  # a batch that does not split over the processes: preflight says so
            return length


def prepare(imports: Sequence[str], trust_remote_code: Sequence[str]) -> None:
    """What a suite asks of a process before its runs are planned or trained: its task modules imported (their
    @register_task runs) and its trust list for model code. The driver and every Ray worker call this."""
    for module in imports:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise UserError(f"imports: cannot import '{module}' ({err}); is it on PYTHONPATH?") from None
    models.trust_remote_code(trust_remote_code)


def plan_runs(suite: Suite, shard: Optional[str] = None,
              price_per_device_hour: Optional[float] = None) -> list[RunPlan]:
    """The suite's runs as plans (or shard I/N of them). `price_per_device_hour` overrides every run's price."""
    prepare(suite.imports, suite.trust_remote_code)
    plans, seen = [], set()
    for i, bench in enumerate(suite.benchmarks):
        where = f"benchmarks[{i}]"
        unknown = [m for m, p in bench.modes.items() if m not in MODES and (p is None or p.peft is None)]
        if unknown:
            raise UserError(f"{where}.modes: unknown mode '{unknown[0]}'{did_you_mean(unknown[0], MODES)}")
        base, shared, task_args = _layers(suite, bench)
        _no_shared_peft(suite, bench, where)
        patches = {m: _peft_checked(_set(p), m, f"{where}.modes.{m}") for m, p in bench.modes.items()}
        stages = {model: _stage(suite, model, where, price_per_device_hour) for model in bench.models
                  if model.startswith("pretrain:")}
        budgets = ([("train_samples", b) for b in sorted(set(bench.train_samples))] if bench.train_samples else
                   [("train_fraction", b) for b in sorted(set(bench.train_fraction))] if bench.train_fraction else
                   [("train_fraction", None)])  # None: all of the training split
        for model in bench.models:
            stage = stages.get(model)
            for kind, budget in budgets:
                for seed in shared.get("seeds") or [0]:
                    for mode, patch in patches.items():
                        spec = RunSpec(suite=suite.name, task=bench.task, dataset=bench.dataset, model=model,
                                       mode=mode, seed=seed, **{kind: budget}, hyper=Hyper(**{**base, **patch}),
                                       target=shared.get("target"), task_args=task_args,
                                       stage=stage and stage.spec, suite_source=suite.source(), metric=bench.metric,
                                       **_policy(shared))
                        given = {**base, **patch}.keys()
                        plans.append(_searched_by(
                            _resolved(spec, f"{where}.modes.{mode}", stage, price_per_device_hour,
                                      fixed_length="epochs" in given or "max_steps" in given),
                            (shared.get("seeds") or [0])[0]))
                        _once(plans[-1], seen, where)
    return _shard(plans, shard) if shard else plans


def _once(plan: RunPlan, seen: set[str], where: str) -> None:
    """A run listed twice (a repeated seed or model, two names of one checkpoint) would be trained once and then
    reported as recorded meanwhile by another invocation: refused, naming it."""
    if plan.run_id in seen:
        s = plan.spec
        raise UserError(f"{where}: the run {s.model} {s.mode} budget={s.budget} seed={s.seed} is listed twice "
                        f"(a repeated seed, model or budget); list each once")
    seen.add(plan.run_id)


def _resolved(spec: RunSpec, where: str, stage: Optional[RunPlan], price: Optional[float],
              searchable: bool = True, fixed_length: bool = True) -> RunPlan:
    """The one place a suite's `lr` and `schedule` are interpreted. lr unset means searched ("auto") where the run's
    loop searches, else the mode's default; "default" is the mode's default (the number, so the run_id is that of
    the same rate given); "auto" searches the mode's grid, a list searches that grid. schedule unset means
    "plateau" where the loop trains to a plateau and the suite gives the run no length (epochs, max_steps), else
    "fixed"."""
    loop = loop_for(get_task(spec.task), spec.model_source)
    schedule = spec.hyper.schedule or ("plateau" if "plateau" in loop.schedules and not fixed_length else "fixed")
    mode = get_mode(spec.mode, spec.hyper)
    searchable = searchable and loop.searches_lr
    lr = spec.hyper.lr
    if lr is None:
        lr = "auto" if searchable else mode.default_lr
    elif lr == "default":
        lr = mode.default_lr
    elif is_searched(lr) and spec.stage_name:
        raise UserError(f"{where}.lr: a pretrain stage trains once at one rate; give it as a number")
    elif is_searched(lr) and not searchable:
        raise UserError(f"{where}.lr: this task trains with its own loop, which has no learning-rate search; give a "
                        f"number (unset: the mode's default {mode.default_lr:g})")
    spec = spec.model_copy(update={"hyper": spec.hyper.model_copy(update={"lr": lr, "schedule": schedule})})
    if lr == "auto":
        lr = LrSearchPlan(mode.auto_grid, "auto", spec.hyper.lr_search, mode.default_lr)
    elif isinstance(lr, tuple):
        lr = LrSearchPlan(lr, "grid", spec.hyper.lr_search, mode.default_lr)
    policy = Policy(price if price is not None else spec.price_per_device_hour, spec.oom_retries)
    return RunPlan(spec, lr, loop.name, policy, stage)


def _searched_by(plan: RunPlan, first_seed: int) -> RunPlan:
    """A searched run with whose search it uses: under `lr_search.per: cell` the cell's first seed's run searches and
    the others reuse its choice; under `per: run` every run searches."""
    if plan.search is None:
        return plan
    seed = first_seed if plan.search.rule.per == "cell" else plan.spec.seed
    by = plan.spec.model_copy(update={"seed": seed}).run_id
    return dataclasses.replace(plan, lr=dataclasses.replace(plan.search, seed=seed, by=by))


def _stage(suite: Suite, model: str, where: str, price: Optional[float]) -> RunPlan:
    name = model.split(":", 1)[1]
    if name not in suite.pretrain:
        hint = did_you_mean(name, suite.pretrain) if suite.pretrain else " (the suite has no pretrain section)"
        raise UserError(f"{where}.models: no pretrain stage '{name}'{hint}")
    stage: Stage = suite.pretrain[name]
    here = f"pretrain.{name}"
    if stage.mode not in MODES:
        raise UserError(f"{here}.mode: unknown mode '{stage.mode}'{did_you_mean(stage.mode, MODES)}")
    if isinstance(stage.model, str) and stage.model.startswith("pretrain:"):
        raise UserError(f"{here}.model: a stage cannot start from another stage")
    base, shared, task_args = _layers(suite, stage)
    _no_shared_peft(suite, None, here)
    base = _peft_checked(base, stage.mode, here)
    ref = stage.model if isinstance(stage.model, str) else "config:" + json.dumps(stage.model, sort_keys=True)
    spec = RunSpec(suite=suite.name, task=stage.task, dataset=stage.dataset, model=ref, mode=stage.mode,
                   seed=stage.seed, train_samples=stage.train_samples, train_fraction=stage.train_fraction,
                   hyper=Hyper(**base), task_args=task_args, stage_name=name, **_policy(shared))
    return _resolved(spec, here, None, price, searchable=False)  # a stage trains once, at a given rate


def _set(model: Optional[BaseModel]) -> dict[str, Any]:
    return {} if model is None else model.model_dump(exclude_unset=True)


def _layers(suite: Suite, item: BaseModel) -> tuple[dict, dict, dict]:
    """(hyper-parameters, other settings, task_args) of `defaults` overridden by `item`."""
    layers = [_set(suite.defaults), _set(item)]
    base = {k: v for layer in layers for k, v in layer.items() if k in Hyper.model_fields}
    shared = {k: v for layer in layers for k, v in layer.items() if k not in Hyper.model_fields}
    return base, shared, {**(suite.defaults.task_args or {}), **(item.task_args or {})}


def _no_shared_peft(suite: Suite, bench: Optional[BaseModel], where: str) -> None:
    if suite.defaults.peft is not None or (bench is not None and bench.peft is not None):
        raise UserError(f"{where}: peft belongs to a mode, e.g. modes: {{dora: {{peft: {{method: lora, use_dora: "
                        f"true}}}}}}, not to {'the defaults' if suite.defaults.peft is not None else 'a benchmark'}")


def _peft_checked(patch: dict, mode: str, where: str) -> dict:
    """`patch` with its `peft:` mapping checked by peft's config class (transferbench/peft_modes.py). A mode the
    registry does not know becomes a peft-family mode by carrying one; `lora` may carry one too."""
    if patch.get("peft") is None:
        return patch
    if mode in MODES and mode != "lora":
        raise UserError(f"{where}.peft: '{mode}' is a built-in mode without adapters; name a new mode for a peft "
                        f"method, e.g. modes: {{dora: {{peft: {{method: lora, use_dora: true}}}}}}")
    return {**patch, "peft": peft_modes.validate(patch["peft"], f"{where}.peft")}


def _policy(shared: dict) -> dict:
    """The run settings that are not hyper-parameters and not part of its identity."""
    return {k: shared[k] for k in ("price_per_device_hour", "oom_retries") if shared.get(k) is not None}


def _shard(plans: list[RunPlan], spec: str) -> list[RunPlan]:
    """`I/N` (1-based): every N-th run starting at I-1; the N shards partition the suite."""
    try:
        i, n = (int(x) for x in spec.split("/"))
        assert 1 <= i <= n
    except (ValueError, AssertionError):
        raise UserError(f"--shard must look like I/N with 1 <= I <= N (got {spec!r})") from None
    return plans[i - 1 :: n]
