"""Training FLOPs and MFU (model FLOPs utilisation) against the device's stated peak (peaks.yaml).

Conventions: a training step costs 3 x its forward FLOPs (backward ~ 2 x forward), whatever the mode (frozen
layers skip their weight gradients, so linear-probe and LoRA runs overstate the work actually done: model
FLOPs, as in the PaLM paper's MFU). Transformers use 6 x parameters x tokens; other models count one forward.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from . import devices

PEAKS = Path(__file__).with_name("peaks.yaml")


def peak_table(path: str | Path = PEAKS) -> dict:
    return devices.load_table(path)


def precision_key(mixed_precision: str) -> str:
    """The peaks.yaml column a run's arithmetic uses: bf16 / fp16, else TF32 when torch lets matmuls use it."""
    if mixed_precision in ("bf16", "fp16"):
        return mixed_precision
    import torch

    return "tf32" if torch.backends.cuda.matmul.allow_tf32 else "fp32"


def peak_flops(device_name: str, mixed_precision: str) -> Optional[float]:
    """Stated dense peak FLOP/s of one device at this precision, or None (CPU, unknown device or precision).
    A key matches a whole word of the device name, case-insensitively; the longest match wins (devices.match)."""
    table = peak_table()["devices"]
    key = devices.match(device_name, table)
    if key is None or device_name.upper().startswith("CPU"):
        return None
    tflops = table[key]["peak"].get(precision_key(mixed_precision))
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

    modes = {m: m.training for m in model.modules()}  # per module: frozen BatchNorm layers stay in eval
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*args, **kwargs)
    finally:
        for m, training in modes.items():
            m.training = training
    return float(counter.get_total_flops())
