"""Bad input: one line on stderr, exit code 2, no traceback, the store untouched."""
import pytest

from helpers import cli, write_suite

GOOD = "\n".join([
    "name: bad",
    "defaults: {seeds: [0], epochs: 1, batch_size: 16}",
    "benchmarks:",
    "  - task: text-classification",
    "    dataset: builtin:topics",
    "    models: [all-minilm-l6-v2]",
    "    modes: [finetune]",
    "    train_samples: [32]",
])

CASES = {
    "unknown task": (GOOD.replace("task: text-classification", "task: text-clasification"),
                     "unknown task 'text-clasification' (did you mean 'text-classification'?)"),
    "unknown mode": (GOOD.replace("[finetune]", "[fine-tune]"), "unknown mode 'fine-tune' (did you mean 'finetune'?)"),
    "unknown builtin dataset": (GOOD.replace("builtin:topics", "builtin:topic"),
                                "unknown built-in dataset 'builtin:topic' (did you mean 'topics'?)"),
    "unknown key": (GOOD.replace("epochs: 1", "epoch: 1"), "unknown key 'defaults.epoch' (did you mean 'epochs'?)"),
    "yaml type error": (GOOD.replace("epochs: 1", "epochs: many"), "defaults.epochs"),
    "malformed yaml": (GOOD.replace("seeds: [0]", "seeds: [0"), "malformed YAML at line"),
    "negative budget": (GOOD.replace("[32]", "[-32]"), "benchmarks[0].train_samples[0]"),
    "budget above the data": (GOOD.replace("[32]", "[100000]"), "train_samples 100000 exceeds the 2400"),
    "offline hub dataset": (GOOD.replace("builtin:topics", "hub:ag_news"), "cannot be loaded from the Hub here"),
    "offline hub model": (GOOD.replace("all-minilm-l6-v2", "google-bert/bert-base-uncased"),
                          "cannot be downloaded from the Hub here"),
    "missing local dataset": (GOOD.replace("builtin:topics", "./no/such/data.csv"), "not found"),
    "bad task_args": (GOOD + "\n    task_args: {max_len: 8}", "'max_len'"),
    "target on an unknown metric": (GOOD + "\n    target: {metric: bleu, value: 1}", "target metric 'bleu'"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_suite_is_one_line_and_exit_2(name, tmp_path):
    text, message = CASES[name]
    (tmp_path / "suite.yaml").write_text(text)
    store = tmp_path / "res" / "runs.jsonl"
    store.parent.mkdir()
    store.write_text('{"run_id": "keep", "status": "ok"}\n')
    proc = cli("run", tmp_path / "suite.yaml", "--results-dir", tmp_path / "res")
    assert proc.returncode == 2, proc.stderr[-3000:]
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("transferbench: error:"), proc.stderr[-3000:]
    assert message in err[0]
    assert "Traceback" not in proc.stderr
    assert store.read_text() == '{"run_id": "keep", "status": "ok"}\n'


def test_csv_without_the_label_column(tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("sentence,topic\n" + "".join(f"text number {i},t{i % 2}\n" for i in range(40)))
    suite = write_suite(tmp_path / "s.yaml", "all-minilm-l6-v2", modes="[finetune]", budget="[8]",
                        dataset=f"{{source: {data}, columns: {{text: sentence}}}}")
    proc = cli("run", suite, "--results-dir", tmp_path / "res")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"transferbench: error: dataset '{data}' has no column 'label' "
                                   "(columns: sentence, topic); set dataset.columns.label")


def test_local_csv_with_named_columns_trains(tiny_bert, tmp_path):
    data = tmp_path / "data.csv"
    data.write_text("sentence,topic\n" + "".join(f"{'good' if i % 2 else 'bad'} thing {i},{'pos' if i % 2 else 'neg'}\n"
                                                 for i in range(60)))
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes="[finetune]", budget="[32]",
                        dataset=f"{{source: {data}, columns: {{text: sentence, label: topic}}}}")
    proc = cli("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0")
    assert proc.returncode == 0, proc.stderr[-2000:]
    from transferbench.results import Store

    (record,) = Store(tmp_path / "res").records()
    assert record["eval_samples"] == 12  # a single file: 20% held out for evaluation
    assert record["train_samples"] == 32 and record["cost_usd"] == 0


def test_missing_suite_file_and_report_dir(tmp_path):
    proc = cli("run", tmp_path / "nope.yaml")
    assert proc.returncode == 2 and "suite file not found" in proc.stderr
    proc = cli("report", tmp_path)
    assert proc.returncode == 2 and "no results store" in proc.stderr


def test_indivisible_batch_is_a_failed_row(tiny_bert, tmp_path):
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes="[linear-probe]",
                        extra="    grad_accum: 3")
    proc = cli("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0")
    assert proc.returncode == 1
    from transferbench.results import Store

    (record,) = Store(tmp_path / "res").records()
    assert record["status"] == "failed" and "not divisible" in record["error"]
