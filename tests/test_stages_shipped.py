"""The default suite's pretrain stages ship as package data; each must be the output of the very stage spec
the suite declares (its run_id stamp), or the suite would silently use a checkpoint it did not describe."""
import json

from transferbench.config import load_suite
from transferbench.runners.cli import DEFAULT_SUITE
from transferbench.runners.orchestrate.stages import SHIPPED_STAGES, ensure_stage, shipped_stage
from transferbench.runners.orchestrate.suite import expand_runs


def _stages():
    return {r.stage.stage_name: r.stage for r in expand_runs(load_suite(DEFAULT_SUITE)) if r.stage}


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
    stage = _stages()["glyphs-resnet"]
    changed = stage.model_copy(update={"seed": stage.seed + 1})
    assert shipped_stage(changed) is None
    trained = []
    monkeypatch.setattr("transferbench.runners.orchestrate.stages.execute", lambda *a, **k: trained.append(a) or _Failed())
    try:
        ensure_stage(changed, log=lambda *a: None)
    except Exception as err:  # noqa: BLE001 - the fake training fails; what matters is that it was asked for
        assert "failed" in str(err)
    assert trained  # it went to train, not to the shipped folder
    assert ensure_stage(stage, log=lambda *a: None) == str(shipped_stage(stage))


class _Failed:
    status, error = "failed", "fake"
