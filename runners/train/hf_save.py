"""Saving what the HF loop trained: a pretrain stage's checkpoint (adapters merged) and a run's final weights the
ecosystem's way (save_models: final)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Optional

from transferbench.cache import atomic_dir

BASE_PREFIX = "base-"  # models/base-<hash>: the base model a suite's adapters of one model and label set load on


def save_checkpoint(task, model, data, path: Path, accelerator) -> None:
    """A pretrain stage's output, loadable by the task's build_model (main process; the others wait)."""
    if accelerator.is_main_process:
        if hasattr(model, "merge_and_unload"):  # a LoRA stage: save plain weights with the adapters merged
            model = model.merge_and_unload()
        if path.exists():
            shutil.rmtree(path)
        with atomic_dir(path) as tmp:
            task.save_checkpoint(model, data, tmp)
    accelerator.wait_for_everyone()


def save_final(task, model, data, path: Path, accelerator, model_ref: Optional[str] = None) -> str:
    """The run's final weights the ecosystem's way (main process): a peft model as its adapter (adapter weights +
    config, the head peft keeps in full, the tokenizer or image processor) whose adapter_config.json names as its
    base a saved copy of the starting model with this task's head and label maps (save_base), so
    AutoPeftModelFor...from_pretrained(path) reloads it with no arguments; any other model as the task saves a
    checkpoint (transformers save_pretrained with id2label/label2id, timm save_for_hf: safetensors + config.json),
    with its tokenizer or image processor. Replaces an older folder of the same run_id (a failed run tried again)."""
    if accelerator.is_main_process:
        if path.exists():
            shutil.rmtree(path)
        base = save_base(task, model, data, model_ref, path.parent) if model_ref is not None else None
        with atomic_dir(path) as tmp:
            if hasattr(model, "peft_config"):
                model.save_pretrained(tmp)
                if data.processor is not None:
                    data.processor.save_pretrained(tmp)
                if base is not None:
                    set_adapter_base(tmp, str(base.resolve()))
            else:
                task.save_checkpoint(model, data, tmp)
    accelerator.wait_for_everyone()
    return str(path)


def save_base(task, model, data, model_ref: str, folder: Path) -> Optional[Path]:
    """For a peft-wrapped transformers model: the model it started from (pretrained weights, this task's head with
    its num_labels, id2label and label2id), saved once per (task, model, labels, task_args) under `folder` as
    base-<hash>. The adapter's base_model_name_or_path names it: its own checkpoint may have no head, or another
    one, and peft's Auto classes load the base from that name alone. None for other models (a timm model reloads
    with timm.create_model and PeftModel.from_pretrained; peft's Auto classes do not import timm)."""
    from transformers import PreTrainedModel

    if not hasattr(model, "peft_config") or not isinstance(model.get_base_model(), PreTrainedModel):
        return None
    ident = json.dumps([task.name, model_ref, list(data.labels or []), task.args.model_dump(mode="json")],
                       sort_keys=True, default=str)
    target = folder / f"{BASE_PREFIX}{hashlib.sha256(ident.encode()).hexdigest()[:16]}"
    if not target.exists():
        base = task.build_model(model_ref, list(data.labels), pretrained=True)
        with atomic_dir(target) as tmp:
            task.save_checkpoint(base, data, tmp)
    return target


def set_adapter_base(folder: Path, base: str) -> None:
    """Point a saved adapter (adapter_config.json) at the base model it loads on: a folder, or a Hub repo id."""
    config = Path(folder) / "adapter_config.json"
    data = json.loads(config.read_text(encoding="utf-8"))
    data["base_model_name_or_path"] = base
    config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def adapter_base(folder: Path) -> Optional[str]:
    """The base a saved adapter names (None for a folder that is not a peft adapter)."""
    config = Path(folder) / "adapter_config.json"
    return json.loads(config.read_text(encoding="utf-8")).get("base_model_name_or_path") if config.is_file() else None
