"""The keys a suite accepts besides its own: Hugging Face spellings (TrainingArguments, peft) renamed to the suite's,
hints for familiar names that mean something else here, and `--set KEY=VALUE` overrides applied to a suite's data."""
from __future__ import annotations

import copy
import re
from typing import Any, Sequence

from pydantic_core import PydanticCustomError

from . import safe_yaml
from .errors import UserError

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


def aliases_renamed(data: Any) -> Any:
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


def apply_overrides(data: dict, overrides: Sequence[str]) -> tuple[dict, dict[tuple[str, ...], str]]:
    """`--set a.b.0.c=VALUE` items applied to a copy of the suite's data: dotted keys walk mappings, integers
    index lists (benchmarks.0), a missing mapping key is created; VALUE is YAML (3, 1.0e-3, [0, 1], {r: 16}).
    A key set under a Hugging Face name replaces the suite's own spelling there, and the other way round.
    Returns (the new data, {path: item} of what was set)."""
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


def shadowed(data: dict, given: dict[tuple[str, ...], str]) -> dict[str, tuple[str, bool]]:
    """{--set item: (a warning naming the keys that win over it, whether it changes no run)} for each item a more
    specific layer hides. A run reads each key from its most specific layer (a mode's patch, then its benchmark, then
    `defaults`; a pretrain stage, then `defaults`), whole: a benchmark's `plateau: {...}` replaces the defaults'
    one; `task_args` merges key by key."""
    out = {}
    for path, item in given.items():
        reach, depth = _reach(data, path)
        if reach is None:
            continue
        key = path[depth:depth + (2 if path[depth] == "task_args" and len(path) > depth + 1 else 1)]
        hidden = {unit: [where for where, layer in layers if _sets(layer, key)] for unit, layers in reach.items()}
        hidden = {unit: places for unit, places in hidden.items() if places}
        if not hidden:
            continue
        keys = list(dict.fromkeys(f"{where}.{'.'.join(key)}" for places in hidden.values() for where in places))
        shown = ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")
        everywhere = len(hidden) == len(reach)
        effect = "it changes no run" if everywhere else \
            f"it still applies to {len(reach) - len(hidden)} of the {len(reach)} modes and stages it reaches"
        name, _, value = item.partition("=")
        example = f"{next(iter(hidden.values()))[0]}.{name.split('.', depth)[depth]}={value}"  # as the user spelt it
        out[item] = (f"--set {item} is shadowed by {shown} (a more specific key wins): {effect}; set "
                     f"those instead, e.g. --set {example}", everywhere)
    return out


def _reach(data: dict, path: tuple[str, ...]):
    """({place it reaches: [(where, layer) more specific than the override's, in order]}, the index of the key in
    `path`), or (None, 0) for a path that no more specific layer can hide."""
    benches = data.get("benchmarks") if isinstance(data.get("benchmarks"), list) else []
    stages = data.get("pretrain") if isinstance(data.get("pretrain"), dict) else {}

    def modes(i: int, bench) -> dict:
        found = bench.get("modes") if isinstance(bench, dict) else None
        return {f"benchmarks.{i}.modes.{m}": p for m, p in found.items()} if isinstance(found, dict) else \
            {f"benchmarks.{i}.modes.{m}": None for m in found} if isinstance(found, list) else {}

    if path[0] == "defaults" and len(path) > 1:
        reach = {where: [(f"benchmarks.{i}", bench), (where, patch)]
                 for i, bench in enumerate(benches) for where, patch in modes(i, bench).items()}
        reach.update({f"pretrain.{name}": [(f"pretrain.{name}", stage)] for name, stage in stages.items()})
        return reach, 1
    if path[0] == "benchmarks" and len(path) > 2 and path[2] != "modes" and int(path[1]) < len(benches):
        return {where: [(where, patch)] for where, patch in modes(int(path[1]), benches[int(path[1])]).items()}, 2
    return None, 0


def _sets(layer: Any, key: tuple[str, ...]) -> bool:
    """Whether a layer of the suite (a mapping, or None) gives `key` (under any spelling of KEY_ALIASES)."""
    for part in key:
        if not isinstance(layer, dict):
            return False
        found = [k for k in layer if KEY_ALIASES.get(k, k) == part]
        if not found:
            return False
        layer = layer[found[0]]
    return True
