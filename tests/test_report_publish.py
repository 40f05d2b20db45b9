"""`report --publish DIR` writes a Hugging Face dataset folder that `datasets.load_dataset(DIR)` loads back, with a
huggingface_hub DatasetCard; `--push-to-hub` uploads it through HfApi (tested up to the API call: no network)."""
import json

import pytest
import yaml
from helpers import fixture_records, rec, write_store

from transferbench.runners.cli import main


def test_published_folder_loads_back_with_datasets(tmp_path):
    from datasets import load_dataset

    records = fixture_records() + [rec("finetune", 3, 1)]  # an int metric must not split the column's type
    store, pub = write_store(tmp_path / "store", records), tmp_path / "pub"
    assert main(["report", str(store), "--publish", str(pub)]) == 0
    board = json.loads((store / "leaderboard.json").read_text())

    runs = load_dataset(str(pub), split="train", cache_dir=str(tmp_path / "cache"))  # the default config
    assert len(runs) == len(records)
    assert sorted(runs["run_id"]) == sorted(r["run_id"] for r in records)
    by_id = {row["run_id"]: row for row in runs}
    assert by_id["finetune-256-3"]["metric"] == 1.0 and by_id["finetune-64-1"]["metric"] == 0.86
    assert by_id["linear-probe-64-0"]["status"] == "failed" and by_id["linear-probe-64-0"]["error"] == (
        "RuntimeError: boom")
    assert json.loads(by_id["lora-64-2"]["config"])["hyper"] == {"lr": 1e-3, "epochs": 1}
    assert by_id["lora-64-2"]["curve"][1] == {"step": 2, "samples_seen": 64, "seconds": 4.5, "metric": 0.83}

    cells = load_dataset(str(pub), "cells", split="train", cache_dir=str(tmp_path / "cache"))
    assert len(cells) == len(board["cells"])
    for row, cell in zip(cells, board["cells"]):
        assert (row["train_samples"], row["mode"], row["n"]) == (cell["train_samples"], cell["mode"], cell["n"])
        assert (row["metric_mean"], row["delta_ci"], row["errors"]) == (
            cell["metric_mean"], cell["delta_ci"], cell["errors"])

    text = (pub / "README.md").read_text()
    meta = yaml.safe_load(text.split("---\n")[1])
    info = meta["transferbench"]
    assert info["suites"] == ["fixture"] and info["hardware"] == ["CPU: x"] and info["runs"] == len(records)
    assert info["versions"] == {"python": "3.11.2", "torch": "2.14.1"} and info["git_commits"] == ["abc123"]
    assert [c["config_name"] for c in meta["configs"]] == ["runs", "cells"]
    assert "transferbench run SUITE.yaml   # the suite named fixture: its file was not recorded" in text
    assert "benchmarks/fixture.yaml" not in text and "--publish DIR --push-to-hub USER/NAME" in text
    assert (store / "leaderboard.md").read_text() in text  # the card carries the same leaderboard
    assert sorted(p.name for p in (pub / "plots").iterdir()) == sorted(p.name for p in (store / "plots").iterdir())


SOURCE = {"file": "/data/suites/ner.yaml", "sha256": "ab" * 32, "imports": ["my_tasks"],
          "set": ["benchmarks.0.epochs=3"]}


def _with_source(records):
    """The fixture's runs as read from one suite file with an `imports:` module and local data."""
    return [{**r, "config": {**r["config"], "suite_source": SOURCE, "dataset": {"source": "/data/ner/train.csv"}}}
            for r in records]


def test_card_is_a_dataset_card_with_license_configs_and_the_real_suite_file(tmp_path):
    from huggingface_hub import DatasetCard

    from transferbench.runners.report.publish import card_problems

    store, pub = write_store(tmp_path / "store", _with_source(fixture_records())), tmp_path / "pub"
    assert main(["report", str(store), "--publish", str(pub)]) == 0
    card = DatasetCard.load(pub / "README.md")  # what the Hub parses: YAML metadata -> DatasetCardData
    assert card.data.license == "apache-2.0" and card.data.pretty_name == "Leaderboard: fixture"
    assert card.data.size_categories == "n<1K" and "transferbench" in card.data.tags
    assert [c["data_files"][0]["path"] for c in card.data.configs] == ["data/runs.jsonl", "data/cells.jsonl"]
    assert card.data.transferbench["runs"] == len(fixture_records())
    assert card_problems(pub) == []
    text = card.text
    assert ("transferbench run /data/suites/ner.yaml --set benchmarks.0.epochs=3   # suite fixture, sha256 "
            "abababababab") in text
    assert "imports `my_tasks`" in text and "`/data/ner/train.csv`" in text and "benchmarks/fixture.yaml" not in text
    # the offline check finds what the Hub would not show: a config whose file is missing, no license
    (pub / "data" / "cells.jsonl").unlink()
    (pub / "README.md").write_text((pub / "README.md").read_text().replace("license: apache-2.0\n", ""))
    assert card_problems(pub) == ["no license", "configs: cells: data file {'split': 'train', 'path': "
                                                "'data/cells.jsonl'} is not in the folder"]


@pytest.fixture
def hub_calls(monkeypatch):
    """HfApi's create_repo / upload_folder replaced by recorders, a token and the Hub switched on: no network."""
    import huggingface_hub
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import CommitInfo

    calls = []

    def create_repo(self, repo_id, **kw):
        calls.append(("create_repo", repo_id, kw))

    def upload_folder(self, **kw):
        from huggingface_hub import DatasetCard

        card = DatasetCard.load(f"{kw['folder_path']}/README.md")  # the card as uploaded
        calls.append(("upload_folder", kw, card.data.license, sorted(p.name for p in
                                                                     __import__("pathlib").Path(kw["folder_path"]).iterdir())))
        return CommitInfo(commit_url=f"https://huggingface.co/datasets/{kw['repo_id']}/commit/123", commit_message="m",
                          commit_description="", oid="123")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "hf_fake_token_for_the_test")
    return calls


def test_push_to_hub_creates_a_dataset_repo_and_uploads_the_folder(tmp_path, hub_calls, capsys):
    store, pub = write_store(tmp_path / "store", _with_source(fixture_records())), tmp_path / "pub"
    assert main(["report", str(store), "--publish", str(pub), "--push-to-hub", "someone/transfer-results"]) == 0
    (create, upload) = hub_calls
    assert create == ("create_repo", "someone/transfer-results", {"repo_type": "dataset", "exist_ok": True})
    _, kw, license_, files = upload
    assert kw["repo_id"] == "someone/transfer-results" and kw["repo_type"] == "dataset"
    assert kw["folder_path"] == str(pub) and license_ == "apache-2.0"
    assert {"README.md", "data", "leaderboard.html", "plots"} <= set(files)
    assert "pushed" in capsys.readouterr().out.splitlines()[-1]


@pytest.mark.parametrize("args, setup, message", [
    (["--push-to-hub", "a/b"], None, "--push-to-hub uploads the folder that --publish writes; add --publish DIR"),
    (["--publish", "{pub}", "--push-to-hub", "no-namespace"], None, "is not a Hub repo id"),
    (["--publish", "{pub}", "--push-to-hub", "bad/na me"], None, "is not a Hub repo id"),
    (["--publish", "{pub}", "--push-to-hub", "a/b"], "offline", "the Hub is switched off here (HF_HUB_OFFLINE=1)"),
    (["--publish", "{pub}", "--push-to-hub", "a/b"], "no token", "needs a Hugging Face token"),
    (["--publish", "{pub}", "--push-to-hub", "a/b"], "unreachable", "--push-to-hub a/b: ConnectError: no route"),
])
def test_a_push_that_cannot_happen_is_one_line_and_exit_2(args, setup, message, tmp_path, monkeypatch, capfd):
    import httpx
    import huggingface_hub
    from huggingface_hub import HfApi

    store, pub = write_store(tmp_path / "store", fixture_records()), tmp_path / "pub"
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", setup == "offline")
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "token"))  # not the developer's
    if setup == "no token":
        monkeypatch.delenv("HF_TOKEN")
    if setup == "unreachable":
        def refuse(self, *a, **k):
            raise httpx.ConnectError("no route to host")
        monkeypatch.setattr(HfApi, "create_repo", refuse)
    capfd.readouterr()
    code = main(["report", str(store), *[a.replace("{pub}", str(pub)) for a in args]])
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("transferbench: error: ") and message in err[0], err
    assert (pub / "README.md").exists() == (setup == "unreachable")  # refused up front: nothing written


FRESH_PUSH = """
import json, sys
from pathlib import Path
from transferbench.runners.cli import main

calls = []


def create_repo(self, repo_id, **kw):
    calls.append({"create_repo": repo_id, **kw})


def upload_folder(self, **kw):
    from huggingface_hub import DatasetCard

    folder = Path(kw["folder_path"])
    card = DatasetCard.load(folder / "README.md")
    calls.append({"upload_folder": kw["repo_id"], "repo_type": kw["repo_type"], "license": card.data.license,
                  "configs": card.data.configs, "files": sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                                                                if p.is_file())})
    return "https://huggingface.co/datasets/x/commit/1"


def patch_hfapi():  # when report's push imports HfApi, not before: check_push runs first, in a fresh process
    from huggingface_hub import HfApi

    HfApi.create_repo, HfApi.upload_folder = create_repo, upload_folder


import transferbench.runners.report.publish as publish
real_push = publish.push_to_hub
publish.push_to_hub = lambda *a: (patch_hfapi(), real_push(*a))[1]
code = main(sys.argv[1:])
Path(sys.argv[sys.argv.index("--publish") + 1] + ".calls.json").write_text(json.dumps({"code": code, "calls": calls}))
"""


def test_push_to_hub_in_a_fresh_process_uploads_the_folder_and_its_card(tmp_path):
    """Issue 25: in a fresh process `huggingface_hub.constants` is not an attribute of the package until imported, so
    check_push failed with AttributeError for every valid repo id. HfApi is replaced only once the push starts."""
    import subprocess
    import sys

    from helpers import HANG_GUARD_S

    store, pub = write_store(tmp_path / "store", _with_source(fixture_records())), tmp_path / "pub"
    env = {**__import__("os").environ, "HF_HUB_OFFLINE": "0", "HF_TOKEN": "hf_fake_token_for_the_test",
           "HF_TOKEN_PATH": str(tmp_path / "token")}
    proc = subprocess.run([sys.executable, "-c", FRESH_PUSH, "report", str(store), "--publish", str(pub),
                           "--push-to-hub", "someone/transfer-results"], capture_output=True, text=True, env=env,
                          timeout=HANG_GUARD_S)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    got = json.loads((tmp_path / "pub.calls.json").read_text())
    assert got["code"] == 0
    create, upload = got["calls"]
    assert create == {"create_repo": "someone/transfer-results", "repo_type": "dataset", "exist_ok": True}
    assert upload["upload_folder"] == "someone/transfer-results" and upload["repo_type"] == "dataset"
    assert upload["license"] == "apache-2.0" and [c["config_name"] for c in upload["configs"]] == ["runs", "cells"]
    assert {"README.md", "data/runs.jsonl", "data/cells.jsonl", "leaderboard.html"} <= set(upload["files"])
    assert "pushed" in proc.stdout.splitlines()[-1]
