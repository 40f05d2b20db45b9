"""Trained models on the Hub: `transferbench run --push-models ORG` (with `save_models: final`) uploads each run's
saved model or adapter as a model repo with a model card (huggingface_hub's ModelCard built from ModelCardData):
base model, mode, budget, seed, the run's metric and its cell's mean ± std over seeds with the Δ vs scratch and its
95% interval where the leaderboard has one, a link to the leaderboard dataset, and the run's resolved config.

An adapter's repo names as its base a repo holding the starting model with the task's head and label maps (the
models/base-<hash> folder save_final wrote, pushed once per suite and base), so
AutoPeftModelFor...from_pretrained(REPO) reloads it from the Hub with no hand-given arguments."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

from transferbench.errors import UserError
from transferbench.results import Store

from . import fmt
from .cells import run_key
from .leaderboard import build

# aliases whose weights are a Hub model's (the card's base_model must be a Hub id)
HUB_IDS = {"all-minilm-l6-v2": "sentence-transformers/all-MiniLM-L6-v2"}
PIPELINES = {"text-classification": ("text-classification", "AutoPeftModelForSequenceClassification",
                                     "AutoModelForSequenceClassification"),
             "image-classification": ("image-classification", "AutoPeftModel", "AutoModelForImageClassification"),
             "object-detection": ("object-detection", None, None)}
MAX_NAME = 96  # the Hub's limit on a repo name


def repo_name(*parts: str) -> str:
    """A Hub repo name from parts: characters the Hub refuses become '-', no '--' or '..', no '-'/'.' at the ends."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(str(p) for p in parts if p))
    name = re.sub(r"-{2,}", "-", re.sub(r"\.{2,}", ".", name)).strip("-.")
    return name[:MAX_NAME].strip("-.")


def model_repo(org: str, r: dict) -> str:
    """ORG/<suite>-<model>-<mode>-n<budget>-s<seed>-<run_id[:8]> (the run_id's prefix keeps two benchmarks of one
    suite apart); a name over the Hub's limit drops the model."""
    tail = (f"{r['mode']}-n{r.get('train_samples')}-s{r['seed']}", r["run_id"][:8])
    name = repo_name(r["suite"], r["model"], *tail)
    return f"{org}/{name if name.endswith(r['run_id'][:8]) else repo_name(r['suite'], *tail)}"


def leaderboard_repo(org: str, suite: str) -> str:
    """The dataset repo the cards link to: where `report --publish DIR --push-to-hub` puts the suite's leaderboard."""
    return f"{org}/{repo_name('transferbench', suite)}"


def check(org: str, saving: bool) -> None:
    """Everything the push needs that can be known before training: an org name the Hub accepts, the Hub switched
    on, a token, and runs that save their models (`saving`)."""
    import huggingface_hub
    import huggingface_hub.constants  # not an attribute of the package until imported (ENVIRONMENT.md)
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        if not org or "/" in org:
            raise HFValidationError("give a user or organization name, without '/'")
        validate_repo_id(f"{org}/x")
    except HFValidationError as err:
        first = str(err).splitlines()[0]
        raise UserError(f"--push-models {org!r} is not a Hub user or organization: {first}") from None
    if not saving:
        raise UserError("--push-models pushes the models the runs save: set save_models: final (in the suite's "
                        "defaults, or --set defaults.save_models=final)")
    if huggingface_hub.constants.HF_HUB_OFFLINE:
        raise UserError("--push-models: the Hub is switched off here (HF_HUB_OFFLINE=1); run where the Hub is "
                        "reachable, without HF_HUB_OFFLINE")
    if not huggingface_hub.get_token():
        raise UserError("--push-models needs a Hugging Face token with write access: run `hf auth login` or set "
                        "HF_TOKEN")


def _base_model(r: dict) -> Optional[str]:
    """The starting model as a Hub id, where it is one (an alias of Hub weights, or a Hub id as given)."""
    model = r["model"]
    if model in HUB_IDS:
        return HUB_IDS[model]
    if re.fullmatch(r"[\w.-]+/[\w.-]+", model) and not Path(model).exists():
        return model
    return None


def _cell(board, r: dict) -> Optional[dict]:
    key = run_key(r)
    return next((c for c in board.cells if run_key(c) == key), None)


def library(folder: Path) -> str:
    """Which library's format a saved model is in: a peft adapter, a transformers or timm checkpoint (both write
    config.json: transformers' has a model_type, timm's an architecture), or an Ultralytics checkpoint."""
    if (folder / "adapter_config.json").is_file():
        return "peft"
    config = json.loads((folder / "config.json").read_text(encoding="utf-8")) if (folder / "config.json").is_file() \
        else {}
    return "transformers" if "model_type" in config else "timm" if "architecture" in config else "ultralytics"


def _usage(lib: str, repo: str, task: str, base_repo: Optional[str]) -> str:
    _, peft_class, hf_class = PIPELINES.get(task, (None, "AutoPeftModel", "AutoModel"))
    if lib == "peft" and base_repo:
        return (f"from peft import {peft_class}\nmodel = {peft_class}.from_pretrained(\"{repo}\")  # the base from "
                f"{base_repo}, then the adapter and the head")
    if lib == "peft":  # a timm base: peft's Auto classes do not import timm
        return (f"import timm\nfrom peft import PeftModel\nbase = timm.create_model(...)  # the run's base model and "
                f"head (see the config below)\nmodel = PeftModel.from_pretrained(base, \"{repo}\")")
    if lib == "timm":
        return f"import timm\nmodel = timm.create_model(\"hf-hub:{repo}\", pretrained=True)"
    if lib == "ultralytics":
        return (f"from huggingface_hub import hf_hub_download\nfrom ultralytics import YOLO\n"
                f"model = YOLO(hf_hub_download(\"{repo}\", \"last.pt\"))")
    return f"from transformers import {hf_class}\nmodel = {hf_class}.from_pretrained(\"{repo}\")"


def card(r: dict, board, org: str, base_repo: Optional[str] = None):
    """The model card of run `r` (a store record) as huggingface_hub.ModelCard: ModelCardData as its YAML (base
    model, library, pipeline, tags, the metric as a model-index result), then the numbers and the config."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    pipeline = PIPELINES.get(r["task"], (None,))[0]
    lib = library(Path(r["saved_model"]))
    adapter = lib == "peft"
    repo = model_repo(org, r)
    dataset = str(r["dataset"])
    hub_dataset = dataset[len("hub:"):] if dataset.startswith("hub:") else None
    cell = _cell(board, r)
    data = ModelCardData(
        base_model=base_repo or _base_model(r), library_name=lib,
        pipeline_tag=pipeline, datasets=[hub_dataset] if hub_dataset else None, metrics=[r["metric_name"]],
        tags=["transferbench", str(r["mode"]), str(r["task"])], model_name=repo.split("/", 1)[1],
        eval_results=None if r.get("metric") is None else [EvalResult(
            task_type=pipeline or str(r["task"]), dataset_type=hub_dataset or dataset, dataset_name=dataset,
            metric_type=r["metric_name"], metric_value=r["metric"], dataset_split="test", source_name="transferbench",
            source_url=f"https://huggingface.co/datasets/{leaderboard_repo(org, r['suite'])}")])
    board_id = leaderboard_repo(org, r["suite"])
    if cell is not None and cell["n"]:
        over = (f"{fmt.metric(cell['metric_mean'])} {fmt.spread(cell)} over seeds "
                f"{', '.join(str(s) for s in cell['seeds'])}")
        vs = fmt.delta(cell)
    else:
        over, vs = "not in the leaderboard (no evaluated run)", "-"
    load = _usage(lib, repo, r["task"], base_repo)
    on_hub = f" (`{_base_model(r)}`)" if _base_model(r) not in (None, r["model"]) else ""
    config = json.dumps(r.get("config") or {}, indent=2, sort_keys=True, default=str)
    versions = ", ".join(f"{k} {v}" for k, v in sorted(((r.get("env") or {}).get("versions") or {}).items()))
    body = f"""
# {repo.split("/", 1)[1]}

A transferbench run: **{r['model']}**{on_hub} trained in mode **{r['mode']}** on `{dataset}` ({r['task']}) with a
budget of **{r.get('train_samples')} labelled examples**, seed {r['seed']} (suite `{r['suite']}`, run_id `{r['run_id']}`).
{("This repo holds the peft adapter and the head it trains in full" + (f"; its base is `{base_repo}` (the starting "
  "model with this task's head and label maps)." if base_repo else ".")) if adapter else
 f"This repo holds the trained model ({lib})."}

## Results

| | {r['metric_name']} ({"higher" if r.get("higher_is_better", True) else "lower"} is better) |
|---|---|
| this run (test split) | {fmt.metric(r['metric'])} |
| its leaderboard cell (mean ± std) | {over} |
| Δ vs scratch at this budget (95% Welch interval) | {vs} |

The whole comparison (every mode, budget and seed, with verdicts):
[datasets/{board_id}](https://huggingface.co/datasets/{board_id}), published by
`transferbench report results/{r['suite']} --publish DIR --push-to-hub {board_id}`.

## Use

```python
{load}
```

## Training

{_count(r.get('params_trainable'))} of {_count(r.get('params_total'))} parameters trained;
{fmt.num(r.get('train_seconds'), '{:.1f}')} s of training on {r.get('device_name')} ({r.get('num_processes')} process(es), precision {r.get('mixed_precision')});
transferbench at git commit {(r.get('env') or {}).get('git_commit') or 'unknown'}; {versions}.

The run's resolved config (transferbench's run spec; its hash is the run_id):

```json
{config}
```
"""
    return ModelCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _count(n) -> str:
    return "?" if n is None else f"{n:,}"


def base_card(r: dict):
    """The card of an adapters' base repo: what it is and why it exists."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(base_model=_base_model(r), library_name="transformers",
                         pipeline_tag=PIPELINES.get(r["task"], (None,))[0], tags=["transferbench"])
    return ModelCard(f"""---\n{data.to_yaml()}\n---\n
# Base model of transferbench adapters

**{r['model']}** with the head of a {r['task']} task on `{r['dataset']}` (its `num_labels`, `id2label` and
`label2id`), as a run starts from it before training. The {r['suite']} suite's adapters of this model name this repo
in their adapter_config.json, so peft's Auto classes build their base from it with no arguments; each adapter brings
its own trained head (peft's modules_to_save), which replaces the one here.
""")


def pushable(records: list[dict]) -> list[dict]:
    """The runs with a saved model on disk (status ok, save_models: final)."""
    return [r for r in records if r.get("status") == "ok" and r.get("saved_model")
            and Path(r["saved_model"]).is_dir()]


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def push(results_dir: Path, org: str, api=None) -> list[str]:
    """Push every saved model of the results folder's store to ORG (repos created when missing, one commit each):
    adapters' bases first (once per base folder), then each model with its card. Returns one line per repo."""
    from huggingface_hub import CommitOperationAdd, HfApi

    from transferbench.runners.train.hf_save import adapter_base

    records = Store(results_dir).records()
    todo = pushable(records)
    if not todo:
        return [f"--push-models: no saved model in {results_dir} to push (runs with save_models: final save them)"]
    board = build(records)
    api = api or HfApi()
    bases: dict[str, str] = {}  # base folder -> its repo id
    lines = []
    for r in todo:
        folder = Path(r["saved_model"])
        base = adapter_base(folder)
        base_repo = None
        if base is not None and Path(base).is_dir():
            if base not in bases:
                bases[base] = f"{org}/{repo_name(r['suite'], r['model'], Path(base).name)}"
                _commit(api, bases[base], [CommitOperationAdd(str(p.relative_to(base)), str(p))
                                           for p in _files(Path(base))]
                        + [CommitOperationAdd("README.md", str(base_card(r)).encode())],
                        f"transferbench: base model of the {r['suite']} adapters of {r['model']}")
                lines.append(f"pushed base {Path(base).name} to https://huggingface.co/{bases[base]}")
            base_repo = bases[base]
        repo = model_repo(org, r)
        ops = [CommitOperationAdd(str(p.relative_to(folder)), str(p)) for p in _files(folder)
               if p.name not in ("README.md", "adapter_config.json" if base_repo else "")]
        if base_repo:  # the uploaded adapter names its base by Hub id (the local folder it names means nothing there)
            config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
            config["base_model_name_or_path"] = base_repo
            ops.append(CommitOperationAdd("adapter_config.json", (json.dumps(config, indent=2, sort_keys=True)
                                                                   + "\n").encode()))
        ops.append(CommitOperationAdd("README.md", str(card(r, board, org, base_repo)).encode()))
        _commit(api, repo, ops, f"transferbench run {r['run_id']} ({r['mode']}, {r.get('train_samples')} examples, "
                                f"seed {r['seed']})")
        lines.append(f"pushed {r['run_id']} to https://huggingface.co/{repo}")
    return lines


def _commit(api, repo_id: str, operations: list, message: str) -> None:
    import httpx
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_repo(repo_id, repo_type="model", exist_ok=True)
        api.create_commit(repo_id, operations, commit_message=message, repo_type="model")
    except (HfHubHTTPError, httpx.HTTPError, OSError, ValueError) as err:  # unreachable, 401/403, refused
        first = str(err).strip().splitlines()[0] if str(err).strip() else "no detail"
        raise UserError(f"--push-models {repo_id}: {type(err).__name__}: {first[:300]}; the runs are recorded and "
                        f"their models saved: push again with the same command when that is fixed") from None
