"""Training FLOPs and MFU (model FLOPs utilisation) against the device's stated peak (peaks.yaml).

Conventions: a training step costs 3 x its forward FLOPs (backward ~ 2 x forward), whatever the mode (frozen
layers skip their weight gradients, so linear-probe and LoRA runs overstate the work actually done: model
FLOPs, as in the PaLM paper's MFU). Transformers use 6 x parameters x tokens; other models count one forward.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Optional

import yaml

PEAKS = Path(__file__).with_name("peaks.yaml")


@functools.lru_cache(maxsize=None)
def peak_table(path: str | Path = PEAKS) -> dict:
    return yaml.safe_load(Path(path).read_text())


def precision_key(mixed_precision: str) -> str:
    """The peaks.yaml column a run's arithmetic uses: bf16 / fp16, else TF32 when torch lets matmuls use it."""
    if mixed_precision in ("bf16", "fp16"):
        return mixed_precision
    import torch

    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


def peak_flops(device_name: str, mixed_precision: str) -> Optional[float]:
    """Stated dense peak FLOP/s of one device at this precision, or None (CPU, unknown device or precision).
    A key matches a whole word of the device name, case-insensitively; the longest match wins."""
    devices = peak_table()["devices"]
    name = device_name.upper()
    hits = [k for k in devices if re.search(rf"(?<![A-Z0-9]){re.escape(k.upper())}(?![A-Z0-9])", name)]
    if not hits or name.startswith("CPU"):
        return None
    tflops = devices[max(hits, key=len)]["peak"].get(precision_key(mixed_precision))
    return None if tflops is None else float(tflops) * 1e12


def mfu(flops: Optional[float], seconds: Optional[float], peak: Optional[float], device_count: int) -> Optional[float]:
    """Achieved FLOP/s over the peak of all devices that trained."""
    if not flops or not seconds or not peak:
        return None
    return flops / seconds / (peak * device_count)


def forward_flops(model, *args, **kwargs) -> float:
    """FLOPs of one forward pass, counted by torch's FlopCounterMode (matmuls, convolutions, attention). Runs in
    eval mode without gradients, so BatchNorm statistics, dropout's random stream and the graph are untouched."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*args, **kwargs)
    finally:
        model.train(was_training)
    return float(counter.get_total_flops())
