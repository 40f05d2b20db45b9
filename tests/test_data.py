"""Data: nested seeded budgets, shipped metrics, the built-in topics dataset."""
import numpy as np
import pytest

from transferbench import metrics, sources


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
