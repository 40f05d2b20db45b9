"""The training loop: gradient clipping, warm-up, performance options (compile, channels_last, gradient
checkpointing), FLOPs and MFU."""
import json
import subprocess
import sys

import pytest
import torch

from helpers import HANG_GUARD_S, write_suite
from transferbench import flops, speed
from transferbench.config import Hyper, parse_suite, RunSpec
from transferbench.errors import UserError
from transferbench.results import SCHEMA_VERSION, Store
from transferbench.runners.orchestrate import execute, stages, suite as runner
from transferbench.runners.orchestrate.plan import plan_runs
from transferbench.runners.orchestrate.preflight import preflight
from transferbench.runners.report import outputs as report
from transferbench.runners.train import hf_loop
from transferbench.tasks import get_task


def expand(suite):
    """The suite's run specs, as its run plans hold them."""
    return [p.spec for p in plan_runs(suite)]


def _text_suite(model: str, **defaults):
    return parse_suite({"name": "clip", "defaults": {"seeds": [0], "batch_size": 8, "max_steps": 3, "lr": 1e-2,
                                                      **defaults},
                        "benchmarks": [dict(task="text-classification", dataset="builtin:topics", models=[model],
                                            task_args={"max_length": 16}, modes=["finetune"], train_samples=[24])]})


def test_max_grad_norm_at_its_default_leaves_run_ids_unchanged_and_is_part_of_the_identity_otherwise():
    assert Hyper().max_grad_norm == 1.0 and "max_grad_norm" not in Hyper().model_dump()
    (default,) = expand(_text_suite("m"))
    (same,) = expand(_text_suite("m", max_grad_norm=1.0))
    (off,) = expand(_text_suite("m", max_grad_norm=0))
    (none,) = expand(_text_suite("m", max_grad_norm=None))
    assert same.run_id == default.run_id  # stores and shipped stage stamps written before clipping existed resume
    assert len({default.run_id, off.run_id, none.run_id}) == 3
    assert off.model_dump(mode="json")["hyper"]["max_grad_norm"] == 0
    assert none.hyper.max_grad_norm is None


def test_clipping_is_recorded_and_deterministic_per_seed(tiny_bert, tmp_path):
    runs = expand(_text_suite(tiny_bert)) + expand(_text_suite(tiny_bert, max_grad_norm=0))
    records = runner.run_suite(_text_suite(tiny_bert), tmp_path / "a", log=lambda *a: None)
    again = runner.run_suite(_text_suite(tiny_bert), tmp_path / "b", log=lambda *a: None)
    off = runner.run_suite(_text_suite(tiny_bert, max_grad_norm=0), tmp_path / "c", log=lambda *a: None)
    tight = runner.run_suite(_text_suite(tiny_bert, max_grad_norm=1e-4), tmp_path / "d", log=lambda *a: None)
    (rec,), (rec2,), (rec_off,), (rec_tight,) = records, again, off, tight
    assert rec.status == rec_off.status == "ok" and rec.schema_version == SCHEMA_VERSION >= 5
    assert rec.max_grad_norm == 1.0 and rec_off.max_grad_norm is None  # what was used, in a flat field
    assert rec_off.config["hyper"]["max_grad_norm"] == 0 and "max_grad_norm" not in rec.config["hyper"]
    assert rec.loss_curve == rec2.loss_curve and rec.metrics == rec2.metrics  # deterministic per seed
    assert rec_tight.max_grad_norm == 1e-4 and rec_tight.loss_curve[-1] != rec_off.loss_curve[-1]  # it clips
    assert [r.run_id for r in (rec, rec_off)] == [r.run_id for r in runs]
    (row,) = Store(tmp_path / "a").records()
    assert row["max_grad_norm"] == 1.0


WATCH_IMPORTS = """
import json, sys
from transferbench.results import Store
from transferbench.runners.orchestrate import preflight

events = []  # module names in the order Python first imports them, and where the warm-up and each run end


class Watch:
    def find_spec(self, name, path=None, target=None):
        events.append(name)


sys.meta_path.insert(0, Watch())
warm_up, append = preflight.warm_up, Store.append
preflight.warm_up = lambda plans: (warm_up(plans), events.append("<warmed up>"))[0]
Store.append = lambda self, result: (append(self, result), events.append("<recorded>"))[0]
from transferbench.runners.cli import main

code = main(sys.argv[2:])
open(sys.argv[1], "w").write(json.dumps(events))
sys.exit(code)
"""


def test_warm_up_keeps_start_up_costs_out_of_the_first_run(tiny_bert, tmp_path):
    """In a fresh process (as `transferbench run`), the first run (seed 0) pays no import of the model's module or
    of the metric modules: the warm-up before it imported them; the suite's timing has them."""
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes="[scratch]", seeds="[0, 1, 2]", budget="[32]")
    out = subprocess.run([sys.executable, "-c", WATCH_IMPORTS, tmp_path / "imports.json", "run", suite, "--results-dir",
                          tmp_path / "res"], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr[-3000:]
    recs = sorted(Store(tmp_path / "res").records(), key=lambda r: r["seed"])
    assert [r["seed"] for r in recs] == [0, 1, 2] and all(r["status"] == "ok" for r in recs)
    events = json.loads((tmp_path / "imports.json").read_text())
    assert events.count("<warmed up>") == 1 and events.count("<recorded>") == 3, events[-20:]
    warm = events.index("<warmed up>")
    first_run = events[warm + 1:events.index("<recorded>")]
    assert "transformers.models.bert.modeling_bert" in events[:warm]  # the warm-up imported the model's code
    late = [m for m in first_run if "bert" in m or "metric" in m or m.split(".")[0] in ("evaluate", "sklearn")]
    assert late == [], late  # ... so the first run imports none of it (nor the metric modules)
    (row,) = [json.loads(x) for x in (tmp_path / "res" / "suite_timing.jsonl").read_text().splitlines()]
    assert row["warmup_seconds"] > 0


def _suite(bench: dict, **defaults):
    return parse_suite({"name": "perf", "defaults": {"seeds": [0], "batch_size": 16, "max_steps": 2, "lr": "default", **defaults},
                        "benchmarks": [bench]})


def _image_plan(stage: str = "glyphs-resnet", mode: str = "finetune", **hyper):
    model = str(next(stages.SHIPPED_STAGES.glob(f"{stage}-*")))
    (plan,) = plan_runs(_suite(dict(task="image-classification", dataset="builtin:digits", models=[model],
                                    modes=[mode], train_samples=[32]), **hyper))
    return plan


def _image_spec(stage: str = "glyphs-resnet", mode: str = "finetune", **hyper) -> RunSpec:
    return _image_plan(stage, mode, **hyper).spec


def test_new_options_at_their_defaults_leave_run_ids_and_configs_unchanged():
    (spec,) = expand(_suite(dict(task="text-classification", dataset="builtin:topics", models=["m"],
                                 modes=["finetune"])))
    dump = spec.model_dump(mode="json")["hyper"]
    assert not {"compile", "channels_last", "gradient_checkpointing"} & set(dump)  # as in stores written before
    changed = {k: spec.model_copy(update={"hyper": spec.hyper.model_copy(update={k: True})}) for k in
               ("compile", "channels_last", "gradient_checkpointing")}
    assert len({spec.run_id, *(s.run_id for s in changed.values())}) == 4  # each option is part of the identity
    assert changed["compile"].model_dump()["hyper"]["compile"] is True
    assert Hyper.model_validate(changed["channels_last"].hyper.model_dump()).channels_last is True


def test_peak_table_and_mfu():
    assert flops.peak_flops("NVIDIA H100 80GB HBM3", "bf16") == pytest.approx(989.4e12)
    assert flops.peak_flops("NVIDIA H100 PCIe", "fp16") == pytest.approx(756.5e12)  # the longer key wins
    assert flops.peak_flops("NVIDIA L40S", "bf16") == pytest.approx(362.05e12)  # not L4
    assert flops.peak_flops("NVIDIA A100-SXM4-80GB", "bf16") == pytest.approx(312e12)
    assert flops.peak_flops("Tesla T4", "bf16") is None  # no bf16 tensor cores: no MFU rather than a wrong one
    assert flops.peak_flops("CPU: AMD EPYC", "no") is None
    assert flops.peak_flops("NVIDIA GH200 480GB", "bf16") is None  # not H200
    # 3e15 FLOPs in 2 s on 2 devices of 989.4 TFLOPS: 0.758 of the peak
    assert flops.mfu(3e15, 2.0, 989.4e12, 2) == pytest.approx(3e15 / 2.0 / (2 * 989.4e12))
    assert flops.mfu(None, 2.0, 989.4e12, 1) is None and flops.mfu(1e12, 1.0, None, 1) is None


def test_forward_flops_counts_matmuls_and_convolutions_without_touching_the_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.Flatten(),
                                torch.nn.Linear(8 * 8 * 8, 5))
    before = model[1].running_mean.clone()
    counted = flops.forward_flops(model, torch.randn(1, 3, 8, 8))
    conv, linear = 2 * (3 * 3 * 3) * 8 * (8 * 8), 2 * (8 * 8 * 8) * 5  # 2 x MACs
    assert counted == conv + linear
    assert model.training and torch.equal(model[1].running_mean, before)  # mode restored, statistics untouched


def test_image_run_records_counted_flops_options_and_no_cpu_mfu():
    plan = _image_plan(channels_last=True)
    spec = plan.spec
    res = execute.execute(plan)
    assert res.status == "ok", res.error
    task = get_task(spec.task)(spec.task_args)
    data, train_set, model = hf_loop.setup(spec, task, spec.model)
    forward = flops.forward_flops(model, pixel_values=torch.stack(
        [data.collate([train_set[0]])["pixel_values"][0]]))
    assert res.flops_estimate == pytest.approx(3 * forward * res.train_samples)  # 2 steps x 16 = the 32 samples
    assert res.channels_last and not res.compile and res.config["hyper"]["channels_last"] is True
    assert res.peak_flops is None and res.mfu is None  # CPU: no stated peak
    assert res.setup_seconds > 0 and res.wall_seconds >= res.setup_seconds + res.train_seconds


def test_channels_last_converts_the_model_and_the_image_batch():
    spec = _image_spec(channels_last=True)
    _, _, model = hf_loop.setup(spec, get_task(spec.task)(spec.task_args), spec.model)
    convs = [m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert any(not w.is_contiguous() for w in convs)  # NHWC, not NCHW (the same thing only for 1x1 kernels)
    batch = speed.batch_channels_last({"pixel_values": torch.randn(2, 3, 4, 4), "labels": torch.tensor([0, 1])})
    assert batch["pixel_values"].is_contiguous(memory_format=torch.channels_last)
    assert batch["labels"].tolist() == [0, 1]


def _uses_gradient_checkpointing(model: torch.nn.Module) -> bool:
    """Whether some module of `model` has checkpointing switched on (transformers' and timm's flags)."""
    return any(getattr(m, "gradient_checkpointing", False) is True or getattr(m, "grad_checkpointing", False) is True
               for m in model.modules())


def test_gradient_checkpointing_is_applied_and_still_trains_lora():
    spec = _image_spec("glyphs-vit", mode="lora", gradient_checkpointing=True)
    task = get_task(spec.task)(spec.task_args)
    data, train_set, model = hf_loop.setup(spec, task, spec.model)
    assert _uses_gradient_checkpointing(model)
    batch = data.collate([train_set[i] for i in range(4)])
    loss, _ = task.loss_and_logits(model, batch)
    loss.backward()  # frozen embeddings: non-reentrant checkpointing still reaches the adapters
    lora = [p for n, p in model.named_parameters() if "lora_B" in n and p.requires_grad]  # A gets none while B is 0
    assert lora and all(p.grad is not None and p.grad.abs().sum() > 0 for p in lora)
    plain = _image_spec("glyphs-vit", mode="lora")
    assert not _uses_gradient_checkpointing(hf_loop.setup(plain, task, plain.model)[2])


def test_gradient_checkpointing_on_timm_and_unsupported_models():
    from transferbench.tasks._image_torch import TimmClassifier

    timm_model = get_task("image-classification")({}).build_model("timm:resnet10t", ["a", "b"], pretrained=False)
    assert isinstance(timm_model, TimmClassifier)
    speed.enable_gradient_checkpointing(timm_model)
    assert timm_model.model.grad_checkpointing is True and _uses_gradient_checkpointing(timm_model)
    with pytest.raises(UserError, match="gradient_checkpointing"):
        speed.enable_gradient_checkpointing(torch.nn.Linear(2, 2))


def test_compile_is_applied_by_accelerate_and_unwrapped_for_saving(monkeypatch):
    from transferbench.runners.orchestrate.record import Measured, build_record

    plan = _image_plan(compile=True)
    spec = plan.spec
    monkeypatch.setattr(execute, "COMPILE_BACKEND", "eager")
    accelerator = execute.accelerator_for(spec)
    model = torch.nn.Linear(3, 2)
    prepared = accelerator.prepare(model)
    assert isinstance(prepared, torch._dynamo.eval_frame.OptimizedModule)
    assert accelerator.unwrap_model(prepared, keep_torch_compile=False) is model
    assert not isinstance(execute.accelerator_for(_image_spec()).prepare(torch.nn.Linear(3, 2)),
                          torch._dynamo.eval_frame.OptimizedModule)
    assert build_record(plan, None, Measured("CPU", 1, 1, {})).compile is True


def test_foreign_loop_refuses_the_hf_loop_options():
    suite = _suite(dict(task="object-detection", dataset="builtin:shapes", models=["yolov8n.yaml"],
                        modes=["scratch"], train_samples=[8]), compile=True)
    with pytest.raises(UserError, match="compile apply to the Hugging Face loop only"):
        preflight(plan_runs(suite))


def test_suite_timing_is_recorded_and_reported(tiny_bert, tmp_path):
    suite = _suite(dict(task="text-classification", dataset="builtin:topics", models=[tiny_bert],
                        task_args={"max_length": 16}, modes=["linear-probe"], train_samples=[32]))
    results = runner.run_suite(suite, tmp_path, log=lambda *a: None)
    (row,) = [json.loads(line) for line in (tmp_path / "suite_timing.jsonl").read_text().splitlines()]
    # cached features billed to the run but computed once are not spent twice: they leave the denominator
    work = results[0].train_seconds + results[0].eval_seconds - (results[0].charged_seconds or 0.0)
    assert row["charged_seconds"] == pytest.approx(results[0].charged_seconds or 0.0, abs=1e-3)
    assert row["runs"] == 1 and row["train_eval_seconds"] == pytest.approx(work, abs=1e-3)
    assert row["wall_seconds"] >= row["suite_seconds"] >= results[0].wall_seconds > work
    assert row["overhead_ratio"] == pytest.approx(row["wall_seconds"] / row["train_eval_seconds"], rel=0.02)  # both rounded to ms
    text = report.report([tmp_path])
    # CPU: no stated peak, so the MFU column is empty in every row: hidden, and the note says why
    assert f"runs' train + eval {work:.1f} s" in text
    assert "| MFU |" not in text and "MFU (no stated peak FLOPs for the device, as for CPUs)" in text
