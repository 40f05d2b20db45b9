"""The text-classification task: local CSV data, tokenisation."""
import json

from helpers import write_suite


def test_local_csv_with_named_columns_trains(tiny_bert, tmp_path, capsys):
    from transferbench.results import Store
    from transferbench.runners.cli import main

    data = tmp_path / "data.csv"
    data.write_text("sentence,topic\n" + "".join(f"{'good' if i % 2 else 'bad'} thing {i},{'pos' if i % 2 else 'neg'}\n"
                                                 for i in range(60)))
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes="[finetune]", budget="[32]",
                        dataset=f"{{source: {data}, columns: {{text: sentence, label: topic}}}}")
    assert main(["run", str(suite), "--results-dir", str(tmp_path / "res"), "--price-per-device-hour", "0"]) == 0
    (record,) = Store(tmp_path / "res").records()
    assert record["eval_samples"] == 12  # a single file: 20% held out for evaluation
    assert record["train_samples"] == 32 and record["cost_usd"] == 0
    assert json.loads((tmp_path / "res" / "runs.jsonl").read_text())["run_id"] == record["run_id"]


def test_tokenisation_is_done_once_per_dataset_and_tokenizer(tiny_bert):
    from transferbench.config import DatasetSpec
    from transferbench.tasks import get_task

    task = get_task("text-classification")({"max_length": 16})
    first = task.load_data(DatasetSpec(source="builtin:topics"), tiny_bert)
    assert task.load_data(DatasetSpec(source="builtin:topics"), tiny_bert) is first  # every run of a suite reuses it
    assert max(len(x) for x in first.train["input_ids"]) <= 16 and first.labels == sorted(first.labels)
