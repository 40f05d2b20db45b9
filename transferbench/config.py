"""The suite schema: a suite's YAML validated, and the run spec (one run's identity, hashed into its run_id).

A suite YAML has three layers of hyper-parameters: `defaults`, each benchmark, and each mode of a
benchmark (`modes: {lora: {lr: 1e-3}}`); a later layer overrides an earlier one. Every field a run's
training reads lives in `Hyper` (hyper.py), the one place where its defaults are set. The expansion into runs
needs the registries and lives in runners/orchestrate/plan.py.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Annotated, Any, Optional, Sequence, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_serializer, model_validator

from . import metrics, safe_yaml
from .errors import UserError
from .overrides import aliases_renamed, apply_overrides, shadowed
from .schema_errors import SAFE_NAME, one_line
from .hyper import Hyper, HyperPatch, PositiveInt
from .record_schema import MAX_SEED



# a seed every library seeds from (numpy's limit); a negative or huge one would fail each run after others trained
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]

class Target(BaseModel):
    """Time-to-target is recorded for every run with a target; `stop: true` also ends the run at the first
    evaluation that reaches it (MLPerf style: the run's budget becomes "until the target")."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    metric: str
    value: float
    stop: bool = False


class Metric(BaseModel):
    """A benchmark's verdict metric by name (`metric: matthews_correlation`, `metric: sklearn:f1_macro`, or the
    mapping): an `evaluate` module (shipped name, local path, Hub id) or a scikit-learn scorer
    (transferbench/metrics.py). Its direction is stated unless known (shipped modules; scorers are higher-is-better
    by scikit-learn's convention)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    name: str = Field(min_length=1)
    higher_is_better: bool
    key: Optional[str] = None  # which entry of the module's compute() result, when it returns several
    args: dict[str, Any] = {}  # keyword arguments of the module's compute() (e.g. {average: macro})

    @model_validator(mode="before")
    @classmethod
    def _shorthand_and_direction(cls, data: Any) -> Any:
        if isinstance(data, str):
            data = {"name": data}
        if isinstance(data, dict) and isinstance(data.get("name"), str):
            known = metrics.known_direction(data["name"])
            if data.get("higher_is_better") is None:
                if known is None:
                    raise ValueError(f"say whether higher is better for metric '{data['name']}': "
                                     f"metric: {{name: {data['name']}, higher_is_better: true}} (or false for a loss)")
                data = {**data, "higher_is_better": known}
            elif metrics.is_sklearn(data["name"]) and data["higher_is_better"] is False:
                raise ValueError("scikit-learn scorers are higher-is-better (losses are the neg_* scorers, e.g. "
                                 "sklearn:neg_log_loss): drop higher_is_better")
            if metrics.is_sklearn(data["name"]) and (data.get("args") or data.get("key")):
                raise ValueError("a scikit-learn scorer's arguments come with its name (sklearn:f1_macro, "
                                 "sklearn:f1_weighted, ...): drop args and key")
        return data


class DatasetSpec(BaseModel):
    """Where examples come from: `hub:ID`, a local file/folder, or `builtin:NAME`."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    source: str
    config: Optional[str] = None  # the Hub dataset's configuration name (e.g. sst2 of nyu-mll/glue)
    train_split: str = "train"
    eval_split: Optional[str] = None  # None: the dataset's "test" (else "validation"), else a held-out 20%
    columns: dict[str, str] = {}  # task role -> column name, e.g. {text: sentence, label: topic}


class ModePatch(HyperPatch):
    """A mode's own hyper-parameters (`modes: {lora: {lr: 1e-3, r: 16}}`)."""

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        return aliases_renamed(data)


def _dataset_shorthand(data: Any) -> Any:
    if isinstance(data, dict) and isinstance(data.get("dataset"), str):
        data = {**data, "dataset": {"source": data["dataset"]}}
    return data


class _Shared(HyperPatch):
    seeds: Optional[list[Seed]] = None
    target: Optional[Target] = None
    task_args: Optional[dict[str, Any]] = None
    price_per_device_hour: Optional[Annotated[float, Field(ge=0)]] = None
    # after an out-of-memory error, retry this many times, each at half the per-device batch with twice the
    # gradient accumulation (the effective batch, hence the optimisation, stays the same)
    oom_retries: Optional[Annotated[int, Field(ge=0)]] = None

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        return aliases_renamed(data)


class Defaults(_Shared):
    pass


class Benchmark(_Shared):
    task: str
    dataset: DatasetSpec
    models: list[str] = Field(min_length=1)
    modes: dict[str, Optional[ModePatch]]
    train_samples: Optional[list[PositiveInt]] = None
    train_fraction: Optional[list[Annotated[float, Field(gt=0, le=1)]]] = None
    metric: Optional[Metric] = None  # the verdict metric by name; None: the task's own (accuracy for classification)

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
    seed: Seed = 0
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
    # the --set items a more specific key hides everywhere (warned about when read; they change no run)
    _shadowed: set[str] = PrivateAttr(default_factory=set)

    @property
    def shadowed_overrides(self) -> frozenset[str]:
        """The --set items a more specific key of the suite hides everywhere (warned about; they change no run)."""
        return frozenset(self._shadowed)

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
    metric: Optional[Metric] = None  # the benchmark's named metric (identity: it decides the metric recorded)
    oom_retries: int = 1  # a fault policy, not part of what the run measures
    # the suite file this run came from, its imports and --set overrides (Suite.source): provenance for the
    # published card's "Reproduce", not identity (the same run may come from two files)
    suite_source: Optional[dict[str, Any]] = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler):
        data = handler(self)
        for key in ("suite_source", "metric"):  # unset: left out, not written as null (and the run_ids of runs
            if isinstance(data, dict) and data.get(key, 0) is None:  # from before the field stay what they were)
                del data[key]
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
            del ident["target"]["stop"]  # hashed only when set: a target without it keeps its identity
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def budget(self):
        """The budget as one value: train_samples, else train_fraction, else "all" (the whole training split)."""
        return self.train_samples if self.train_samples is not None else self.train_fraction or "all"

    @property
    def model_source(self) -> str:
        """What the run's model is built from before training: its model, or its stage's starting model (the
        stage's output has that architecture and preprocessing)."""
        return self.stage.model if self.stage else self.model


def parse_suite(data: Any, where: str = "suite", overrides: Sequence[str] = (), warn: bool = True) -> Suite:
    """Validate a suite (a mapping, as YAML gives it) after applying `overrides` (`--set KEY=VALUE`). An error
    at or under a key that --set gave names that --set item rather than the file; an item a more specific key of
    the suite shadows is a warning (`warn`) naming those keys."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: a suite must be a YAML mapping with 'name' and 'benchmarks'")
    data, given = apply_overrides(data, overrides)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as err:
        e = next((x for x in err.errors() if x["type"] == "extra_forbidden"), err.errors()[0])
        at = [str(p) for p in e["loc"] if p != "[key]"]
        item = next((item for path, item in given.items() if at[:len(path)] == list(path)), None)
        raise UserError(one_line(err, f"--set {item}" if item else where, Suite)) from None
    if overrides:
        suite._origin["set"] = list(overrides)
    for item, (warning, everywhere) in shadowed(data, given).items():
        if warn:
            logging.getLogger("transferbench").warning(f"transferbench: warning: {warning}")
        if everywhere:
            suite._shadowed.add(item)
    return suite


def load_suite(path: str | Path, overrides: Sequence[str] = (), warn: bool = True) -> Suite:
    """A suite file, validated (with `--set` overrides applied first), remembering where it came from; `warn`:
    log the overrides the suite shadows."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"suite file not found: {path} (run `transferbench list` to see the shipped suites)")
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"suite file {path} cannot be read ({type(err).__name__}: {err})") from None
    data = safe_yaml.load(text, str(path))  # aliases and nesting bounded: a bomb is one line, not a hang
    suite = parse_suite(data, str(path), overrides, warn)
    suite._origin.update(file=str(path.resolve()), sha256=hashlib.sha256(raw).hexdigest())
    return suite
