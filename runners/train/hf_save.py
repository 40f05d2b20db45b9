"""Saving what the HF loop trained: a pretrain stage's checkpoint (adapters merged) and a run's final weights the
ecosystem's way (save_models: final)."""
from __future__ import annotations

import shutil
from pathlib import Path

from transferbench.cache import atomic_dir


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


def save_final(task, model, data, path: Path, accelerator) -> str:
    """The run's final weights the ecosystem's way (main process): a LoRA model as its peft adapter (adapter
    weights + config, and the head peft keeps in full: PeftModel.from_pretrained(base, path)); any other model as
    the task saves a checkpoint (transformers save_pretrained, timm save_for_hf: safetensors + config.json), with
    its tokenizer or image processor. Replaces an older folder of the same run_id (a failed run tried again)."""
    if accelerator.is_main_process:
        if path.exists():
            shutil.rmtree(path)
        with atomic_dir(path) as tmp:
            if hasattr(model, "peft_config"):
                model.save_pretrained(tmp)
                if data.processor is not None:
                    data.processor.save_pretrained(tmp)
            else:
                task.save_checkpoint(model, data, tmp)
    accelerator.wait_for_everyone()
    return str(path)
