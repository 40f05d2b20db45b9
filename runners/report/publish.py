"""A leaderboard as a Hugging Face dataset folder: data/runs.jsonl (one row per run), data/cells.jsonl (one row per
cell; JSON too, because one folder's configs share one loader), the plots and the HTML page, and a dataset card
whose YAML `configs:` tell `datasets.load_dataset(DIR)` which files to read. `report --publish DIR --push-to-hub
USER/NAME` uploads it through huggingface_hub's HfApi."""
from __future__ import annotations

import dataclasses
import json
import shlex
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Optional

from transferbench.errors import UserError
from transferbench.results import Result

from . import decision, html
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


# The license of the published records and tables: transferbench's own (pyproject.toml), as the Hub spells it.
LICENSE = "apache-2.0"
TAGS = ["transferbench", "benchmark", "transfer-learning", "fine-tuning", "lora"]
# The Hub's size categories (huggingface_hub.DatasetCardData's documented options), by number of rows
SIZES = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")]
CONFIGS = [
    {"config_name": "runs", "data_files": [{"split": "train", "path": "data/runs.jsonl"}], "default": True},
    {"config_name": "cells", "data_files": [{"split": "train", "path": "data/cells.jsonl"}]},
]


def card_metadata(board: Leaderboard) -> dict:
    """The card's YAML: what the Hub reads (license, configs for the viewer and load_dataset, tags, name, size)
    and a `transferbench:` block with the provenance of the runs."""
    versions = defaultdict(set)
    for r in board.records:
        for name, version in ((r.get("env") or {}).get("versions") or {}).items():
            versions[name].add(str(version))
    return {
        "license": LICENSE,
        "pretty_name": board.title,
        "size_categories": next((name for limit, name in SIZES if len(board.records) < limit), "n>1M"),
        "tags": list(TAGS),
        "configs": CONFIGS,
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


def suite_sources(records: list[dict]) -> list[dict]:
    """The distinct suite files the runs were read from (config.suite_source: file, sha256, imports, --set), each
    with the suite names it holds; a run recorded before the file was kept counts under {"file": None}."""
    out: dict[tuple, dict] = {}
    for r in records:
        src = (r.get("config") or {}).get("suite_source") or {}
        key = (src.get("file"), src.get("sha256"), tuple(src.get("imports") or ()), tuple(src.get("set") or ()))
        entry = out.setdefault(key, {"file": key[0], "sha256": key[1], "imports": list(key[2]), "set": list(key[3]),
                                     "suites": set()})
        entry["suites"].add(str(r.get("suite")))
    return [{**e, "suites": sorted(e["suites"])} for e in out.values()]


def local_data(records: list[dict]) -> list[str]:
    """Dataset sources that are files or folders on the machine that ran (not hub:/builtin:), stages' too."""
    sources = set()
    for r in records:
        config = r.get("config") or {}
        for spec in (config, config.get("stage") or {}):
            source = (spec.get("dataset") or {}).get("source")
            if isinstance(source, str) and not source.startswith(("hub:", "builtin:")):
                sources.add(source)
    return sorted(sources)


def _shown(path: str) -> str:
    """A recorded absolute path, relative to the current folder when it lies inside it (a repo's benchmarks/)."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def _reproduce(records: list[dict]) -> str:
    commands, notes = [], []
    for src in suite_sources(records):
        names = ", ".join(src["suites"])
        if src["file"] is None:
            commands.append(f"transferbench run SUITE.yaml   # the suite named {names}: its file was not recorded "
                            f"(runs from before transferbench recorded it)")
            continue
        sets = "".join(f" --set {shlex.quote(item)}" for item in src["set"])
        digest = f", sha256 {src['sha256'][:12]}" if src["sha256"] else ""
        commands.append(f"transferbench run {shlex.quote(_shown(src['file']))}{sets}   # suite {names}{digest}")
        if src["imports"]:
            notes.append(f"- `{_shown(src['file'])}` imports {', '.join(f'`{m}`' for m in src['imports'])} "
                         f"(tasks defined outside transferbench): that code must be importable (on PYTHONPATH) "
                         f"where you run it.")
    data = local_data(records)
    if data:
        notes.append("- Local data the runs read (not part of this dataset; put it at the same paths or edit the "
                     "suite): " + ", ".join(f"`{d}`" for d in data) + ".")
    return "\n".join(commands), "\n".join(notes)


def card(board: Leaderboard, figures: list[dict]):
    """The dataset card (huggingface_hub.DatasetCard): DatasetCardData as its YAML, then the leaderboard, the
    description of the data files and how to reproduce them."""
    from huggingface_hub import DatasetCard, DatasetCardData

    data = DatasetCardData(**card_metadata(board))
    tb = data.transferbench
    suites = tb["suites"] or ["SUITE"]
    commits = ", ".join(tb["git_commits"]) or "unknown"
    commands, notes = _reproduce(board.records)
    body = f"""
{to_markdown(board, figures)}
## Data

transferbench suite(s) {", ".join(f"`{s}`" for s in suites)}: {tb["runs"]} runs on
{", ".join(tb["hardware"]) or "unknown hardware"} ({", ".join(f"{k} {v}" for k, v in tb["versions"].items())}).
License: {LICENSE} (the records and tables; the datasets and models the runs used keep their own licenses).

- `runs` (default config, `data/runs.jsonl`): one row per run, the transferbench result record. `metrics`,
  `config` (the resolved run spec) and `env` (versions, git commit, host) are JSON strings:
  `json.loads(row["config"])`.
- `cells` (`data/cells.jsonl`): one row per leaderboard cell (task, dataset, model, budget, mode; mean over
  seeds) with Δ vs scratch and its 95% Welch interval, the numbers of the tables above.
- `leaderboard.html` (the page, self-contained) and `plots/`; `decisions.json` (the decision lines and table the
  page opens with, read by the Space that `transferbench report --space DIR` writes).

```python
from datasets import load_dataset
runs = load_dataset("THIS_FOLDER_OR_HUB_ID", split="train")          # cells: load_dataset(..., "cells")
```

## Reproduce

transferbench at git commit {commits}, with the suite file(s) these runs were read from:

```bash
{commands}
transferbench report results/{suites[0]} --publish DIR --push-to-hub USER/NAME   # this folder, on the Hub
```

{notes}
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")


def card_problems(folder: Path) -> list[str]:
    """What the Hub would refuse or not show in `folder`'s card, checked offline (DatasetCard.validate posts the
    card to the Hub): the YAML parses back into DatasetCardData, license and pretty_name are set, size_categories
    is one of the Hub's, and each config names existing data files with one default."""
    from huggingface_hub import DatasetCard

    try:
        data = DatasetCard.load(folder / "README.md").data
    except (OSError, ValueError) as err:
        return [f"README.md does not parse as a dataset card: {err}"]
    problems = [f"no {key}" for key in ("license", "pretty_name") if not getattr(data, key, None)]
    if data.size_categories not in [name for _, name in SIZES] + ["n>1M"]:
        problems.append(f"size_categories {data.size_categories!r}")
    if not all(isinstance(t, str) for t in getattr(data, "tags", None) or [None]):
        problems.append("tags must be a list of strings")
    configs = getattr(data, "configs", None) or []
    if sum(bool(c.get("default")) for c in configs) != 1:
        problems.append("configs: exactly one must be the default")
    for c in configs:
        for f in c.get("data_files") or [None]:
            if not (isinstance(f, dict) and f.get("split") and (folder / str(f.get("path"))).is_file()):
                problems.append(f"configs: {c.get('config_name')}: data file {f!r} is not in the folder")
    return problems


def decisions(board: Leaderboard) -> dict:
    """What the Space opens with: the decision lines and table (decision.py), as the page shows them."""
    return dict(title=board.title, decisions=board.decisions, table=decision.table_rows(board.decisions))


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
    (out / "decisions.json").write_text(json.dumps(decisions(board), indent=1, default=str), encoding="utf-8")
    for name in ("plan.md", "plan.json") if plan_from is not None else ():
        shutil.copyfile(Path(plan_from) / name, out / name)
    card(board, figures).save(out / "README.md")
    problems = card_problems(out)
    if problems:  # our card, not the user's input: a bug to fix before anything is pushed
        raise RuntimeError(f"the dataset card in {out} is invalid: {'; '.join(problems)}")


def check_push(repo_id: str, folder: Optional[str]) -> None:
    """Everything a push needs that can be known without the network, checked before the report is built."""
    import huggingface_hub
    import huggingface_hub.constants  # not an attribute of the package until imported (ENVIRONMENT.md)
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if not folder:
        raise UserError("--push-to-hub uploads the folder that --publish writes; add --publish DIR")
    try:
        if repo_id.count("/") != 1:
            raise HFValidationError("give it as USER/NAME or ORG/NAME")
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise UserError(f"--push-to-hub {repo_id!r} is not a Hub repo id: {str(err).splitlines()[0]}") from None
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise UserError("--push-to-hub: the Hub is switched off here (HF_HUB_OFFLINE=1); run it where the Hub is "
                        "reachable, without HF_HUB_OFFLINE")
    if not huggingface_hub.get_token():
        raise UserError("--push-to-hub needs a Hugging Face token with write access: run `hf auth login` or set "
                        "HF_TOKEN")


def push_to_hub(folder: Path, repo_id: str) -> str:
    """Upload a published folder as the dataset repo `repo_id` (created when missing) in one commit."""
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    problems = card_problems(folder)
    if problems:
        raise UserError(f"--push-to-hub: {folder}/README.md is not a valid dataset card ({'; '.join(problems)}); "
                        f"write the folder again with --publish")
    api = HfApi()
    try:
        api.create_repo(repo_id, repo_type="dataset", exist_ok=True)
        commit = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(folder),
                                   commit_message="transferbench leaderboard (report --publish)")
    except (HfHubHTTPError, httpx.HTTPError, OSError, ValueError) as err:  # unreachable, 401/403, refused
        first = str(err).strip().splitlines()[0] if str(err).strip() else "no detail"
        raise UserError(f"--push-to-hub {repo_id}: {type(err).__name__}: {first[:300]}; {folder} is written, "
                        f"push it again when that is fixed") from None
    return f"pushed {folder} to https://huggingface.co/datasets/{repo_id} ({getattr(commit, 'commit_url', commit)})"
