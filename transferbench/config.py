"""Suite schema and its expansion into runs.

A suite YAML has three layers of hyper-parameters: `defaults`, each benchmark, and each mode of a
benchmark (`modes: {lora: {lr: 1e-3}}`); a later layer overrides an earlier one. Every field a run's
training reads lives in `Hyper` (hyper.py), the one place where its defaults are set.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Callable, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_serializer, model_validator
from pydantic_core import PydanticCustomError

from . import peft_modes, safe_yaml
from .errors import UserError, did_you_mean
from .hyper import Hyper, HyperPatch, PositiveInt, is_searched

# Names that become folders (the suite's results/<name>, a stage's cache folder): no separators, no "..".
SAFE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class Target(BaseModel):
    """Time-to-target is recorded for every run with a target; `stop: true` also ends the run at the first
    evaluation that reaches it (MLPerf style: the run's budget becomes "until the target")."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    metric: str
    value: float
    stop: bool = False


class DatasetSpec(BaseModel):
    """Where examples come from: `hub:ID`, a local file/folder, or `builtin:NAME`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    source: str
    config: Optional[str] = None  # the Hub dataset's configuration name (e.g. sst2 of nyu-mll/glue)
    train_split: str = "train"
    eval_split: Optional[str] = None  # None: the dataset's "test" (else "validation"), else a held-out 20%
    columns: dict[str, str] = {}  # task role -> column name, e.g. {text: sentence, label: topic}


# The names Hugging Face users type (TrainingArguments, peft's LoraConfig), accepted where they mean exactly what
# the suite key means. They are renamed before validation, so the run spec, its run_id and the record only ever
# hold the suite's own name. (weight_decay, warmup_ratio, max_steps, max_grad_norm, lora_alpha and lora_dropout
# are already spelled the same.)
KEY_ALIASES = {
    "learning_rate": "lr",
    "num_train_epochs": "epochs",
    "gradient_accumulation_steps": "grad_accum",
    "lr_scheduler_type": "scheduler",  # the same names: both go to transformers.get_scheduler
    "r": "lora_r",  # peft LoraConfig(r=...)
    "target_modules": "lora_targets",  # a list matches module-name suffixes, a string is a regex, as in peft
}
# Familiar names whose meaning differs here: the error says what to write instead of guessing a spelling.
KEY_HINTS = {
    "per_device_train_batch_size": "batch_size is the effective batch, per-device x processes x grad_accum, so a "
                                   "run means the same on 1 GPU or 8: set batch_size to per_device_train_batch_size "
                                   "x processes x gradient_accumulation_steps",
    "train_batch_size": "batch_size is the effective batch (per-device x processes x grad_accum)",
    "seed": "seeds takes a list, one run per seed: seeds: [0]",
    "bf16": "mixed_precision: bf16", "fp16": "mixed_precision: fp16",
    "warmup_steps": "warmup_ratio: the warm-up as a fraction of the training steps (e.g. 0.1)",
    "eval_steps": "eval_every: in epochs (0.5 = twice per epoch)",
    "eval_strategy": "eval_every: in epochs (0.5 = twice per epoch)",
    "max_length": "task_args: {max_length: N}", "max_seq_length": "task_args: {max_length: N}",
}


def _aliases_renamed(data: Any) -> Any:
    """`data` with KEY_ALIASES renamed to the suite's keys; the same key given twice (lr and learning_rate in one
    layer) is refused: which one would win is not obvious."""
    if not isinstance(data, dict) or not any(k in KEY_ALIASES for k in data):
        return data
    out = dict(data)
    for alias, key in KEY_ALIASES.items():
        if alias in out:
            if key in out:
                raise PydanticCustomError("alias_twice", "'{alias}' is another name for '{key}': give one of them",
                                          {"alias": alias, "key": key})
            out[key] = out.pop(alias)
    return out


class ModePatch(HyperPatch):
    """A mode's own hyper-parameters (`modes: {lora: {lr: 1e-3, r: 16}}`)."""

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        return _aliases_renamed(data)


def _dataset_shorthand(data: Any) -> Any:
    if isinstance(data, dict) and isinstance(data.get("dataset"), str):
        data = {**data, "dataset": {"source": data["dataset"]}}
    return data


class _Shared(HyperPatch):
    seeds: Optional[list[int]] = None
    target: Optional[Target] = None
    task_args: Optional[dict[str, Any]] = None
    price_per_device_hour: Optional[Annotated[float, Field(ge=0)]] = None
    # after an out-of-memory error, retry this many times, each at half the per-device batch with twice the
    # gradient accumulation (the effective batch, hence the optimisation, stays the same)
    oom_retries: Optional[Annotated[int, Field(ge=0)]] = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        return _aliases_renamed(data)


class Defaults(_Shared):
    pass


class Benchmark(_Shared):
    task: str
    dataset: DatasetSpec
    models: list[str] = Field(min_length=1)
    modes: dict[str, Optional[ModePatch]]
    train_samples: Optional[list[PositiveInt]] = None
    train_fraction: Optional[list[Annotated[float, Field(gt=0, le=1)]]] = None

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if isinstance(data, dict):
            data = dict(_dataset_shorthand(data))
            if isinstance(data.get("models"), str):
                data["models"] = [data["models"]]
            if isinstance(data.get("modes"), list):
                data["modes"] = {m: None for m in data["modes"]}
            for key in ("train_samples", "train_fraction"):
                if isinstance(data.get(key), (int, float)) and not isinstance(data.get(key), bool):
                    data[key] = [data[key]]
        return data

    @model_validator(mode="after")
    def _one_budget_kind(self) -> "Benchmark":
        if self.train_samples and self.train_fraction:
            raise ValueError("give train_samples or train_fraction, not both")
        return self


class Stage(_Shared):
    """A pretrain stage: one run whose saved checkpoint other runs name as `model: pretrain:NAME`."""

    task: str
    dataset: DatasetSpec
    # a model reference (the stage then adapts it: domain-adaptive pretraining), or an architecture config
    # for AutoConfig.for_model, e.g. {model_type: vit, hidden_size: 128, ...} (trained from random init)
    model: Union[str, dict[str, Any]]
    mode: str = "scratch"
    seed: int = 0
    train_samples: Optional[PositiveInt] = None
    train_fraction: Optional[Annotated[float, Field(gt=0, le=1)]] = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return _dataset_shorthand(data)

    @model_validator(mode="after")
    def _architecture_has_type(self) -> "Stage":
        if isinstance(self.model, dict) and "model_type" not in self.model:
            raise ValueError("an architecture config needs a model_type (e.g. vit, resnet, bert)")
        if isinstance(self.model, dict) and self.mode != "scratch":
            raise ValueError("an architecture config has no weights: its stage trains in mode scratch")
        return self


class Suite(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str = Field(pattern=SAFE_NAME)
    description: str = ""
    imports: list[str] = []  # modules to import first: tasks defined outside transferbench register there
    # model references whose own code (a config's auto_map) may run; every other model loads without it
    trust_remote_code: list[str] = []
    defaults: Defaults = Defaults()
    pretrain: dict[Annotated[str, Field(pattern=SAFE_NAME)], Stage] = {}
    benchmarks: list[Benchmark] = Field(min_length=1)
    # where it came from (load_suite): the file, its sha256, the --set overrides; recorded with every run
    _origin: dict[str, Any] = PrivateAttr(default_factory=dict)

    def source(self) -> Optional[dict[str, Any]]:
        """What a reader needs to run this suite again: its file, the modules its `imports:` names, the --set
        overrides given with it. None for a suite built in Python with no imports."""
        out = {**self._origin, **({"imports": list(self.imports)} if self.imports else {})}
        return out or None


class RunSpec(BaseModel):
    """One cell of the matrix: the unit that produces one result row."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    suite: str
    task: str
    dataset: DatasetSpec
    model: str
    mode: str
    seed: int
    train_samples: Optional[int] = None
    train_fraction: Optional[float] = None
    hyper: Hyper
    target: Optional[Target] = None
    task_args: dict[str, Any] = {}
    price_per_device_hour: Optional[float] = None
    stage: Optional["RunSpec"] = None  # the pretrain stage that produces `model` (pretrain:NAME)
    stage_name: Optional[str] = None
    oom_retries: int = 1  # a fault policy, not part of what the run measures
    # the suite file this run came from, its imports and --set overrides (Suite.source): provenance for the
    # published card's "Reproduce", not identity (the same run may come from two files)
    suite_source: Optional[dict[str, Any]] = None

    @model_serializer(mode="wrap")
    def _omit_unset_source(self, handler):
        data = handler(self)
        if isinstance(data, dict) and data.get("suite_source", 0) is None:
            del data["suite_source"]  # records from before it existed and suites built in Python look alike
        return data

    @property
    def run_id(self) -> str:
        """Hash of what determines the result (not the suite's name, not the price, not fault handling, not the
        file it was read from)."""
        ident = self.model_dump(mode="json", exclude={"suite", "price_per_device_hour", "stage_name", "oom_retries",
                                                      "suite_source"})
        if ident["stage"] is not None:
            ident["stage"] = self.stage.run_id
        if ident["target"] is not None and not ident["target"]["stop"]:
            del ident["target"]["stop"]  # added later: hashed only when set, so older stores still resume
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def budget_key(self):
        return self.train_samples if self.train_samples is not None else self.train_fraction


# ---------------------------------------------------------------------------------------------------------
def _format_error(err: ValidationError, where: str) -> str:
    errors = err.errors()
    # a typo makes two errors, an unknown key and a missing one; the unknown key is the one to name
    e = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    loc = ""
    for part in e["loc"]:
        if part == "[key]":  # pydantic's marker for a mapping's key (a stage name)
            continue
        if isinstance(part, int) or not re.fullmatch(r"[\w-]+", part):
            loc += f"[{part!r}]"
        else:
            loc += f".{part}" if loc else part
    if e["type"] == "string_pattern_mismatch" and e["ctx"]["pattern"] == SAFE_NAME:
        return (f"{where}: {loc}: {e['input']!r} is not a plain name (it becomes a folder name: letters, digits "
                f"and _ . - only, starting with a letter or digit)")
    if e["type"] == "extra_forbidden":
        key = e["loc"][-1]
        parent = _model_at(Suite, e["loc"][:-1])
        if key in KEY_HINTS and parent and "lr" in parent.model_fields:
            hint = f" ({KEY_HINTS[key]})"
        elif parent:
            known = set(parent.model_fields) | ({*KEY_ALIASES} if "lr" in parent.model_fields else set())
            hint = did_you_mean(key, known)
        else:
            hint = ""
        return f"{where}: unknown key '{loc}'{hint}"
    if e["type"] == "alias_twice":
        return f"{where}: {loc}: {e['msg']}"
    if e["type"] == "missing":
        return f"{where}: missing required key '{loc}'"
    return f"{where}: {loc}: {e['msg']} (got {e.get('input')!r})"


def _model_at(model, loc) -> Optional[type[BaseModel]]:
    """The pydantic model that sits at `loc` inside `model`, to list its valid keys."""
    parts = [p for p in loc if not isinstance(p, int)]
    while parts:
        field = model.model_fields.get(parts.pop(0))
        if field is None:
            return None
        ann = field.annotation
        if getattr(ann, "__origin__", None) is Union:  # Optional[X]
            ann = next(a for a in ann.__args__ if a is not type(None))
        origin, args = getattr(ann, "__origin__", None), getattr(ann, "__args__", ())
        if origin is dict:  # a mapping of names (stages, modes): the next part is a key
            if parts:
                parts.pop(0)
            ann = args[1]
            if getattr(ann, "__origin__", None) is Union:
                ann = next(a for a in ann.__args__ if a is not type(None))
        elif origin is list:
            ann = args[0]
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def parse_suite(data: Any, where: str = "suite", overrides: Sequence[str] = ()) -> Suite:
    """Validate a suite (a mapping, as YAML gives it) after applying `overrides` (`--set KEY=VALUE`). An error
    at or under a key that --set gave names that --set item rather than the file."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: a suite must be a YAML mapping with 'name' and 'benchmarks'")
    data, given = apply_overrides(data, overrides)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as err:
        e = next((x for x in err.errors() if x["type"] == "extra_forbidden"), err.errors()[0])
        at = [str(p) for p in e["loc"] if p != "[key]"]
        item = next((item for path, item in given.items() if at[:len(path)] == list(path)), None)
        raise UserError(_format_error(err, f"--set {item}" if item else where)) from None
    if overrides:
        suite._origin["set"] = list(overrides)
    return suite


def apply_overrides(data: dict, overrides: Sequence[str]) -> tuple[dict, dict[tuple[str, ...], str]]:
    """`--set a.b.0.c=VALUE` items applied to a copy of the suite's data: dotted keys walk mappings, integers
    index lists (benchmarks.0), a missing mapping key is created; VALUE is YAML (3, 1.0e-3, [0, 1], {r: 16}).
    A key set under a Hugging Face name replaces the suite's own spelling there, and the other way round.
    Returns (the new data, {path: item} of what was set)."""
    import copy

    data, given = copy.deepcopy(data), {}
    for item in overrides:
        key, eq, raw = item.partition("=")
        parts = key.strip().split(".")
        if not eq or not all(p.strip() for p in parts):
            raise UserError(f"--set {item!r}: give KEY=VALUE with a dotted KEY, e.g. --set benchmarks.0.epochs=3")
        value = safe_yaml.load(raw, f"--set {key}")
        parent, node, walked = None, data, []
        for i, part in enumerate(parts):
            if isinstance(node, list) and node and all(isinstance(x, str) for x in node) and part in node:
                node = {name: None for name in node}  # `modes: [lora, ...]`, the shorthand of a mapping
                parent[walked[-1] if isinstance(parent, dict) else int(walked[-1])] = node
            if isinstance(node, list):
                if not re.fullmatch(r"-?\d+", part) or not -len(node) <= int(part) < len(node):
                    raise UserError(f"--set {key}: {'.'.join(walked) or 'the suite'} is a list of {len(node)}; "
                                    f"'{part}' is not an index into it (0 to {len(node) - 1})")
                part = str(int(part) % len(node))
                slot = int(part)
            elif isinstance(node, dict):
                slot = part
                if i == len(parts) - 1:
                    for spelling in [k for k in node if k != part and KEY_ALIASES.get(k, k) == KEY_ALIASES.get(part, part)]:
                        del node[spelling]  # `--set defaults.learning_rate=...` over the file's `lr:`
                elif node.get(part) is None:
                    node[part] = {}  # a layer the file does not have, or a mode listed without a patch
            else:
                raise UserError(f"--set {key}: '{'.'.join(walked)}' is {node!r}, not a mapping or a list to set "
                                f"'{part}' in")
            if i == len(parts) - 1:
                node[slot] = value
            parent, node = node, node[slot]
            walked.append(part)
        given[tuple(KEY_ALIASES.get(p, p) for p in walked)] = f"{key}={raw}"  # as validation names it
    return data, given


def load_suite(path: str | Path, overrides: Sequence[str] = ()) -> Suite:
    """A suite file, validated (with `--set` overrides applied first), remembering where it came from."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"suite file not found: {path} (run `transferbench list` to see the shipped suites)")
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"suite file {path} cannot be read ({type(err).__name__}: {err})") from None
    data = safe_yaml.load(text, str(path))  # aliases and nesting bounded: a bomb is one line, not a hang
    suite = parse_suite(data, str(path), overrides)
    suite._origin.update(file=str(path.resolve()), sha256=hashlib.sha256(raw).hexdigest())
    return suite


def _set(model: Optional[BaseModel]) -> dict[str, Any]:
    return {} if model is None else model.model_dump(exclude_unset=True)


HYPER_KEYS = set(Hyper.model_fields)


def _layers(suite: Suite, item: BaseModel) -> tuple[dict, dict, dict]:
    """(hyper-parameters, other settings, task_args) of `defaults` overridden by `item`."""
    layers = [_set(suite.defaults), _set(item)]
    base = {k: v for layer in layers for k, v in layer.items() if k in HYPER_KEYS}
    shared = {k: v for layer in layers for k, v in layer.items() if k not in HYPER_KEYS}
    return base, shared, {**(suite.defaults.task_args or {}), **(item.task_args or {})}


def _stage_spec(suite: Suite, name: str, mode_lrs: dict[str, float]) -> RunSpec:
    stage = suite.pretrain[name]
    if stage.mode not in mode_lrs:
        raise UserError(f"pretrain.{name}.mode: unknown mode '{stage.mode}'{did_you_mean(stage.mode, mode_lrs)}")
    if isinstance(stage.model, str) and stage.model.startswith("pretrain:"):
        raise UserError(f"pretrain.{name}.model: a stage cannot start from another stage")
    base, shared, task_args = _layers(suite, stage)
    _no_shared_peft(suite, None, f"pretrain.{name}")
    base = _peft_checked(base, stage.mode, mode_lrs, f"pretrain.{name}")
    if base.get("lr") in (None, "default"):  # a stage trains once, at a given rate: not searched when unset
        base["lr"] = mode_lrs[stage.mode]
    elif is_searched(base["lr"]):
        raise UserError(f"pretrain.{name}.lr: a pretrain stage trains once at one rate; give it as a number")
    model = stage.model if isinstance(stage.model, str) else "config:" + json.dumps(stage.model, sort_keys=True)
    return RunSpec(suite=suite.name, task=stage.task, dataset=stage.dataset, model=model, mode=stage.mode,
                   seed=stage.seed, train_samples=stage.train_samples, train_fraction=stage.train_fraction,
                   hyper=Hyper(**base), task_args=task_args, stage_name=name, **_policy(shared))


def _no_shared_peft(suite: Suite, bench: Optional[BaseModel], where: str) -> None:
    if suite.defaults.peft is not None or (bench is not None and bench.peft is not None):
        raise UserError(f"{where}: peft belongs to a mode, e.g. modes: {{dora: {{peft: {{method: lora, use_dora: "
                        f"true}}}}}}, not to {'the defaults' if suite.defaults.peft is not None else 'a benchmark'}")


def _peft_checked(patch: dict, mode: str, mode_lrs: dict[str, float], where: str) -> dict:
    """`patch` with its `peft:` mapping checked by peft's config class (transferbench/peft_modes.py). A mode the
    registry does not know becomes a peft-family mode by carrying one; `lora` may carry one too."""
    if patch.get("peft") is None:
        return patch
    if mode in mode_lrs and mode != "lora":
        raise UserError(f"{where}.peft: '{mode}' is a built-in mode without adapters; name a new mode for a peft "
                        f"method, e.g. modes: {{dora: {{peft: {{method: lora, use_dora: true}}}}}}")
    return {**patch, "peft": peft_modes.validate(patch["peft"], f"{where}.peft")}


def _policy(shared: dict) -> dict:
    """The run settings that are not hyper-parameters and not part of its identity."""
    return {k: shared[k] for k in ("price_per_device_hour", "oom_retries") if shared.get(k) is not None}


def _lr(lr, default: float, searchable: bool, where: str):
    """A run's `lr` as expanded: unset means searched ("auto") where the task's loop searches, else the mode's
    default; "default" is the mode's default (the number, so the run_id is that of the same rate given)."""
    if lr is None:
        return "auto" if searchable else default
    if lr == "default":
        return default
    if not searchable and is_searched(lr):
        raise UserError(f"{where}.lr: this task trains with its own loop, which has no learning-rate search; give "
                        f"a number (unset: the mode's default {default:g})")
    return lr


def expand(suite: Suite, mode_lrs: dict[str, float],
           searchable: Callable[[str], bool] = lambda task: True) -> list[RunSpec]:
    """Suite -> runs: for each benchmark, models x budgets x seeds x modes.

    `mode_lrs` is the registry's default learning rate per mode; its keys are the valid mode names.
    `searchable(task)`: whether that task's training loop can search a learning rate (`lr: auto`).
    Budgets run smallest first, and modes are innermost so one comparison finishes together. A run whose
    model is `pretrain:NAME` carries that stage's spec, so its run_id changes when the stage does.
    """
    runs = []
    for i, bench in enumerate(suite.benchmarks):
        unknown = [m for m, p in bench.modes.items() if m not in mode_lrs and (p is None or p.peft is None)]
        if unknown:
            raise UserError(f"benchmarks[{i}].modes: unknown mode '{unknown[0]}'{did_you_mean(unknown[0], mode_lrs)}")
        base, shared, task_args = _layers(suite, bench)
        _no_shared_peft(suite, bench, f"benchmarks[{i}]")
        patches = {m: _peft_checked(_set(p), m, mode_lrs, f"benchmarks[{i}].modes.{m}") for m, p in bench.modes.items()}
        seeds = shared.get("seeds") or [0]
        lrs = {m: _lr({**base, **p}.get("lr"), mode_lrs.get(m, peft_modes.DEFAULT_LR),  # else a peft-family mode
                      searchable(bench.task), f"benchmarks[{i}].modes.{m}") for m, p in patches.items()}
        stages = {}
        for model in bench.models:
            if model.startswith("pretrain:"):
                name = model.split(":", 1)[1]
                if name not in suite.pretrain:
                    raise UserError(f"benchmarks[{i}].models: no pretrain stage '{name}'"
                                    f"{did_you_mean(name, suite.pretrain) if suite.pretrain else ' (the suite has no pretrain section)'}")
                stages[model] = _stage_spec(suite, name, mode_lrs)
        if bench.train_samples:
            budgets = [("train_samples", b) for b in sorted(set(bench.train_samples))]
        elif bench.train_fraction:
            budgets = [("train_fraction", b) for b in sorted(set(bench.train_fraction))]
        else:
            budgets = [("train_fraction", None)]  # all of the training split
        for model in bench.models:
            for kind, budget in budgets:
                for seed in seeds:
                    for mode, patch in patches.items():
                        hyper = {**base, **patch}
                        hyper["lr"] = lrs[mode]
                        runs.append(RunSpec(
                            suite=suite.name, task=bench.task, dataset=bench.dataset, model=model,
                            mode=mode, seed=seed, **{kind: budget}, hyper=Hyper(**hyper),
                            target=shared.get("target"), task_args=task_args, stage=stages.get(model),
                            suite_source=suite.source(), **_policy(shared),
                        ))
    return runs


def shard(runs: list[RunSpec], spec: str) -> list[RunSpec]:
    """`I/N` (1-based): every N-th run starting at I-1; the N shards partition the suite."""
    try:
        i, n = (int(x) for x in spec.split("/"))
        assert 1 <= i <= n
    except (ValueError, AssertionError):
        raise UserError(f"--shard must look like I/N with 1 <= I <= N (got {spec!r})") from None
    return runs[i - 1 :: n]
