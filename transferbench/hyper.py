"""The hyper-parameters a run's training reads (`Hyper`), their defaults, and the layer of overrides a suite
level may set (`HyperPatch`). Every field the loop reads lives here, so this is the one place defaults are set."""
from __future__ import annotations

import importlib.util
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, create_model,
                      model_serializer, model_validator)

from pydantic_core import PydanticCustomError

from .errors import UserError, did_you_mean

Positive = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]

def _rate(value: Any) -> float:
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = None
    if isinstance(value, bool) or rate is None or not 0 < rate < float("inf"):
        raise PydanticCustomError("learning_rate", "a learning rate is a finite number above 0, 'auto' (searched), "
                                  "'default' (the mode's) or a list of rates to search")
    return rate


def _lr(value: Any):
    """A number, "auto", "default", None, or a grid (two or more rates, kept sorted)."""
    if value is None or value in ("auto", "default"):
        return value
    if isinstance(value, (list, tuple)):
        grid = tuple(sorted({_rate(v) for v in value}))
        if len(grid) < 2:
            raise PydanticCustomError("learning_rate", "a learning-rate grid needs at least two different rates (one "
                                      "rate: give it as a number)")
        return grid
    return _rate(value)


def is_searched(lr: Any) -> bool:
    """Whether a run's `lr` is chosen by a search: "auto" or a grid."""
    return lr == "auto" or isinstance(lr, tuple)


Lr = Annotated[Any, PlainValidator(_lr)]  # float | "auto" | "default" | tuple of floats | None


class LrSearch(BaseModel):
    """How `lr: auto` / `lr: [grid]` picks a run's learning rate (runners/train/lr_search.py). `validation: budget`
    (the default): candidates train on the budget's fit part and are scored on its validation part (Plateau's
    split), so every label used is counted; under `schedule: plateau` each candidate trains to its own plateau.
    `validation: beyond`: scored on `validation_samples` training-pool examples held out beyond the budget (labels
    the budget does not count; the record and the report say so). Candidates of a fixed schedule train `fraction`
    of its optimizer steps (at least `min_steps`, at most all of them). The best validation metric wins; a tie
    goes to the mode's default rate, else to the candidate nearest the grid's centre; an auto grid extends past
    an end only when that end wins outright.

    `per: cell` (the default): one search per cell (a benchmark, model, mode and budget), run with the cell's first
    seed and reused by its other seeds (seeds change the initialisation and the data drawn, not which rate suits the
    mode); `per: run` searches for every seed. `halving` (successive halving, a fixed schedule only): every candidate
    first trains 1/`halving` of the candidate steps (at least `min_rung_steps`), and only the best 1/`halving` of
    them train the candidate steps; 1 trains every candidate the candidate steps."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    fraction: Annotated[float, Field(gt=0, le=1)] = 0.25
    min_steps: PositiveInt = 12
    per: Literal["cell", "run"] = "cell"
    halving: PositiveInt = 3
    min_rung_steps: PositiveInt = 4
    validation: Literal["budget", "beyond"] = "budget"
    validation_samples: PositiveInt = 100  # validation: beyond only


class Plateau(BaseModel):
    """`schedule: plateau` (runners/train/plateau.py): the budget is split, by the run's seed, into a fit part and a
    validation part (`validation` of it, at least `min_validation` examples); the run trains on the fit part,
    scoring the validation part every `eval_steps` optimizer steps, until its metric has not improved by more than
    `min_delta` for `patience` scorings, not before `min_steps` (the floor) and at most `max_steps` (the cap, shared
    by every mode of a comparison unless a mode sets its own); then it trains anew on the whole budget for as many
    epochs as its best scoring (the first to reach the best metric) had."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    patience: PositiveInt = 3
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    min_steps: PositiveInt = 20
    max_steps: PositiveInt = 300
    eval_steps: PositiveInt = 5
    validation: Annotated[float, Field(gt=0, le=0.5)] = 0.2
    min_validation: PositiveInt = 4


class EarlyStopping(BaseModel):
    """Stop when the metric on a validation subset has not improved by more than `min_delta` for `patience`
    evaluations in a row. The validation subset is carved from the training pool with a fixed seed, before
    any budget is drawn, so it is disjoint from every budget's examples; the test split is never used to stop."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    patience: PositiveInt = 2
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    validation_samples: PositiveInt = 100


# accelerate's experiment trackers (accelerate.utils.LoggerType, "all" aside; a test keeps the two equal), and the
# import names accelerate itself checks for each. transferbench names a tracker run by its run_id for those in
# TRACKERS (runners/train/trackers.py); the others would need their own naming and are refused with the reason.
ACCELERATE_TRACKERS = {"tensorboard": ("tensorboard", "tensorboardX"), "trackio": ("trackio",), "wandb": ("wandb",),
                       "mlflow": ("mlflow",), "comet_ml": ("comet_ml",), "aim": ("aim",), "clearml": ("clearml",),
                       "dvclive": ("dvclive",), "swanlab": ("swanlab",)}
TRACKERS = ("tensorboard", "trackio", "wandb", "mlflow")


def _tracker_list(value):
    """`report_to` as Trainer takes it: a name, a list of names, "none" (or null) for none, "all" for every one
    installed."""
    if value is None or value == "none" or value == ["none"]:
        return ()
    if value == "all" or value == ["all"]:
        return tuple(name for name in TRACKERS if _installed(name))
    return (value,) if isinstance(value, str) else value


def _installed(name: str) -> bool:
    return any(importlib.util.find_spec(module) is not None for module in ACCELERATE_TRACKERS[name])


def _check_trackers(names: tuple[str, ...]) -> tuple[str, ...]:
    """Known to accelerate, wired here and installed; checked when the suite is read (before anything trains).
    accelerate itself would drop a tracker whose package is missing with a debug message only."""
    for name in names:
        if name not in ACCELERATE_TRACKERS:
            raise ValueError(f"unknown tracker '{name}'{did_you_mean(name, TRACKERS)}")
        if name not in TRACKERS:
            raise ValueError(f"accelerate supports '{name}', but transferbench does not name its runs yet; use one "
                             f"of {', '.join(TRACKERS)}")
        if not _installed(name):
            raise ValueError(f"tracker '{name}' is not installed: pip install {name}")
    return tuple(dict.fromkeys(names))


Trackers = Annotated[tuple[str, ...], BeforeValidator(_tracker_list), AfterValidator(_check_trackers)]


_FROZEN = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)


class _Optimizer(BaseModel):
    model_config = _FROZEN
    batch_size: PositiveInt = 32  # the effective (global) batch: per-device x processes x grad_accum
    grad_accum: PositiveInt = 1
    # a number; "auto": searched over the mode's grid (modes.Mode.lr_grid); a list: searched over that grid;
    # "default": the mode's default rate; unset: "auto" where the run's loop searches (runners/orchestrate/plan.py)
    lr: Lr = None
    lr_search: LrSearch = LrSearch()  # how a searched lr is chosen; dropped from the dump when lr is a number
    weight_decay: Annotated[float, Field(ge=0)] = 0.01
    # clip the gradients' global L2 norm to this before each optimizer step (HF Trainer's default 1.0); 0/None: off
    max_grad_norm: Optional[Annotated[float, Field(ge=0)]] = 1.0


class _Schedule(BaseModel):
    model_config = _FROZEN
    epochs: Positive = 3  # may be fractional
    max_steps: Optional[PositiveInt] = None  # optimizer steps; when set it replaces epochs (as in HF Trainer)
    max_seconds: Optional[Positive] = None  # wall-time cap on training, evaluations included; stops earlier
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] = 0.1
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    early_stopping: Optional[EarlyStopping] = None  # on the HF loop; evaluations every `eval_every` epochs
    # "fixed": epochs / max_steps as given; "plateau": to the validation plateau (Plateau). Unset: plateau where the
    # run's loop has it and the suite gives neither epochs nor max_steps, else fixed (runners/orchestrate/plan.py)
    schedule: Optional[Literal["fixed", "plateau"]] = None
    plateau: Plateau = Plateau()  # dropped from the dump unless the schedule is plateau


class _Adapter(BaseModel):
    model_config = _FROZEN
    lora_r: PositiveInt = 8
    lora_alpha: Optional[PositiveInt] = None  # None: 2 x lora_r
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    # None: the task's default for the model_type; a list matches module-name suffixes, a string is a regex
    lora_targets: Optional[Union[list[str], str]] = None
    # A peft-family mode's method and its peft config fields ({method: lora, use_dora: true, r: 8}), validated by
    # peft's own config class when the suite is planned (transferbench/peft_modes.py); set on a mode only
    peft: Optional[dict[str, Any]] = None
    partial_blocks: PositiveInt = 2  # mode partial: how many of the model's last blocks train (with the head)


class _Speed(BaseModel):
    """Speed options of the HF loop: the optimisation is the same; numerics may differ in the last bits."""
    model_config = _FROZEN
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    compile: bool = False  # torch.compile (accelerate's dynamo backend "inductor")
    channels_last: bool = False  # NHWC memory format for the model's 4-D weights and inputs (CNNs)
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~1/3 more compute
    # A head-only mode (linear-probe) trains on the frozen backbone's features, computed once per example and
    # shared by the runs of a benchmark (runners/train/features.py); same subset, schedule and head init
    cached_features: bool = False


class _Evaluation(BaseModel):
    model_config = _FROZEN
    eval_every: Positive = 1.0  # in epochs (0.5 = twice per epoch); the end of training always evaluates
    # Score on this many examples of the eval split (a fixed subset, the same for every run and seed) instead of
    # all of it: cheaper, noisier evaluations (None = the whole split)
    eval_samples: Optional[PositiveInt] = None


class CheckpointEvery(BaseModel):
    """`checkpoint_every: {steps: N}` / `{minutes: M}` (both: whichever comes first): the HF loop saves accelerate's
    state (model, optimizer, scheduler, RNG) and its own counters in the run's folder, so a run killed mid-way
    resumes there on the next invocation (runners/train/checkpoints.py). Off by default: a short run loses little."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)
    steps: Optional[PositiveInt] = None  # optimizer steps
    minutes: Optional[Positive] = None  # wall minutes of training (evaluations included)

    @model_validator(mode="after")
    def _one_at_least(self) -> "CheckpointEvery":
        if self.steps is None and self.minutes is None:
            raise ValueError("give steps: N (optimizer steps) or minutes: M, e.g. checkpoint_every: {steps: 500}")
        return self


class _Output(BaseModel):
    """What a run writes besides its record, not what it measures: never dumped (exclude), so neither run_id nor
    the recorded config change with them, and turning a tracker on does not retrain a finished suite."""
    model_config = _FROZEN
    # experiment trackers through accelerate's `log_with` (runners/train/trackers.py), one tracker run per run
    report_to: Trackers = Field((), exclude=True)
    # "final": the trained weights, saved the model's own way under <results>/models/<run_id>
    save_models: Literal["none", "final"] = Field("none", exclude=True)
    # mid-run checkpoints, so a killed run resumes where it was (CheckpointEvery); a run's result does not depend on it
    checkpoint_every: Optional[CheckpointEvery] = Field(None, exclude=True)


class Hyper(_Output, _Evaluation, _Speed, _Adapter, _Schedule, _Optimizer):  # fields dumped in reverse: optimizer first
    """Everything a training loop reads, grouped by concern; flat in a suite, a record and a run_id. Defaults here
    are the suite's defaults."""

    def per_device_batch(self, num_processes: int) -> int:
        """batch_size is the effective batch: per-device x processes x grad_accum, so a run means the same
        optimisation on 1 GPU or 8. The one place that split is computed (and refused when it is not whole)."""
        per_device, rest = divmod(self.batch_size, num_processes * self.grad_accum)
        if rest or not per_device:
            raise UserError(f"batch_size {self.batch_size} is not divisible by processes ({num_processes}) x "
                            f"grad_accum ({self.grad_accum}); choose a multiple of {num_processes * self.grad_accum}")
        return per_device

    @model_serializer(mode="wrap")
    def _omit_defaults_of_later_fields(self, handler):
        """Only the fields of the first schema are always dumped; any other field is left out of the dump (hence of
        run_id and the recorded config) while at its default, so adding a field never changes an existing run's
        identity, and stores and shipped stage checkpoints stay valid."""
        data = handler(self)
        for name in set(data) - FIRST_FIELDS:
            if getattr(self, name) == Hyper.model_fields[name].default:
                del data[name]
        if not self.searched:  # how a search would run does not change a run given its rate
            data.pop("lr_search", None)
        else:  # ... and always changes a searched one (its validation now comes from inside the budget)
            data["lr_search"] = self.lr_search.model_dump()
        if self.schedule == "plateau":  # its rule is part of what a plateau run measures
            data["plateau"] = self.plateau.model_dump()
        else:
            data.pop("plateau", None)
        if self.schedule == "fixed":  # what every run before schedules existed trained: its identity is kept
            data.pop("schedule", None)
        return data

    @property
    def searched(self) -> bool:
        """Whether the learning rate is chosen per run by a search (`lr: auto` or a grid)."""
        return is_searched(self.lr)


FIRST_FIELDS = frozenset({"epochs", "max_steps", "max_seconds", "batch_size", "grad_accum", "lr", "weight_decay",
                          "warmup_ratio", "scheduler", "eval_every", "mixed_precision", "lora_r", "lora_alpha",
                          "lora_dropout", "lora_targets"})


def _optional(model: type[BaseModel], name: str) -> type[BaseModel]:
    """The same fields, all optional and unset by default: one layer of overrides."""
    fields = {
        k: (Optional[Annotated[(f.annotation, *f.metadata)]] if f.metadata else Optional[f.annotation], None)
        for k, f in model.model_fields.items()
    }
    return create_model(name, __config__=ConfigDict(extra="forbid", allow_inf_nan=False), **fields)


HyperPatch = _optional(Hyper, "HyperPatch")
