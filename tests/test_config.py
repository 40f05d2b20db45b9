"""Suite schema, expansion into runs, run identity and shards, Hugging Face aliases, --set overrides."""
import pytest
import yaml

from transferbench.config import load_suite, parse_suite
from transferbench.errors import UserError
from transferbench.runners.orchestrate.plan import plan_runs


def expand(suite, shard=None):
    """The suite's run specs, as the run plans hold them (runners/orchestrate/plan.py)."""
    return [p.spec for p in plan_runs(suite, shard)]


def test_run_ids_of_suites_without_the_new_keys_are_unchanged():
    from transferbench.config import Hyper, RunSpec, Target

    spec = RunSpec(suite="s", task="t", dataset={"source": "d"}, model="m", mode="scratch", seed=0, hyper=Hyper(),
                   target=Target(metric="accuracy", value=0.9))
    assert spec.run_id == "5f38bfc589c76686"  # as computed before `stop` and `oom_retries` existed
    assert spec.model_copy(update={"oom_retries": 3}).run_id == spec.run_id  # a fault policy, not the run
    stopping = spec.model_copy(update={"target": Target(metric="accuracy", value=0.9, stop=True)})
    assert stopping.run_id != spec.run_id  # stopping at the target changes what is measured


SUITE = {
    "name": "t",
    "defaults": {"seeds": [0, 1], "epochs": 2, "lr": 1e-3, "task_args": {"max_length": 16}},
    "benchmarks": [{
        "task": "text-classification", "dataset": "builtin:topics", "models": ["a", "b"],
        "modes": {"scratch": None, "finetune": {"lr": 5e-5}, "lora": {"lora_r": 4}},
        "train_samples": [256, 64], "epochs": 3, "task_args": {"extra": 1},
    }],
}


def test_expansion_is_models_x_budgets_x_seeds_x_modes_with_layered_overrides():
    runs = expand(parse_suite(SUITE))
    assert len(runs) == 2 * 2 * 2 * 3
    assert [r.train_samples for r in runs[:6]] == [64] * 6  # smallest budget first
    by_mode = {r.mode: r for r in runs}
    assert by_mode["scratch"].hyper.lr == 1e-3  # defaults layer
    assert by_mode["finetune"].hyper.lr == 5e-5  # mode layer wins
    assert by_mode["lora"].hyper.lora_r == 4 and by_mode["lora"].hyper.lr == 1e-3
    assert all(r.hyper.epochs == 3 for r in runs)  # benchmark layer beats defaults
    assert runs[0].task_args == {"max_length": 16, "extra": 1}  # task_args merge
    assert len({r.run_id for r in runs}) == len(runs)


def test_unset_lr_is_searched_on_a_loop_that_searches():
    """(A loop without a search gets the mode's default: tests/test_planning.py.)"""
    suite = {**SUITE, "defaults": {"seeds": [0]}}
    runs = expand(parse_suite(suite))
    assert {r.mode: r.hyper.lr for r in runs} == {"scratch": "auto", "finetune": 5e-5, "lora": "auto"}


def test_run_id_ignores_suite_name_and_price_but_not_hyper_parameters():
    a = expand(parse_suite(SUITE))[0]
    b = expand(parse_suite({**SUITE, "name": "other", "defaults": {**SUITE["defaults"], "price_per_device_hour": 3}}))[0]
    c = expand(parse_suite({**SUITE, "defaults": {**SUITE["defaults"], "lr": 2e-3}}))[0]
    assert a.run_id == b.run_id != c.run_id


@pytest.mark.parametrize("patch, message", [
    ({"defaults": {"epocs": 2}}, "unknown key 'defaults.epocs' (did you mean 'epochs'?)"),
    ({"defaults": {"epochs": "three"}}, "defaults.epochs"),
    ({"defaults": {"batch_size": -4}}, "defaults.batch_size"),
    ({"benchmarks": [{**SUITE["benchmarks"][0], "modes": {"lora": {"lora_rank": 4}}}]},
     "(did you mean 'lora_r'?)"),
    ({"benchmarks": [{**SUITE["benchmarks"][0], "train_fraction": [0.5]}]}, "not both"),
    ({"benchmarks": []}, "benchmarks"),
])
def test_invalid_suites_name_the_field(patch, message):
    with pytest.raises(UserError, match=None) as err:
        parse_suite({**SUITE, **patch})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_mode_suggests_the_closest():
    bad = {**SUITE, "benchmarks": [{**SUITE["benchmarks"][0], "modes": ["finetun"]}]}
    with pytest.raises(UserError, match="did you mean 'finetune'"):
        expand(parse_suite(bad))


def test_malformed_yaml_reports_the_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nbenchmarks: [\n  - {task: a\n")
    with pytest.raises(UserError, match=r"malformed YAML at line \d+"):
        load_suite(path)


def test_shipped_suites_validate_and_expand():
    from pathlib import Path

    for path in sorted((Path(__file__).parents[1] / "benchmarks").glob("*.yaml")):
        runs = expand(load_suite(path))
        assert runs, path
        assert yaml.safe_load(path.read_text())["name"] == runs[0].suite


def test_shards_partition_the_runs():
    runs = expand(parse_suite(SUITE))
    parts = [expand(parse_suite(SUITE), f"{i}/3") for i in (1, 2, 3)]
    ids = [r.run_id for p in parts for r in p]
    assert sorted(ids) == sorted(r.run_id for r in runs) and len(set(ids)) == len(ids)
    with pytest.raises(UserError):
        expand(parse_suite(SUITE), "4/3")


# The same suite spelled with Hugging Face TrainingArguments / peft LoraConfig names
HF_NAMES = {
    "name": "t",
    "defaults": {"seeds": [0, 1], "num_train_epochs": 2, "learning_rate": 1e-3, "task_args": {"max_length": 16}},
    "benchmarks": [{
        "task": "text-classification", "dataset": "builtin:topics", "models": ["a", "b"],
        "modes": {"scratch": None, "finetune": {"learning_rate": 5e-5},
                  "lora": {"r": 4, "lora_alpha": 16, "target_modules": ["query"]}},
        "train_samples": [256, 64], "num_train_epochs": 3, "task_args": {"extra": 1},
        "gradient_accumulation_steps": 2, "lr_scheduler_type": "cosine", "weight_decay": 0.0, "warmup_ratio": 0.2,
    }],
}


def test_hugging_face_names_are_aliases_and_leave_run_ids_unchanged():
    own = {**SUITE, "benchmarks": [{**SUITE["benchmarks"][0], "grad_accum": 2, "scheduler": "cosine",
                                    "weight_decay": 0.0, "warmup_ratio": 0.2,
                                    "modes": {"scratch": None, "finetune": {"lr": 5e-5},
                                              "lora": {"lora_r": 4, "lora_alpha": 16, "lora_targets": ["query"]}}}]}
    hf, ours = expand(parse_suite(HF_NAMES)), expand(parse_suite(own))
    assert [r.run_id for r in hf] == [r.run_id for r in ours]  # resolved before the run spec is hashed
    lora = next(r for r in hf if r.mode == "lora")
    assert (lora.hyper.lora_r, lora.hyper.lora_alpha, lora.hyper.lora_targets, lora.hyper.grad_accum,
            lora.hyper.scheduler, lora.hyper.epochs) == (4, 16, ["query"], 2, "cosine", 3)
    assert "lora_r" in lora.model_dump(mode="json")["hyper"] and "r" not in lora.model_dump(mode="json")["hyper"]
    # run_ids as the code before aliases and suite_source computed them (stores written then still resume)
    assert [r.run_id for r in expand(parse_suite(SUITE))[:3]] == [
        "419cf7ea9325915e", "eb0400e2745cec87", "c10be3dd336735e1"]


@pytest.mark.parametrize("layer, message", [
    ({"lr": 1e-3, "learning_rate": 1e-3}, "defaults: 'learning_rate' is another name for 'lr': give one of them"),
    ({"per_device_train_batch_size": 8}, "unknown key 'defaults.per_device_train_batch_size' (batch_size is the "
                                         "effective batch, per-device x processes x grad_accum"),
    ({"seed": 3}, "unknown key 'defaults.seed' (seeds takes a list"),
    ({"bf16": True}, "(mixed_precision: bf16)"),
    ({"learning_rat": 1e-3}, "(did you mean 'learning_rate'?)"),
])
def test_familiar_names_with_another_meaning_say_what_to_write(layer, message):
    with pytest.raises(UserError) as err:
        parse_suite({**SUITE, "defaults": layer})
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_one_letter_key_gets_no_guess():
    with pytest.raises(UserError) as err:  # 'r' is close to 'lr' by spelling only
        parse_suite({**SUITE, "x": 1})
    assert "did you mean" not in str(err.value) and "choose from:" in str(err.value)
    from transferbench.errors import did_you_mean

    assert "lr" not in did_you_mean("r", ["lr", "epochs"]).split("(")[0] and "did you" not in did_you_mean("r", ["lr"])
    assert did_you_mean("epocs", ["lr", "epochs"]) == " (did you mean 'epochs'?)"


def test_set_overrides_dotted_paths_with_yaml_values(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({**SUITE, "benchmarks": [{**SUITE["benchmarks"][0], "modes": ["scratch", "lora"]}]}))
    base = expand(load_suite(path))
    suite = load_suite(path, ["benchmarks.0.epochs=5", "defaults.seeds=[7]", "benchmarks.0.modes.lora.r=16",
                              "defaults.learning_rate=2.0e-3", "benchmarks.0.train_samples=32"])
    runs = expand(suite)
    assert len(base) == 2 * 2 * 2 * 2 and len(runs) == 2 * 1 * 1 * 2
    assert {r.seed for r in runs} == {7} and {r.train_samples for r in runs} == {32}
    assert {r.hyper.epochs for r in runs} == {5.0} and {r.hyper.lr for r in runs} == {2e-3}  # replaced `lr: 1e-3`
    assert {r.mode: r.hyper.lora_r for r in runs} == {"scratch": 8, "lora": 16}
    # the file and its overrides are recorded with every run (the published card's "Reproduce"), not hashed
    source = runs[0].suite_source
    assert source["file"] == str(path.resolve()) and source["set"][0] == "benchmarks.0.epochs=5"
    assert len(source["sha256"]) == 64 and runs[0].model_dump(mode="json")["suite_source"] == source
    same = expand(parse_suite(yaml.safe_load(path.read_text())))
    assert [r.run_id for r in same] == [r.run_id for r in base] and same[0].suite_source is None
    assert "suite_source" not in same[0].model_dump(mode="json")  # nothing recorded: the dump is as before


@pytest.mark.parametrize("item, message", [
    ("benchmarks.2.epochs=1", "--set benchmarks.2.epochs: benchmarks is a list of 1; '2' is not an index"),
    ("defaults.epoch=2", "--set defaults.epoch=2: unknown key 'defaults.epoch' (did you mean 'epochs'?)"),
    ("defaults.epochs=-1", "--set defaults.epochs=-1: defaults.epochs: Input should be greater than 0"),
    ("benchmarks.0.learning_rate=zero", "--set benchmarks.0.learning_rate=zero: benchmarks[0].lr: a learning rate is a finite number above 0"),
    ("defaults.seeds=[0", "--set defaults.seeds: malformed YAML"),
    ("defaults.epochs", "--set 'defaults.epochs': give KEY=VALUE"),
    ("name.x=1", "--set name.x: 'name' is 't', not a mapping or a list"),
])
def test_bad_set_items_name_the_key(item, message):
    with pytest.raises(UserError) as err:
        parse_suite(SUITE, "s.yaml", [item])
    assert message in str(err.value) and "\n" not in str(err.value)
