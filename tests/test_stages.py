"""Pretrain stages: trained once and fed to runs, shipped stage checkpoints, corrupt cached stages."""
import dataclasses
import json
import textwrap

from helpers import run_main
from transferbench.config import load_suite
from transferbench.results import Store
from transferbench.runners.orchestrate.plan import plan_runs
from transferbench.runners.orchestrate.stages import ensure_stage, shipped_stage, SHIPPED_STAGES
from transferbench.runners.suites import DEFAULT_SUITE


def test_a_corrupt_cached_stage_is_rebuilt_and_the_old_folder_kept(tiny_bert, tmp_path, monkeypatch, capsys):
    """A truncated model.safetensors in the cache: found at preflight, rebuilt into a new version folder that
    replaces the stage's link in one rename; the corrupt folder is left for whoever may be reading it."""
    monkeypatch.setenv("TRANSFERBENCH_CACHE", str(tmp_path / "cache"))
    suite = tmp_path / "s.yaml"
    suite.write_text(textwrap.dedent(f"""
        name: stagefix
        defaults: {{seeds: [0], epochs: 1, batch_size: 8, lr: default}}
        pretrain:
          base: {{task: text-classification, dataset: builtin:topics, model: {tiny_bert}, mode: finetune,
                  train_samples: 16, task_args: {{max_length: 8}}}}
        benchmarks:
          - task: text-classification
            dataset: builtin:topics
            models: [pretrain:base]
            modes: [finetune]
            train_samples: [8]
            task_args: {{max_length: 8}}
        """))
    from transferbench.config import load_suite
    from transferbench.runners.orchestrate.stages import stage_dir

    stage = plan_runs(load_suite(suite))[0].spec.stage
    assert run_main("stages", suite) == 0
    folder = stage_dir(stage)
    real = folder.resolve()
    weights = real / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert run_main(*["run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0"]) == 0
    out = capsys.readouterr().out
    assert "the cached checkpoint is corrupt" in out and out.count("rebuilding it") == 1  # said once, not per check
    assert folder.is_symlink() and folder.resolve() != real and real.exists()  # swapped, the old one kept
    (rec,) = Store(tmp_path / "res").records(strict=True)
    assert rec["status"] == "ok"


def _stage_plans():
    return {p.stage.spec.stage_name: p.stage for p in plan_runs(load_suite(DEFAULT_SUITE)) if p.stage}


def _stages():
    return {name: plan.spec for name, plan in _stage_plans().items()}


def test_shipped_stages_are_stamped_with_the_quickstart_stage_specs():
    stages = _stages()
    assert set(stages) == {"glyphs-vit", "glyphs-resnet", "shapes-yolo"}
    for name, stage in stages.items():
        folder = shipped_stage(stage)
        assert folder is not None, f"{name}: nothing shipped for spec {stage.run_id}; run `transferbench stages --ship`"
        record = json.loads((folder / "stage_result.json").read_text())
        assert record["status"] == "ok" and record["run_id"] == stage.run_id
        spec = json.loads(stage.model_dump_json())
        for key in ("task", "dataset", "model", "mode", "seed", "train_samples", "hyper", "task_args"):
            assert record["config"][key] == spec[key], (name, key)  # trained from exactly this spec
        assert record["metric"] > 0.2  # it learned its source task
    shipped = sorted(p.name for p in SHIPPED_STAGES.iterdir() if p.is_dir())
    assert shipped == sorted(f"{n}-{s.run_id}" for n, s in stages.items())  # nothing stale ships


def test_a_changed_stage_spec_does_not_use_the_shipped_checkpoint(monkeypatch):
    plan = _stage_plans()["glyphs-resnet"]
    changed = dataclasses.replace(plan, spec=plan.spec.model_copy(update={"seed": plan.spec.seed + 1}))
    assert shipped_stage(changed.spec) is None
    trained = []
    monkeypatch.setattr("transferbench.runners.orchestrate.stages.execute", lambda *a, **k: trained.append(a) or _Failed())
    try:
        ensure_stage(changed, log=lambda *a: None)
    except Exception as err:  # noqa: BLE001 - the fake training fails; what matters is that it was asked for
        assert "failed" in str(err)
    assert trained  # it went to train, not to the shipped folder
    assert ensure_stage(plan, log=lambda *a: None) == str(shipped_stage(plan.spec))


class _Failed:
    status, error = "failed", "fake"
