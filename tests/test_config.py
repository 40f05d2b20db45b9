"""Suite schema, expansion into runs, run identity and shards."""
import pytest
import yaml

from transferbench.config import expand, load_suite, parse_suite, shard
from transferbench.errors import UserError
from transferbench.modes import MODES

LRS = {name: m.default_lr for name, m in MODES.items()}

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
    runs = expand(parse_suite(SUITE), LRS)
    assert len(runs) == 2 * 2 * 2 * 3
    assert [r.train_samples for r in runs[:6]] == [64] * 6  # smallest budget first
    by_mode = {r.mode: r for r in runs}
    assert by_mode["scratch"].hyper.lr == 1e-3  # defaults layer
    assert by_mode["finetune"].hyper.lr == 5e-5  # mode layer wins
    assert by_mode["lora"].hyper.lora_r == 4 and by_mode["lora"].hyper.lr == 1e-3
    assert all(r.hyper.epochs == 3 for r in runs)  # benchmark layer beats defaults
    assert runs[0].task_args == {"max_length": 16, "extra": 1}  # task_args merge
    assert len({r.run_id for r in runs}) == len(runs)


def test_mode_default_lr_when_no_layer_sets_one():
    suite = {**SUITE, "defaults": {"seeds": [0]}}
    runs = expand(parse_suite(suite), LRS)
    assert {r.mode: r.hyper.lr for r in runs} == {"scratch": LRS["scratch"], "finetune": 5e-5, "lora": LRS["lora"]}


def test_run_id_ignores_suite_name_and_price_but_not_hyper_parameters():
    a = expand(parse_suite(SUITE), LRS)[0]
    b = expand(parse_suite({**SUITE, "name": "other", "defaults": {**SUITE["defaults"], "price_per_device_hour": 3}}),
               LRS)[0]
    c = expand(parse_suite({**SUITE, "defaults": {**SUITE["defaults"], "lr": 2e-3}}), LRS)[0]
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
        expand(parse_suite(bad), LRS)


def test_malformed_yaml_reports_the_line(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("name: x\nbenchmarks: [\n  - {task: a\n")
    with pytest.raises(UserError, match=r"malformed YAML at line \d+"):
        load_suite(path)


def test_shipped_suites_validate_and_expand():
    from pathlib import Path

    for path in sorted((Path(__file__).parents[1] / "benchmarks").glob("*.yaml")):
        runs = expand(load_suite(path), LRS)
        assert runs, path
        assert yaml.safe_load(path.read_text())["name"] == runs[0].suite


def test_shards_partition_the_runs():
    runs = expand(parse_suite(SUITE), LRS)
    parts = [shard(runs, f"{i}/3") for i in (1, 2, 3)]
    ids = [r.run_id for p in parts for r in p]
    assert sorted(ids) == sorted(r.run_id for r in runs) and len(set(ids)) == len(ids)
    with pytest.raises(UserError):
        shard(runs, "4/3")
