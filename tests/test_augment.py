"""Image augmentation (task_args.augment of image-classification): training batches only, a new draw every epoch
from the run's seed, part of the run_id only when set, refused where it cannot apply."""
import json

import pytest
import torch

from helpers import result, run_main, write_store
from transferbench.config import DatasetSpec, parse_suite
from transferbench.results import Store
from transferbench.runners.orchestrate.plan import plan_runs
from transferbench.tasks import get_task
from transferbench.tasks._image_data import ImageCollate

MODEL = "timm:resnet10t"  # an architecture only: scratch needs no weights


def _bench(task_args: dict, modes=("scratch",)) -> dict:
    return {"task": "image-classification", "dataset": "builtin:digits", "models": [MODEL], "modes": list(modes),
            "train_samples": [32], "task_args": task_args}


def _ids(task_args: dict) -> set:
    return {p.run_id for p in plan_runs(parse_suite({"name": "a", "defaults": {"seeds": [0, 1]},
                                                     "benchmarks": [_bench(task_args)]}))}


def test_the_run_id_changes_only_when_augment_is_set():
    plain = _ids({"image_size": 32})
    assert _ids({"image_size": 32}) == plain
    trivial, light = _ids({"image_size": 32, "augment": "trivial"}), _ids({"image_size": 32, "augment": "light"})
    assert len({frozenset(plain), frozenset(trivial), frozenset(light)}) == 3
    assert plain.isdisjoint(trivial) and trivial.isdisjoint(light)


@pytest.fixture(scope="module")
def digits():
    """(the task's data with augment: trivial, 8 training examples)."""
    data = get_task("image-classification")({"image_size": 32, "augment": "trivial"}).load_data(
        DatasetSpec(source="builtin:digits"), MODEL)
    return data, [data.train[i] for i in range(8)]


def _epochs(data, examples, seed: int, n: int = 3) -> list:
    """`n` epochs' batches of the same examples through a fresh training collate, torch seeded as the loop seeds it."""
    torch.manual_seed(seed)
    collate = ImageCollate(32, data.collate.mean.flatten().tolist(), data.collate.std.flatten().tolist(), "trivial")
    return [collate(examples)["pixel_values"] for _ in range(n)]


def test_training_batches_are_drawn_anew_each_epoch_and_evaluation_is_untouched(digits):
    data, examples = digits
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first, second = data.collate(examples), data.collate(examples)
    assert torch.equal(torch.get_rng_state(), before)  # the training's own random draws are left alone
    assert first["pixel_values"].shape == (8, 3, 32, 32) and torch.equal(first["labels"], second["labels"])
    assert not torch.equal(first["pixel_values"], second["pixel_values"])
    plain = data.eval_collate(examples)["pixel_values"]
    assert torch.equal(plain, data.eval_collate(examples)["pixel_values"])
    raw = torch.stack([e["pixel_values"] for e in examples]).permute(0, 3, 1, 2).float() / 255
    assert torch.allclose(plain, (raw - data.eval_collate.mean) / data.eval_collate.std)
    assert data.eval_collate.augment is None and not torch.equal(plain, first["pixel_values"])


def test_the_same_seed_gives_the_same_augmented_batches(digits):
    data, examples = digits
    same = _epochs(data, examples, seed=3), _epochs(data, examples, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(*same))
    other = _epochs(data, examples, seed=4)
    assert not any(torch.equal(a, b) for a, b in zip(same[0], other))


def _suite(tmp_path, bench: dict, name="aug"):
    path = tmp_path / f"{name}.yaml"  # written as JSON, which YAML reads
    path.write_text(json.dumps({"name": name, "defaults": {"seeds": [0], "max_steps": 4, "batch_size": 16,
                                                           "eval_samples": 64, "eval_every": 100},
                                "benchmarks": [bench]}))
    return path


def test_a_short_run_trains_with_augmentation_reruns_identically_and_records_it(tmp_path):
    bench = {**_bench({"image_size": 32, "augment": "trivial"}), "modes": {"scratch": {"lr": 2e-3}}}
    runs = []
    for folder in ("a", "b"):
        assert run_main("run", _suite(tmp_path, bench), "--results-dir", tmp_path / folder,
                        "--price-per-device-hour", "0") == 0
        runs.append(Store(tmp_path / folder).records())
    (a,), (b,) = runs
    assert a["status"] == "ok" and a["config"]["task_args"]["augment"] == "trivial"
    assert a["run_id"] == b["run_id"] and a["metric"] == b["metric"]  # the same seed: the same augmented stream
    assert [p["train_loss"] for p in a["curve"]] == [p["train_loss"] for p in b["curve"]]
    bench["task_args"] = {"image_size": 32}
    assert run_main("run", _suite(tmp_path, bench), "--results-dir", tmp_path / "c", "--price-per-device-hour",
                    "0") == 0
    (c,) = Store(tmp_path / "c").records()
    assert c["run_id"] != a["run_id"] and c["curve"][-1]["train_loss"] != a["curve"][-1]["train_loss"]


REFUSED = {
    "cached features": ({**_bench({"image_size": 32, "augment": "trivial"}, ["linear-probe"]),
                         "modes": {"linear-probe": {"cached_features": True}}},
                        "cached_features and task_args.augment do not combine"),
    "text": ({"task": "text-classification", "dataset": "builtin:topics", "models": ["all-minilm-l6-v2"],
              "modes": ["scratch"], "train_samples": [16], "task_args": {"augment": "trivial"}},
             "task_args for text-classification: 'augment'"),
    "detection": ({"task": "object-detection", "dataset": "builtin:shapes", "models": ["yolov8n.yaml"],
                   "modes": ["scratch"], "train_samples": [16], "task_args": {"augment": "trivial"}},
                  "task_args for object-detection: 'augment'"),
}


@pytest.mark.parametrize("case", REFUSED)
@pytest.mark.parametrize("dry", [False, True])
def test_augment_where_it_cannot_apply_is_one_line_exit_2_and_the_store_stays(case, dry, tmp_path, capsys):
    bench, expected = REFUSED[case]
    store = write_store(tmp_path / "res", [json.loads(result("keep", metric=0.5, status="ok").to_json())])
    before = (store / "runs.jsonl").read_bytes()
    code = run_main("run", _suite(tmp_path, bench), "--results-dir", store, *(["--dry-run"] if dry else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and expected in err[0], err
    assert (store / "runs.jsonl").read_bytes() == before


@pytest.mark.slow
def test_a_dry_run_with_augment_imports_no_torch(tmp_path):
    from test_startup import _imported

    suite = _suite(tmp_path, _bench({"image_size": 32, "augment": "trivial"}))
    assert "torch" not in _imported("run", suite, "--dry-run", "--results-dir", tmp_path / "dry")[0]
