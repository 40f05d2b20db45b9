"""Bad suite input (YAML, schema, registry names, files, paths, flags, --set): one actionable line on stderr, exit
code 2, no traceback, the store untouched.

The table runs the CLI's `main` in this process (a subprocess costs ~10 s of imports here); stderr is captured
at the file-descriptor level, so library warnings would count as extra lines just as in a terminal. One case
at the end goes through the real console entry point in a subprocess."""
import pytest

from helpers import KEEP, cli


GOOD = "\n".join([
    "name: bad",
    "defaults: {seeds: [0], epochs: 1, batch_size: 16, lr: default}",
    "benchmarks:",
    "  - task: text-classification",
    "    dataset: builtin:topics",
    "    models: [all-minilm-l6-v2]",
    "    modes: [finetune]",
    "    train_samples: [32]",
])


STORE = KEEP + "\n"  # one finished run, a whole record


TORN = STORE + '{"run_id": "half", "sta\n'


def _with(old, new):
    assert old in GOOD
    return GOOD.replace(old, new)


# name: (suite text ({tmp} = the test's folder), extra CLI arguments, what the one line must say)
CASES = {
    # the YAML itself
    "malformed yaml": (_with("seeds: [0]", "seeds: [0"), [], "malformed YAML at line 2"),
    "empty file": ("", [], "a suite must be a YAML mapping with 'name' and 'benchmarks'"),
    "a list, not a mapping": ("- name: bad\n", [], "a suite must be a YAML mapping"),
    "python tag (safe loader)": ("name: !!python/object/apply:os.system ['touch {tmp}/pwned']\n" + GOOD[10:], [],
                                 "could not determine a constructor for the tag"),
    # schema: unknown keys, wrong types, bad budgets
    "unknown top-level key": (_with("benchmarks:", "benchmark:"), [], "unknown key 'benchmark' (did you mean 'benchmarks'?)"),
    "unknown key": (_with("epochs: 1", "epoch: 1"), [], "unknown key 'defaults.epoch' (did you mean 'epochs'?)"),
    "wrong type": (_with("epochs: 1", "epochs: many"), [], "defaults.epochs: Input should be a valid number"),
    "wrong type of list": (_with("seeds: [0]", "seeds: zero"), [], "defaults.seeds: Input should be a valid list"),
    "negative epochs": (_with("epochs: 1", "epochs: -1"), [], "defaults.epochs: Input should be greater than 0"),
    "zero max_steps": (_with("epochs: 1", "max_steps: 0"), [], "defaults.max_steps: Input should be greater than 0"),
    "negative max_seconds": (GOOD + "\n    max_seconds: -5", [], "benchmarks[0].max_seconds: Input should be greater"),
    "negative budget": (_with("[32]", "[-32]"), [], "benchmarks[0].train_samples[0]: Input should be greater than 0"),
    "fraction above 1": (_with("train_samples: [32]", "train_fraction: [1.5]"), [], "less than or equal to 1"),
    "budget above the data": (_with("[32]", "[100000]"), [], "train_samples 100000 exceeds the 2400"),
    "unknown scheduler": (GOOD + "\n    scheduler: cosin", [], "'linear', 'cosine', 'constant' or"),
    "target without a value": (GOOD + "\n    target: {metric: accuracy}", [],
                               "missing required key 'benchmarks[0].target.value'"),
    "target stop not a boolean": (GOOD + "\n    target: {metric: accuracy, value: 0.9, stop: maybe}", [],
                                  "benchmarks[0].target.stop: Input should be a valid boolean"),
    "target on an unknown metric": (GOOD + "\n    target: {metric: bleu, value: 1}", [], "target metric 'bleu'"),
    "negative oom_retries": (_with("epochs: 1", "oom_retries: -1"), [], "defaults.oom_retries: Input should be"),
    "indivisible batch": (GOOD + "\n    grad_accum: 3", [], "batch_size 16 is not divisible by processes (1) x "
                                                          "grad_accum (3); choose a multiple of 3"),
    # names resolved against registries, with a suggestion
    "unknown task": (_with("task: text-classification", "task: text-clasification"), [],
                     "unknown task 'text-clasification' (did you mean 'text-classification'?)"),
    "unknown mode": (_with("[finetune]", "[fine-tune]"), [], "unknown mode 'fine-tune' (did you mean 'finetune'?)"),
    "unknown builtin dataset": (_with("builtin:topics", "builtin:topic"), [],
                                "unknown built-in dataset 'builtin:topic' (did you mean 'topics'?)"),
    "unknown pretrain stage": (_with("[all-minilm-l6-v2]", "[pretrain:nope]"), [],
                               "no pretrain stage 'nope' (the suite has no pretrain section)"),
    "bad task_args": (GOOD + "\n    task_args: {max_len: 8}", [], "'max_len'"),
    "import that fails": ("imports: [no_such_module_here]\n" + GOOD, [], "imports: cannot import 'no_such_module_here'"),
    # files, folders, the network
    "missing local dataset": (_with("builtin:topics", "./no/such/data.csv"), [], "not found"),
    "csv without the label column": (_with("builtin:topics", "{source: {tmp}/data.csv, columns: {text: sentence}}"),
                                     [], "has no column 'label' (columns: sentence, topic); set dataset.columns.label"),
    "offline hub dataset": (_with("builtin:topics", "hub:ag_news"), [], "cannot be loaded from the Hub here"),
    "offline hub model": (_with("all-minilm-l6-v2", "google-bert/bert-base-uncased"), [],
                          "cannot be downloaded from the Hub here"),
    "model with untrusted code": (_with("[all-minilm-l6-v2]", "[{tmp}/custom]"), [],
                                  "needs its own code (auto_map in its config)"),
    "unreadable store line": (GOOD, [], "runs.jsonl:2 is not a result record (a torn or hand-edited line); fix or "
                                        "delete that line"),
    # paths: nothing a suite says writes outside the results folder
    "suite name leaving the results dir": (_with("name: bad", "name: ../../outside"), [], "is not a plain name"),
    "stage name with a path": (GOOD + "\npretrain:\n  ../up: {task: text-classification, dataset: builtin:topics, "
                                      "model: all-minilm-l6-v2}", [], "pretrain['../up']: '../up' is not a plain name"),
    "results dir is a file": (GOOD, ["--results-dir", "{tmp}/a-file"], "is a file; give a folder"),
    # flags
    "shard 0 of 3": (GOOD, ["--shard", "0/3"], "--shard must look like I/N with 1 <= I <= N (got '0/3')"),
    "shard 4 of 3": (GOOD, ["--shard", "4/3"], "(got '4/3')"),
    "shard not a fraction": (GOOD, ["--shard", "half"], "(got 'half')"),
    "negative price": (GOOD, ["--price-per-device-hour", "-1"], "--price-per-device-hour must be >= 0"),
    # Hugging Face names (TrainingArguments / peft): aliases where the meaning is the same, a pointer where not
    "alias and its key together": (_with("epochs: 1", "epochs: 1, num_train_epochs: 2"), [],
                                   "defaults: 'num_train_epochs' is another name for 'epochs': give one of them"),
    "per-device batch name": (_with("epochs: 1", "epochs: 1, per_device_train_batch_size: 8"), [],
                              "unknown key 'defaults.per_device_train_batch_size' (batch_size is the effective batch"),
    "one-letter key, no guess": ("r: 8\n" + GOOD, [], "unknown key 'r' (choose from: benchmarks, defaults"),
    "alias with a bad value": (GOOD + "\n    learning_rate: -1.0", [], "benchmarks[0].lr: a learning rate is a finite number above 0, 'auto' (searched), 'default' (the mode's) or a list of rates to search (got -1.0)"),
    # --set KEY=VALUE: validated like the file, the message names the --set item
    "--set past the list": (GOOD, ["--set", "benchmarks.1.epochs=2"],
                            "--set benchmarks.1.epochs: benchmarks is a list of 1; '1' is not an index"),
    "--set unknown key": (GOOD, ["--set", "defaults.epoch=2"],
                          "--set defaults.epoch=2: unknown key 'defaults.epoch' (did you mean 'epochs'?)"),
    "--set bad value": (GOOD, ["--set", "benchmarks.0.epochs=-3"],
                        "--set benchmarks.0.epochs=-3: benchmarks[0].epochs: Input should be greater than 0"),
    "--set bad alias value": (GOOD, ["--set", "defaults.learning_rate=fast"],
                              "--set defaults.learning_rate=fast: defaults.lr: a learning rate is a finite number above 0"),
    "--set without a value": (GOOD, ["--set", "defaults.epochs"], "--set 'defaults.epochs': give KEY=VALUE"),
    "--set malformed value": (GOOD, ["--set", "defaults.seeds=[0,"], "--set defaults.seeds: malformed YAML"),
    "--set into a scalar": (GOOD, ["--set", "name.first=1"], "--set name.first: 'name' is 'bad', not a mapping"),
    "--set an unknown mode": (GOOD, ["--set", "benchmarks.0.modes=[finetune, lroa]"], "unknown mode 'lroa' (did you "
                                                                                      "mean 'lora'?)"),
}


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """The files some cases point at, and a store holding one finished run."""
    import datasets

    from helpers import custom_code_checkpoint

    datasets.disable_progress_bars()  # as the CLI does before it imports datasets; here another test did first

    (tmp_path / "data.csv").write_text("sentence,topic\n" + "".join(f"text {i},t{i % 2}\n" for i in range(40)))
    custom_code_checkpoint(tmp_path / "custom")
    monkeypatch.setenv("CUSTOM_CODE_MARKER", str(tmp_path / "pwned"))
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "runs.jsonl").write_text(STORE)
    return tmp_path


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_one_line_exit_2_and_the_store_untouched(name, workspace, capfd):
    from transferbench.runners.cli import main

    text, args, message = CASES[name]
    store = workspace / "res" / "runs.jsonl"
    if name == "unreadable store line":
        store.write_text(TORN)
    before = {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file()}
    (workspace / "suite.yaml").write_text(text.replace("{tmp}", str(workspace)))
    argv = ["run", str(workspace / "suite.yaml"), "--results-dir", str(workspace / "res"), *args]
    code = main([a.replace("{tmp}", str(workspace)) for a in argv])  # an uncaught exception fails the test
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("transferbench: error: "), err
    assert message in err[0], err[0]
    assert {p: p.read_bytes() for p in workspace.rglob("*") if p.is_file() and p.name != "suite.yaml"} == \
        {p: b for p, b in before.items() if p.name != "suite.yaml"}  # nothing written, nothing lost
    assert not (workspace / "pwned").exists() and not (workspace.parent / "outside").exists()


def test_every_case_of_the_table_is_a_different_input():
    inputs = [(text, tuple(args)) for text, args, _ in CASES.values()]
    assert len(set(inputs)) == len(inputs), [n for n, (t, a, _) in CASES.items() if inputs.count((t, tuple(a))) > 1]


@pytest.mark.slow
def test_console_entry_point_prints_one_line(tmp_path):
    """Through the real `python -m transferbench`: no traceback, no library noise, exit 2."""
    proc = cli("run", tmp_path / "nope.yaml")
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"transferbench: error: suite file not found: {tmp_path / 'nope.yaml'} (run `transferbench list` to see "
        "the shipped suites)")
    (tmp_path / "s.yaml").write_text(_with("[finetune]", "[fine-tune]"))
    proc = cli("run", tmp_path / "s.yaml", "--results-dir", tmp_path / "res")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and "did you mean" in proc.stderr
    proc = cli("report", tmp_path)
    assert proc.returncode == 2 and "no results store" in proc.stderr
