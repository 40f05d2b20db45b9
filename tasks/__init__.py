"""Tasks: what a problem type needs (data, model family, metric, LoRA targets), and their registry.

A task is a class registered by name. Built-in tasks live in this package, one module each; others register
through the `transferbench.tasks` entry-point group (`name = "package.module:TaskClass"`).
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from pydantic import BaseModel, ConfigDict, ValidationError

from transferbench.errors import UserError, check_unique, did_you_mean
from transferbench.lazy import lazy
from transferbench.modes import find_head

if TYPE_CHECKING:
    import torch
else:
    torch = lazy("torch")  # imported when a task trains, not when the registry is listed

TASKS: dict[str, type["Task"]] = {}


def register_task(cls: type["Task"]) -> type["Task"]:
    check_unique("task", cls.name, TASKS, cls)
    TASKS[cls.name] = cls
    return cls


def _discover() -> None:
    """Register the built-in tasks (every module of this package whose name does not start with `_`: helpers are
    named `_...`), then the entry-point tasks."""
    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    for ep in metadata.entry_points(group="transferbench.tasks"):
        if ep.name not in TASKS:
            register_task(ep.load())


def get_task(name: str) -> type["Task"]:
    if name not in TASKS:
        _discover()
    if name not in TASKS:
        raise UserError(f"unknown task '{name}'{did_you_mean(name, TASKS)}")
    return TASKS[name]


def task_for(spec) -> "Task":
    """The task a run uses: its class with the run's task_args and the benchmark's named metric (`metric:`; given
    only when set, so a task class whose __init__ takes task_args alone still works without one)."""
    cls = get_task(spec.task)
    return cls(spec.task_args) if spec.metric is None else cls(spec.task_args, spec.metric)


def headline_metric(cls: type["Task"], metric=None) -> tuple[str, bool]:
    """(name, higher_is_better) of the metric a run of `cls` is judged by: the named one, else the task's own."""
    if metric is None:
        return cls.metric_name, cls.higher_is_better
    from transferbench import metrics

    return metrics.metric_name(metric), metric.higher_is_better


def all_tasks() -> dict[str, type["Task"]]:
    _discover()
    return dict(TASKS)


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass
class TaskData:
    """A task's prepared data, shared by every run of one (dataset, model, task_args)."""

    train: Any  # a map-style dataset of examples the collate function understands
    eval: Any
    collate: Callable
    labels: list[str]
    identity: str  # what the result's `dataset` field says
    eval_collate: Optional[Callable] = None  # when evaluation differs (no augmentation); default: collate
    processor: Any = None  # saved beside a checkpoint (tokenizer, image processor) so it is self-describing
    validation: Any = None  # early stopping's subset carved from `train` (set by the loop, never the eval split)


def require_columns(dd, columns: dict[str, str], source: str) -> None:
    """Every role's column exists in the training split, or a one-line error naming the fix."""
    have = dd["train"].column_names
    for role, col in columns.items():
        if col not in have:
            raise UserError(f"dataset '{source}' has no column '{col}' (columns: {', '.join(have)}); "
                            f"set dataset.columns.{role}")


def _blank(v) -> bool:
    return v is None or (isinstance(v, float) and v != v) or (isinstance(v, str) and not v.strip())


def require_filled(dd, column: str, what: str, source: str) -> None:
    """No blank cell in `column` (an empty csv cell reads as None: a tokenizer or a class name would choke on it
    mid-run), or one line saying how many and where."""
    for split_name, split in dd.items():
        blank = sum(map(_blank, split[column]))
        if blank:
            raise UserError(f"dataset '{source}': {blank} of {split.num_rows} rows of the {split_name} split have a "
                            f"blank {what} (column '{column}'); fill or drop those rows")


def class_labels(dd, label: str, source: str):
    """(dd with `label` as a ClassLabel, class names). Raw values get one sorted mapping over all splits,
    so train and eval agree."""
    import datasets

    feature = dd["train"].features[label]
    require_filled(dd, label, "label", source)  # a blank cell would become a class called "None" or "nan"
    if hasattr(feature, "names"):
        labels = list(feature.names)
    else:
        labels = sorted({str(v) for split in dd.values() for v in split[label]})
        dd = dd.cast_column(label, datasets.Value("string")).cast_column(label, datasets.ClassLabel(names=labels))
    if len(labels) < 2:
        raise UserError(f"dataset '{source}': column '{label}' has {len(labels)} class ({', '.join(labels)}); "
                        f"a classification benchmark needs at least 2")
    return dd, labels


class Task:
    """The contract. Subclasses set the class attributes and implement load_data and build_model."""

    name: ClassVar[str]
    metric_name: ClassVar[str] = "accuracy"  # the headline metric (a shipped metric module)
    metric_names: ClassVar[tuple[str, ...]] = ("accuracy",)  # everything evaluated
    higher_is_better: ClassVar[bool] = True
    # its predictions and references are class ids, so a suite may name the metric that judges it (`metric:`)
    label_metrics: ClassVar[bool] = True
    lora_targets: ClassVar[dict] = {}  # model_type -> default LoRA targets (name suffixes, or one regex)
    # model_type -> the feed-forward layers (suffixes or a regex) that peft methods with feed-forward targets
    # (IA3: it scales their input) adapt besides lora_targets; a model_type without one: none
    feedforward_targets: ClassVar[dict] = {}
    Args: ClassVar[type[BaseModel]] = NoArgs  # schema of the suite's task_args for this task
    # model family (`model_family`) -> the training loop that trains it, by name (runners/train/loops.py); a family
    # not listed trains with "hf", the one Accelerate loop
    loops: ClassVar[dict[str, str]] = {}

    def __init__(self, task_args: dict, metric=None):
        """`metric`: the benchmark's named metric (config.Metric), which becomes the headline metric and is computed
        besides the task's own (one of the same name is replaced); None: the task's own metrics."""
        try:
            self.args = self.Args(**task_args)
        except ValidationError as err:
            e = err.errors()[0]
            key = ".".join(str(p) for p in e["loc"])
            hint = did_you_mean(key, self.Args.model_fields) if e["type"] == "extra_forbidden" else ""
            raise UserError(f"task_args for {self.name}: '{key}': {e['msg']}{hint}") from None
        self.metric = metric
        if metric is not None:
            if not self.label_metrics:
                raise UserError(f"metric: {self.name} computes its own metrics ({', '.join(self.metric_names)}); a "
                                f"named metric scores predicted class ids, which this task does not predict")
            self.metric_name, self.higher_is_better = headline_metric(type(self), metric)
            self.metric_names = (self.metric_name, *(n for n in type(self).metric_names if n != self.metric_name))

    @classmethod
    def model_family(cls, model: str) -> str:
        """The family of the model reference `model`, the key of `loops`."""
        return "default"

    @classmethod
    def loop_for(cls, model: str) -> str:
        """The name of the loop that trains this task on `model`."""
        return cls.loops.get(cls.model_family(model), "hf")

    def load_data(self, dataset, model: str) -> TaskData:
        raise NotImplementedError

    def build_model(self, model: str, labels: list[str], pretrained: bool) -> torch.nn.Module:
        """The checkpoint's architecture with a head for `labels`; pretrained=False: same config, random init."""
        raise NotImplementedError

    def check_model(self, model: str) -> None:
        """Fail fast (UserError) when `model` cannot be loaded as this task's kind of model. Called by every
        preflight, a dry run's too: it should import no torch (read the model's files: transferbench.model_files).
        A model that a loop other than "hf" builds is that loop's to check (its `check`)."""

    def check_data(self, dataset, model: str) -> int:
        """The number of training examples load_data(dataset, model) gives, after the same UserErrors (data that
        does not load, a missing column, too few classes): what a dry run checks. It should import no torch; the
        default loads the data as a run does."""
        return len(self.load_data(dataset, model).train)

    def warm_up(self, model: str) -> None:
        """Pay once, before the suite's first run, what would otherwise land in that run's timed (and billed)
        fields: the metric modules (`evaluate`, loaded and computed once) and the model's code (its
        transformers/timm module and torch's first allocations: the model is built once, randomly initialised,
        and dropped). The suite counts this in its own timing (suite_timing.jsonl)."""
        self.compute_metrics(predictions=[0, 1], references=[0, 1])
        self.build_model(model, ["a", "b"], pretrained=False)

    def save_checkpoint(self, model: torch.nn.Module, data: TaskData, path) -> None:
        """Save a trained model (a pretrain stage's output) so that build_model(path, ...) loads it."""
        model.save_pretrained(path)
        if data.processor is not None:
            data.processor.save_pretrained(path)

    def head_names(self, model: torch.nn.Module) -> list[str]:
        return find_head(model)

    def model_type(self, model: torch.nn.Module) -> Optional[str]:
        """The key of `lora_targets`: the transformers config's model_type."""
        return getattr(getattr(model, "config", None), "model_type", None)

    def lora_targets_for(self, model: torch.nn.Module, override):
        if override:
            return override
        model_type = self.model_type(model)
        if model_type not in self.lora_targets:
            raise UserError(f"{self.name}: no default LoRA targets for model_type '{model_type}'; set lora_targets "
                            f"in the suite (known: {', '.join(sorted(self.lora_targets))})")
        return self.lora_targets[model_type]

    def feedforward_targets_for(self, model: torch.nn.Module):
        return self.feedforward_targets.get(self.model_type(model))

    def loss_and_logits(self, model, batch) -> tuple[torch.Tensor, torch.Tensor]:
        out = model(**batch)
        return out.loss, out.logits

    def head_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of the head's logits alone (a linear probe on cached features): cross-entropy, as the
        classification models' own loss."""
        return torch.nn.functional.cross_entropy(logits, labels)

    def predictions(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.argmax(-1)

    def compute_metrics(self, predictions, references) -> dict[str, float]:
        from transferbench import metrics

        out = {}
        for name in self.metric_names:
            if self.metric is not None and name == self.metric_name:
                out[name] = metrics.named(self.metric)(predictions, references)
            else:
                out.update(metrics.load(name).compute(predictions=predictions, references=references))
        return out

    def flops_per_batch(self, params_total: int, batch) -> Optional[float]:
        """Training FLOPs of one batch, or None when the task has no estimate."""
        return None
