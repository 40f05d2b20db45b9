"""What the Accelerate loop (runners/hf_loop.py) cannot train as asked, found before anything trains. Apart from
the loop because the loop imports torch and a dry run (`transferbench run --dry-run`) checks without it."""
from __future__ import annotations

from transferbench.errors import UserError
from transferbench.modes import get_mode


def check(spec, num_processes: int) -> None:
    """What this loop cannot train as asked, found before anything trains: an uneven batch split."""
    spec.hyper.per_device_batch(num_processes)
    if spec.hyper.cached_features and not get_mode(spec.mode).head_only:
        raise UserError(f"cached_features applies to a mode that trains only the head (linear-probe), not "
                        f"{spec.mode}: the backbone's features change while it trains; remove it from that mode")
    if spec.hyper.early_stopping and spec.hyper.cached_features:
        raise UserError("early_stopping and cached_features do not combine yet: the probe on cached features has "
                        "no validation features; drop one of them")
