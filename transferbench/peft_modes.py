"""The peft family of modes: any method peft ships, configured by peft's own config classes.

A suite names a mode and gives it `peft: {method: NAME, FIELD: VALUE, ...}`; NAME is a peft.PeftType (lora, loha,
lokr, ia3, vera, oft, boft, ...) and the fields are those of that method's config class (LoraConfig, IA3Config, ...),
so a method peft adds becomes a mode without training code here. The mapping is checked against the class when the
suite is expanded (before anything trains) and kept, as given, in the run's hyper-parameters: the record and the
run_id say which method and config trained. transferbench fills only what depends on the model: `target_modules`
(the task's default per model_type), `feedforward_modules` for methods that have them (IA3), and the head in
`modules_to_save` (it always trains in full).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional

from .errors import UserError, did_you_mean

DEFAULT_LR = 1e-3  # the lora mode's default: a peft-family mode trains adapters and a new head as lora does
# Base-model quantization (QLoRA): a loading option of the base model, not a peft config field.
QUANTIZATION_KEYS = ("load_in_4bit", "load_in_8bit", "quantization", "quantization_config")
# Config fields transferbench sets itself (or that name the method twice): refused with what to write instead.
OWN_FIELDS = {
    "peft_type": "'method' names it", "task_type": "the model is wrapped without a task type, as the lora mode does",
    "inference_mode": "the adapters train", "base_model_name_or_path": "the benchmark's model is the base",
    "revision": "the benchmark's model is the base", "auto_mapping": "set by peft",
}
# Methods whose training needs a call the loop does not make: refused rather than trained wrongly.
NEEDS_LOOP = {
    "adalora": "its rank allocation needs update_and_allocate() after every optimizer step",
    "poly": "its forward needs task_ids for each batch",
}


def _peft_types() -> dict[str, Any]:
    """peft method name (lower case) -> its config class, as installed."""
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    return {t.value.lower(): cls for t, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()}


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def config_class(method: Any, where: str):
    """The config class of a peft method; refused when peft has no such method or it does not adapt layers."""
    types = _peft_types()
    name = str(method).lower()
    if name not in types:
        raise UserError(f"{where}: unknown peft method '{method}'{did_you_mean(name, types)}")
    cls = types[name]
    fields = _fields(cls)
    if "target_modules" not in fields or "modules_to_save" not in fields:
        adapting = sorted(n for n, c in types.items() if {"target_modules", "modules_to_save"} <= _fields(c)
                          and n not in NEEDS_LOOP)
        raise UserError(f"{where}: peft method '{name}' does not adapt a model's layers (prompt learning or "
                        f"model-specific); a peft mode uses one that does: {', '.join(adapting)}")
    if name in NEEDS_LOOP:
        raise UserError(f"{where}: peft method '{name}' is not supported: {NEEDS_LOOP[name]}, which transferbench's "
                        f"loop does not do")
    return name, cls


def validate(spec: Any, where: str) -> dict[str, Any]:
    """A mode's `peft:` mapping checked by peft itself (its config class builds it); returned as given, with the
    method's canonical name. One-line UserError on anything peft or transferbench would refuse later."""
    if not isinstance(spec, dict):
        raise UserError(f"{where}: give a mapping of the method and its peft config fields, e.g. "
                        f"{{method: lora, use_dora: true, r: 8}} (got {spec!r})")
    fields = dict(spec)
    if "method" not in fields:
        raise UserError(f"{where}: missing 'method': the peft method, e.g. lora, loha, ia3, vera")
    quant = next((k for k in fields if k in QUANTIZATION_KEYS or str(k).startswith("bnb_")), None)
    if quant is not None:
        _refuse_quantization(quant, where)
    name, cls = config_class(fields.pop("method"), where)
    known = _fields(cls) - set(OWN_FIELDS)
    for key in fields:
        if key in OWN_FIELDS:
            raise UserError(f"{where}: '{key}' is not set in a suite ({OWN_FIELDS[key]})")
        if key not in known:
            raise UserError(f"{where}: '{key}' is not a field of peft's {cls.__name__}{did_you_mean(key, known)}")
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for key, value in fields.items():  # peft's dataclasses do not check types: a wrong one would fail mid-run
        want = _scalar_type(defaults[key])
        if want is not None and not (isinstance(value, want) and (want is bool or not isinstance(value, bool))):
            what = {bool: "true or false", int: "an integer"}.get(want, "a number")
            raise UserError(f"{where}: '{key}' of peft's {cls.__name__} takes {what} (got {value!r})")
    try:
        cls(**fields)  # peft's own checks of the values (e.g. IA3's feedforward_modules within target_modules)
    except (TypeError, ValueError) as err:
        raise UserError(f"{where}: peft's {cls.__name__} refuses {fields}: {_first_line(err)}") from None
    return {"method": name, **fields}


def _scalar_type(default):
    """The type a field takes, judged by its default (bool, int, or a float that may be written as an int)."""
    if isinstance(default, bool):
        return bool
    if isinstance(default, int):
        return int
    if isinstance(default, float):
        return (int, float)
    return None


def _refuse_quantization(key: str, where: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"{where}: '{key}' (a quantized base model, QLoRA) needs a CUDA GPU and bitsandbytes; this "
                        f"machine has no CUDA device: remove it to train the method on the unquantized model")
    raise UserError(f"{where}: '{key}': transferbench does not load quantized base models (QLoRA) yet; remove it "
                    f"to train the method on the unquantized model")


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _as_regex(targets) -> str:
    """peft's target matching as one regex (re.fullmatch): a list matches a module name or a dotted suffix of it."""
    if isinstance(targets, str):
        return targets
    return r"(?:.*\.)?(?:" + "|".join(re.escape(t) for t in targets) + ")"


def _union(a, b):
    if isinstance(a, str) or isinstance(b, str):
        return f"(?:{_as_regex(a)})|(?:{_as_regex(b)})"
    return list(dict.fromkeys([*a, *b]))


def build_config(peft: dict[str, Any], targets, head: list[str], in_place: bool):
    """The method's peft config for one model. `targets`: the task's defaults for this model, either a list/regex
    (target modules) or {"target_modules": ..., "feedforward_modules": ...}."""
    name, cls = config_class(peft["method"], "peft")
    fields = {k: v for k, v in peft.items() if k != "method"}
    default = targets if isinstance(targets, dict) else {"target_modules": targets, "feedforward_modules": None}
    if "target_modules" not in fields:
        fields["target_modules"] = default["target_modules"]
        feedforward = default.get("feedforward_modules")
        # methods with feed-forward targets (IA3 scales their input): the task's feed-forward layers join the targets
        if "feedforward_modules" in _fields(cls) and "feedforward_modules" not in fields:
            fields["feedforward_modules"] = feedforward or []  # none known (a ResNet has no FFN): every target
            if feedforward:                                    # scales its output (peft would ask for a list)
                fields["target_modules"] = _union(fields["target_modules"], feedforward)
    if name == "lora" and "lora_alpha" not in fields:  # the lora mode's scaling (alpha = 2r): dora = lora + use_dora
        fields["lora_alpha"] = 2 * fields.get("r", _default(cls, "r"))
    if in_place:  # the head is unfrozen by hand (prepare)
        fields.pop("modules_to_save", None)
    else:
        fields["modules_to_save"] = list(dict.fromkeys([*head, *(fields.get("modules_to_save") or [])]))
    return cls(**fields)


def _default(cls, field: str):
    return next(f.default for f in dataclasses.fields(cls) if f.name == field)


def attach(model, config, head: list[str]):
    """The model with `config`'s adapters: peft's wrapper (the head in modules_to_save), or, for a model whose
    forward indexes its own submodules (Ultralytics: `peft_in_place`), the adapters injected in place, the base
    frozen by hand and the head unfrozen, so its own class and attributes stay intact."""
    from peft import get_peft_model, inject_adapter_in_model

    if not getattr(model, "peft_in_place", False):
        return get_peft_model(model, config)
    model.requires_grad_(False)
    model = inject_adapter_in_model(config, model)
    for name in head:
        model.get_submodule(name).requires_grad_(True)
    return model


def prepare(model, head: list[str], targets, hyper):
    """The peft family's `Mode.prepare`: pretrained weights frozen, the method's adapters and the head train."""
    config = build_config(hyper.peft, targets, head, getattr(model, "peft_in_place", False))
    method = hyper.peft["method"]
    try:
        return attach(model, config, head)
    except (ValueError, TypeError, NotImplementedError) as err:  # peft: targets absent or of a type it cannot adapt
        raise UserError(_misfit(model, method, config.target_modules, err)) from None


def _misfit(model, method: str, targets, err: BaseException) -> str:
    """One line: which layers the targets matched (and their types), or that they matched none."""
    pattern = re.compile(_as_regex(sorted(targets) if isinstance(targets, (set, frozenset)) else targets))
    matched = {type(m).__name__ for n, m in model.named_modules() if n and pattern.fullmatch(n)}
    if matched:
        return (f"peft method '{method}' could not adapt the {', '.join(sorted(matched))} layers its targets match "
                f"in {type(model).__name__}: {_first_line(err)}; set peft.target_modules (or the method's fields) to "
                f"what it supports")
    names = sorted({n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if n})
    shown = sorted(targets) if isinstance(targets, (set, frozenset)) else targets
    return (f"peft method '{method}': targets {shown!r} match no layer of {type(model).__name__}; set "
            f"peft.target_modules, e.g. to some of: {', '.join(names[:30])}")


def adapter_bytes(model, trainable_bytes: Optional[int] = None) -> int:
    """Bytes of what training adds to the base model, in the weights' dtype: for a peft model the tensors its
    save_pretrained writes (get_peft_model_state_dict: adapters, the head kept in full, a method's saved buffers
    such as VeRA's projections), else the trainable parameters (what a checkpoint of the trained part holds).
    Counted from the tensors' sizes, not by writing them (save_pretrained took 30-60 ms on a tiny BERT here; the
    files add a header, a config and a README of a few kB). LoRA saves exactly its trainable tensors, so it takes
    the cheap path (its peft state dict took ~7 ms on MiniLM and gave the same bytes). `trainable_bytes`: the
    trainable tensors' bytes when the caller has counted them (modes.parameter_counts), else counted here."""
    configs = getattr(model, "peft_config", None)
    if configs and hasattr(model, "get_base_model") and any(c.peft_type != "LORA" for c in configs.values()):
        from peft import get_peft_model_state_dict

        tensors = get_peft_model_state_dict(model).values()
    elif trainable_bytes is not None:
        return trainable_bytes
    else:
        tensors = [p for p in model.parameters() if p.requires_grad]
    return sum(t.numel() * t.element_size() for t in tensors)
