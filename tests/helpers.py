"""Helpers shared by the tests: fixture suites and the CLI in a subprocess."""
import os
import subprocess
import sys
from pathlib import Path


def write_suite(path: Path, model: str, modes="[scratch, finetune, lora, linear-probe]", seeds="[0]",
                extra: str = "", budget: str = "[64]", dataset: str = "builtin:topics") -> Path:
    path.write_text(f"""
name: fixture
defaults: {{seeds: {seeds}, epochs: 1, batch_size: 16, eval_every: 1.0}}
benchmarks:
  - task: text-classification
    dataset: {dataset}
    models: [{model}]
    task_args: {{max_length: 24}}
    modes: {modes}
    train_samples: {budget}
{extra}""")
    return path


def cli(*args, env=None, timeout=600):
    """Run the real console entry point in a subprocess (as a user would)."""
    return subprocess.run([sys.executable, "-m", "transferbench", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
