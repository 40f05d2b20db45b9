"""`report --publish DIR` writes a Hugging Face dataset folder that `datasets.load_dataset(DIR)` loads back."""
import json

import yaml
from test_report import fixture_records, rec, write_store

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
    assert "transferbench run benchmarks/fixture.yaml" in text and "hf upload USER/NAME DIR . --repo-type dataset" in text
    assert (store / "leaderboard.md").read_text() in text  # the card carries the same leaderboard
    assert sorted(p.name for p in (pub / "plots").iterdir()) == sorted(p.name for p in (store / "plots").iterdir())
