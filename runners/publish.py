"""A leaderboard as a Hugging Face dataset folder: data/runs.jsonl (one row per run), data/cells.jsonl (one row per
cell; JSON too, because one folder's configs share one loader), the plots and the HTML page, and a dataset card whose YAML `configs:` tell `datasets.load_dataset(DIR)`
which files to read. `hf upload USER/NAME DIR . --repo-type dataset` puts it on the Hub."""
from __future__ import annotations

import dataclasses
import json
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Optional

import yaml

from transferbench.results import Result

from . import html
from .leaderboard import Leaderboard
from .tables import to_markdown

# Nested fields whose keys differ between tasks and versions (metrics, config, env) travel as JSON strings, so
# every row has one Arrow schema; the curve is uniform and stays a list of structs.
AS_JSON = ("metrics", "config", "env")
FLOATS = {f.name for f in dataclasses.fields(Result) if "float" in str(f.type) and "dict" not in str(f.type)
          and "list" not in str(f.type)}


def dataset_row(r: dict) -> dict:
    """A run in one stable schema: declared fields only, floats as floats (JSON writes 1 for 1.0)."""
    row = {}
    for f in dataclasses.fields(Result):
        value = r.get(f.name)
        if f.name in AS_JSON:
            value = json.dumps(value if value is not None else {}, sort_keys=True, default=str)
        elif f.name == "curve":
            value = [{"step": int(p.get("step") or 0), "samples_seen": int(p.get("samples_seen") or 0),
                      "seconds": float(p.get("seconds") or 0.0),
                      "metric": None if p.get("metric") is None else float(p["metric"])} for p in value or []]
        elif f.name == "loss_curve":  # JSON writes a loss of 2.0 as 2: keep the column one type
            value = [{"step": int(p.get("step") or 0), "loss": None if p.get("loss") is None else float(p["loss"])}
                     for p in value or []]
        elif f.name in FLOATS and value is not None:
            value = float(value)
        row[f.name] = value
    return row


def _distinct(records: list[dict], get) -> list:
    return sorted({str(v) for r in records if (v := get(r)) is not None})


def card_metadata(board: Leaderboard) -> dict:
    versions = defaultdict(set)
    for r in board.records:
        for name, version in ((r.get("env") or {}).get("versions") or {}).items():
            versions[name].add(str(version))
    return {
        "pretty_name": board.title,
        "tags": ["transferbench", "benchmark", "transfer-learning", "fine-tuning", "lora"],
        "configs": [
            {"config_name": "runs", "data_files": [{"split": "train", "path": "data/runs.jsonl"}], "default": True},
            {"config_name": "cells", "data_files": [{"split": "train", "path": "data/cells.jsonl"}]},
        ],
        "transferbench": {
            "suites": _distinct(board.records, lambda r: r.get("suite")),
            "runs": len(board.records),
            "hardware": _distinct(board.records, lambda r: r.get("device_name")),
            "processes": _distinct(board.records, lambda r: r.get("num_processes")),
            "mixed_precision": _distinct(board.records, lambda r: r.get("mixed_precision")),
            "versions": {name: " / ".join(sorted(v)) for name, v in sorted(versions.items())},
            "git_commits": _distinct(board.records, lambda r: (r.get("env") or {}).get("git_commit")),
            "prices": board.prices,
            "started": min(_distinct(board.records, lambda r: r.get("started_at")), default=None),
            "finished": max(_distinct(board.records, lambda r: r.get("finished_at")), default=None),
        },
    }


def card(board: Leaderboard, figures: list[dict]) -> str:
    meta = card_metadata(board)
    tb = meta["transferbench"]
    suites = tb["suites"] or ["SUITE"]
    commits = ", ".join(tb["git_commits"]) or "unknown"
    reproduce = "\n".join(f"transferbench run benchmarks/{s}.yaml      # the suite named {s}" for s in suites)
    return f"""---
{yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).strip()}
---

{to_markdown(board, figures)}
## Data

transferbench suite(s) {", ".join(f"`{s}`" for s in suites)}: {tb["runs"]} runs on
{", ".join(tb["hardware"]) or "unknown hardware"} ({", ".join(f"{k} {v}" for k, v in tb["versions"].items())}).

- `runs` (default config, `data/runs.jsonl`): one row per run, the transferbench result record. `metrics`,
  `config` (the resolved run spec) and `env` (versions, git commit, host) are JSON strings:
  `json.loads(row["config"])`.
- `cells` (`data/cells.jsonl`): one row per leaderboard cell (task, dataset, model, budget, mode; mean over
  seeds) with Δ vs scratch and its 95% Welch interval, the numbers of the tables above.
- `leaderboard.html` (the page, self-contained) and `plots/`.

```python
from datasets import load_dataset
runs = load_dataset("THIS_FOLDER_OR_HUB_ID", split="train")          # cells: load_dataset(..., "cells")
```

## Reproduce

transferbench at git commit {commits}:

```bash
{reproduce}
transferbench report results/{suites[0]} --publish DIR
hf upload USER/NAME DIR . --repo-type dataset   # push this folder to the Hub as a dataset repo
```
"""


def publish(board: Leaderboard, out: Path, figures: list[dict], plan_from: Optional[Path] = None) -> None:
    """The dataset folder; `plan_from`: the folder where the report wrote plan.md and plan.json, copied beside."""
    (out / "data").mkdir(parents=True, exist_ok=True)
    with open(out / "data" / "runs.jsonl", "w", encoding="utf-8") as f:
        for r in board.records:
            f.write(json.dumps(dataset_row(r), default=str) + "\n")
    with open(out / "data" / "cells.jsonl", "w", encoding="utf-8") as f:
        for c in board.cells:
            f.write(json.dumps(c, default=str) + "\n")
    if figures:
        (out / "plots").mkdir(exist_ok=True)
        for fig in figures:
            shutil.copyfile(fig["file"], out / fig["path"])
    html.write(board, figures, out / "leaderboard.html")
    for name in ("plan.md", "plan.json") if plan_from is not None else ():
        shutil.copyfile(Path(plan_from) / name, out / name)
    (out / "README.md").write_text(card(board, figures), encoding="utf-8")
