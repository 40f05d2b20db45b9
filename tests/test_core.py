"""Store, cost model, nested budgets, shipped metrics, built-in data."""
import json
import multiprocessing as mp

import numpy as np
import pytest

from helpers import result
from transferbench import cost, metrics, sources
from transferbench.results import Store


def _result(run_id, status="ok"):
    return result(run_id, schema_version=1, status=status,
                  curve=[{"step": i, "metric": 0.5} for i in range(200)])  # long lines: interleaving would show


def _writer(path, k):
    store = Store(path)
    for i in range(100):
        store.append(_result(f"{k}-{i}"))


def test_store_resume_set_and_corrupt_line_is_skipped(tmp_path, capsys):
    store = Store(tmp_path)
    store.append(_result("a"))
    store.append(_result("b", status="failed"))
    with open(store.path, "a") as f:
        f.write('{"run_id": "c", "sta')  # what a crash inside a non-atomic writer would leave
    assert store.completed() == {"a"}  # failed runs are redone; the torn line is ignored, with a warning
    assert "not a JSON record" in capsys.readouterr().err


def test_concurrent_writers_never_interleave(tmp_path):
    procs = [mp.get_context("spawn").Process(target=_writer, args=(tmp_path, k)) for k in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    lines = (tmp_path / "runs.jsonl").read_text().splitlines()
    assert len(lines) == 300
    assert sorted(json.loads(line)["run_id"] for line in lines) == sorted(f"{k}-{i}" for k in range(3) for i in range(100))


def test_cost_model():
    price = cost.lookup("NVIDIA H100 80GB HBM3")
    assert price.per_device_hour > 0 and price.date and price.source.startswith("http")
    assert cost.lookup("CPU: AMD EPYC 7B13").per_device_hour > 0
    assert cost.lookup("NVIDIA H100 80GB HBM3", override=1.5) == cost.Price(1.5, None, "user override")
    assert cost.lookup("Some Unknown Accelerator").per_device_hour is None
    hours = cost.device_hours(1800, 4)
    assert hours == 2.0 and cost.cost_usd(hours, cost.Price(3.0, None, "x")) == 6.0


def test_budgets_are_nested_and_seeded():
    small, large = sources.subset_indices(1000, 7, 64), sources.subset_indices(1000, 7, 256)
    assert large[:64] == small and len(set(large)) == 256
    assert sources.subset_indices(1000, 8, 64) != small
    assert sources.budget_size(1000, None, 0.25) == 250 and sources.budget_size(1000, None, None) == 1000


def test_shipped_metrics_agree_with_sklearn():
    from sklearn.metrics import accuracy_score, f1_score

    rng = np.random.default_rng(0)
    refs, preds = rng.integers(0, 5, 300).tolist(), rng.integers(0, 5, 300).tolist()
    assert metrics.load("accuracy").compute(predictions=preds, references=refs)["accuracy"] == pytest.approx(
        accuracy_score(refs, preds))
    assert metrics.load("f1").compute(predictions=preds, references=refs)["f1"] == pytest.approx(
        f1_score(refs, preds, average="macro"))


def test_builtin_topics_is_deterministic_and_holds_out_test_wording():
    import datasets

    from transferbench import builtin
    from transferbench.config import DatasetSpec

    dd = sources.load(DatasetSpec(source="builtin:topics"))
    assert dd["train"].num_rows + dd["eval"].num_rows >= 2000
    assert len(set(dd["train"]["label"])) >= 4
    words = lambda split: {w.strip(".,").lower() for t in dd[split]["text"] for w in t.split()}  # noqa: E731
    shared = words("train") & words("eval")
    # words in both splits are template words that every class uses equally often
    per_class = {c: sum(t.lower().count(" the ") for t, l in zip(dd["train"]["text"], dd["train"]["label"]) if l == c)
                 for c in set(dd["train"]["label"])}
    assert len(shared) < 20 and max(per_class.values()) <= 1.5 * min(per_class.values())
    again = datasets.load_dataset("csv", data_files=str(builtin.materialize("topics") / "train.csv"))["train"]
    assert again["text"] == dd["train"]["text"]


def test_price_keys_match_whole_words_only():
    assert cost.lookup("NVIDIA L4").per_device_hour == cost.price_table()["devices"]["L4"]["price"]
    assert cost.lookup("NVIDIA L40S").per_device_hour is None  # not the L4's price
    assert cost.lookup("NVIDIA A100-SXM4-80GB").per_device_hour == cost.price_table()["devices"]["A100"]["price"]


def test_tokenisation_is_done_once_per_dataset_and_tokenizer(tiny_bert):
    from transferbench.config import DatasetSpec
    from transferbench.tasks import get_task

    task = get_task("text-classification")({"max_length": 16})
    first = task.load_data(DatasetSpec(source="builtin:topics"), tiny_bert)
    assert task.load_data(DatasetSpec(source="builtin:topics"), tiny_bert) is first  # every run of a suite reuses it
    assert max(len(x) for x in first.train["input_ids"]) <= 16 and first.labels == sorted(first.labels)
