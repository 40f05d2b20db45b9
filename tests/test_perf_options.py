"""Speed options (compile, channels_last, gradient_checkpointing), FLOPs, MFU and suite timing (issue 7)."""
import json

import pytest
import torch

from transferbench import flops, speed
from transferbench.config import Hyper, RunSpec, parse_suite
from transferbench.errors import UserError
from transferbench.runners.orchestrate import execute, stages, suite as runner
from transferbench.runners.train import hf_loop
from transferbench.runners.report import outputs as report
from transferbench.tasks import get_task


def _suite(bench: dict, **defaults):
    return parse_suite({"name": "perf", "defaults": {"seeds": [0], "batch_size": 16, "max_steps": 2, "lr": "default", **defaults},
                        "benchmarks": [bench]})


def _image_spec(stage: str = "glyphs-resnet", mode: str = "finetune", **hyper) -> RunSpec:
    model = str(next(stages.SHIPPED_STAGES.glob(f"{stage}-*")))
    (spec,) = runner.expand_runs(_suite(dict(task="image-classification", dataset="builtin:digits", models=[model],
                                      modes=[mode], train_samples=[32]), **hyper))
    return spec


def test_new_options_at_their_defaults_leave_run_ids_and_configs_unchanged():
    (spec,) = runner.expand_runs(_suite(dict(task="text-classification", dataset="builtin:topics", models=["m"],
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
    spec = _image_spec(channels_last=True)
    res = execute.execute(spec)
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
    from transferbench.tasks.image_classification import TimmClassifier

    timm_model = get_task("image-classification")({}).build_model("timm:resnet10t", ["a", "b"], pretrained=False)
    assert isinstance(timm_model, TimmClassifier)
    speed.enable_gradient_checkpointing(timm_model)
    assert timm_model.model.grad_checkpointing is True and _uses_gradient_checkpointing(timm_model)
    with pytest.raises(UserError, match="gradient_checkpointing"):
        speed.enable_gradient_checkpointing(torch.nn.Linear(2, 2))


def test_compile_is_applied_by_accelerate_and_unwrapped_for_saving(monkeypatch):
    spec = _image_spec(compile=True)
    monkeypatch.setattr(execute, "COMPILE_BACKEND", "eager")
    accelerator = execute.accelerator_for(spec)
    model = torch.nn.Linear(3, 2)
    prepared = accelerator.prepare(model)
    assert isinstance(prepared, torch._dynamo.eval_frame.OptimizedModule)
    assert accelerator.unwrap_model(prepared, keep_torch_compile=False) is model
    assert not isinstance(execute.accelerator_for(_image_spec()).prepare(torch.nn.Linear(3, 2)),
                          torch._dynamo.eval_frame.OptimizedModule)
    assert execute.new_result(spec, accelerator).compile is True


def test_foreign_loop_refuses_the_hf_loop_options():
    suite = _suite(dict(task="object-detection", dataset="builtin:shapes", models=["yolov8n.yaml"],
                        modes=["scratch"], train_samples=[8]), compile=True)
    with pytest.raises(UserError, match="compile apply to the Hugging Face loop only"):
        runner.preflight(runner.expand_runs(suite))


def test_suite_timing_is_recorded_and_reported(tiny_bert, tmp_path):
    suite = _suite(dict(task="text-classification", dataset="builtin:topics", models=[tiny_bert],
                        task_args={"max_length": 16}, modes=["linear-probe"], train_samples=[32]))
    results = runner.run_suite(suite, tmp_path, log=lambda *a: None)
    (row,) = [json.loads(line) for line in (tmp_path / "suite_timing.jsonl").read_text().splitlines()]
    work = results[0].train_seconds + results[0].eval_seconds
    assert row["runs"] == 1 and row["train_eval_seconds"] == pytest.approx(work, abs=1e-3)
    assert row["wall_seconds"] >= row["suite_seconds"] >= results[0].wall_seconds > work
    assert row["overhead_ratio"] == pytest.approx(row["wall_seconds"] / row["train_eval_seconds"], rel=0.02)  # both rounded to ms
    text = report.report([tmp_path])
    assert f"runs' train + eval {work:.1f} s" in text and "| MFU |" in text


def test_report_shows_mean_mfu_per_cell():
    from transferbench.runners.report.tables import to_markdown

    base = dict(task="t", dataset="d", model="m", train_samples=8, mode="finetune", status="ok", metric=0.5,
                metric_name="accuracy", higher_is_better=True, config={})
    board = report.build([dict(base, run_id="a", seed=0, mfu=0.2), dict(base, run_id="b", seed=1, mfu=0.3)])
    assert board.cells[0]["mfu"] == pytest.approx(0.25)
    assert to_markdown(board).count("| 25.00% |") == 1  # the last column of its row
