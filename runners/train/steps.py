"""How many optimizer steps the HF loop trains: torch-free, so the dry run prints what the loop will do."""
from __future__ import annotations

import math


def planned_steps(hyper, examples: int, num_processes: int) -> int:
    """The optimizer steps `train` will plan for `examples` (each process sees 1/N of the batches)."""
    batches = math.ceil(math.ceil(examples / hyper.per_device_batch(num_processes)) / num_processes)
    return schedule_steps(hyper, batches)[1]


def schedule_steps(hyper, batches: int) -> tuple[int, int]:
    """(optimizer steps per epoch, total optimizer steps) for `batches` per epoch on each process."""
    per_epoch = max(1, math.ceil(batches / hyper.grad_accum))
    return per_epoch, hyper.max_steps or max(1, math.ceil(hyper.epochs * per_epoch))
