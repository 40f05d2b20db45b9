"""`run --push-models ORG`: each saved model or adapter goes to the Hub with a model card (huggingface_hub's
ModelCard), tested offline against a stand-in for HfApi that keeps what would be uploaded; the uploaded adapter,
laid out as the Hub would serve it, reloads with peft's Auto class and predicts as the trained model did."""
import json
from pathlib import Path

import pytest
import torch

from helpers import run_main, write_suite
from transferbench.results import Store

ORG = "my-org"


class CapturingApi:
    """What HfApi.create_repo / create_commit were asked to do: repo ids and, per repo, path -> bytes."""

    def __init__(self):
        self.repos, self.files, self.messages = [], {}, {}

    def create_repo(self, repo_id, repo_type=None, exist_ok=False):
        assert repo_type == "model" and exist_ok
        self.repos.append(repo_id)

    def create_commit(self, repo_id, operations, commit_message, repo_type=None):
        assert repo_id in self.repos  # created first
        files = self.files.setdefault(repo_id, {})
        for op in operations:
            src = op.path_or_fileobj
            files[op.path_in_repo] = src if isinstance(src, bytes) else Path(src).read_bytes()
        self.messages[repo_id] = commit_message


@pytest.fixture
def hub(monkeypatch):
    """The Hub switched on with a token, and HfApi replaced by the capturing stand-in."""
    import huggingface_hub
    import huggingface_hub.constants

    api = CapturingApi()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(huggingface_hub, "HfApi", standing_in_for_hfapi(api))
    return api


def standing_in_for_hfapi(api: CapturingApi) -> type:
    """A class to put in HfApi's place whose instances are `api` (a class: transformers annotates `HfApi | None`)."""
    class Api(CapturingApi):
        def __new__(cls, *args, **kwargs):
            return api
    return Api


def _suite(tmp_path, model, extra="    save_models: final\n"):
    return write_suite(tmp_path / "s.yaml", model, modes="[scratch, lora]", seeds="[0, 1]", budget="[32]",
                       extra=extra)


def test_push_models_uploads_each_adapter_with_its_card_and_base(tiny_bert, tmp_path, hub, monkeypatch):
    from huggingface_hub import ModelCard
    from peft import AutoPeftModelForSequenceClassification

    results = tmp_path / "res"
    assert run_main("run", _suite(tmp_path, tiny_bert), "--results-dir", results, "--push-models", ORG) == 0
    records = {(r["mode"], r["seed"]): r for r in Store(results).records()}
    lora = records[("lora", 0)]
    base_repos = [r for r in hub.repos if "-base-" in r]
    assert len(base_repos) == 1  # one base for the suite's adapters of one model and label set
    model_repos = [r for r in hub.repos if r not in base_repos]
    assert len(model_repos) == 4 and all(r.startswith(f"{ORG}/fixture-") for r in model_repos)
    repo = next(r for r in model_repos if r.endswith(lora["run_id"][:8]))
    assert repo.split("/")[1].startswith("fixture-") and "-lora-n32-s0-" in repo

    files = hub.files[repo]
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "README.md"} <= set(files)
    assert json.loads(files["adapter_config.json"])["base_model_name_or_path"] == base_repos[0]  # a Hub id there
    assert {"config.json", "model.safetensors", "README.md"} <= set(hub.files[base_repos[0]])
    assert "Base model of transferbench adapters" in hub.files[base_repos[0]]["README.md"].decode()
    base_config = json.loads(hub.files[base_repos[0]]["config.json"])  # the task's head and label maps
    labels = [base_config["id2label"][str(i)] for i in range(4)]
    assert len(base_config["id2label"]) == 4 and base_config["label2id"] == {n: i for i, n in enumerate(labels)}

    text = files["README.md"].decode()
    card = ModelCard(text)
    assert card.data.base_model == base_repos[0] and card.data.library_name == "peft"
    assert card.data.pipeline_tag == "text-classification" and "lora" in card.data.tags
    (result,) = card.data.eval_results
    assert result.metric_type == "accuracy" and result.metric_value == pytest.approx(lora["metric"])
    assert f"https://huggingface.co/datasets/{ORG}/transferbench-fixture" in text
    assert f"| this run (test split) | {lora['metric']:.4f} |" in text
    assert "over seeds 0, 1" in text and "[" in text.split("Δ vs scratch at this budget")[1].splitlines()[0]
    assert '"run_id"' not in text and '"mode": "lora"' in text  # the resolved config, as JSON
    assert "AutoPeftModelForSequenceClassification.from_pretrained" in text

    scratch = next(r for r in model_repos if r.endswith(records[("scratch", 0)]["run_id"][:8]))
    assert {"config.json", "model.safetensors", "tokenizer.json", "README.md"} <= set(hub.files[scratch])
    full = ModelCard(hub.files[scratch]["README.md"].decode())
    assert full.data.library_name == "transformers" and "AutoModelForSequenceClassification" in full.text
    assert "baseline" in full.text  # scratch is the baseline its Δ is measured against

    # the uploaded repos laid out as the Hub serves them (ORG/NAME resolves as a local folder from here): the adapter
    # reloads from its repo id alone, base included, and predicts as the trained model saved on disk did
    for repo_id, repo_files in hub.files.items():
        for name, content in repo_files.items():
            (tmp_path / "hub" / repo_id / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "hub" / repo_id / name).write_bytes(content)
    monkeypatch.chdir(tmp_path / "hub")
    from_hub = AutoPeftModelForSequenceClassification.from_pretrained(repo).eval()
    saved = AutoPeftModelForSequenceClassification.from_pretrained(lora["saved_model"]).eval()
    assert from_hub.config.id2label == saved.config.id2label and from_hub.config.num_labels == 4
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(repo)
    batch = tok(["the market rallied on strong earnings", "the striker scored twice in the final"],
                return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.allclose(from_hub(**batch).logits, saved(**batch).logits, atol=1e-6)


@pytest.mark.parametrize("flag, extra, env, message", [
    ("a/b", "    save_models: final\n", {}, "--push-models 'a/b' is not a Hub user or organization"),
    (ORG, "", {}, "--push-models pushes the models the runs save: set save_models: final"),
    (ORG, "    save_models: final\n", {"HF_HUB_OFFLINE": True}, "the Hub is switched off here"),
    (ORG, "    save_models: final\n", {"HF_TOKEN": None}, "needs a Hugging Face token"),
])
def test_push_models_refuses_before_training(flag, extra, env, message, tiny_bert, tmp_path, hub, monkeypatch,
                                             capsys):
    import huggingface_hub.constants

    if "HF_HUB_OFFLINE" in env:
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    if "HF_TOKEN" in env:
        monkeypatch.delenv("HF_TOKEN")
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    results = tmp_path / "res"
    assert run_main("run", _suite(tmp_path, tiny_bert, extra), "--results-dir", results, "--push-models", flag) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (results / "runs.jsonl").exists() and hub.repos == []  # nothing trained, nothing pushed


def test_repo_names_are_ones_the_hub_accepts():
    from huggingface_hub.utils import validate_repo_id

    from transferbench.runners.report.hub_models import model_repo, repo_name

    record = dict(suite="quickstart", model="pretrain:glyphs-resnet", mode="linear-probe", train_samples=1438, seed=2,
                  run_id="0123456789abcdef")
    assert model_repo(ORG, record) == f"{ORG}/quickstart-pretrain-glyphs-resnet-linear-probe-n1438-s2-01234567"
    long = dict(record, model="/very/" + "deep/" * 30 + "checkpoint")
    assert model_repo(ORG, long) == f"{ORG}/quickstart-linear-probe-n1438-s2-01234567"
    for name in (model_repo(ORG, record), model_repo(ORG, long), f"{ORG}/{repo_name('a..b', '--c--')}"):
        validate_repo_id(name)
