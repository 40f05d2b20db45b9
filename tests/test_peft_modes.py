"""The peft family (any peft method as a mode, configured by peft's own config classes), the partial mode, and what a
run records about them: each trains only what it says, through the real loop; bad configs are one line before
anything trains."""
import copy
import json
from pathlib import Path

import pytest
import torch
import yaml
from accelerate import Accelerator

from helpers import run_main, write_suite
from transferbench.config import load_suite, parse_suite
from transferbench.hyper import Hyper
from transferbench.modes import apply, find_blocks, get_mode
from transferbench.tasks import get_task

METHODS = {  # mode name -> its suite settings
    "lora": {},
    "dora": {"peft": {"method": "lora", "use_dora": True, "r": 4}},
    "loha": {"peft": {"method": "loha", "r": 4}},
    "lokr": {"peft": {"method": "lokr", "r": 4}},
    "ia3": {"peft": {"method": "ia3"}},
    "vera": {"peft": {"method": "vera", "r": 16}},
    "partial": {"partial_blocks": 1},
    "linear-probe": {},
}


DEFAULTS = {"seeds": [0], "max_steps": 3, "batch_size": 8, "lr": 1e-2, "warmup_ratio": 0, "eval_samples": 8}


def _suite(ref, modes: dict, defaults=DEFAULTS) -> list:
    data = {"name": "peft", "defaults": defaults,
            "benchmarks": [{"task": "text-classification", "dataset": "builtin:topics", "models": [ref],
                            "task_args": {"max_length": 16}, "modes": modes, "train_samples": [16]}]}
    return _specs(parse_suite(data))


def _specs(suite) -> list:
    from transferbench.runners.orchestrate.plan import plan_runs

    return [plan.spec for plan in plan_runs(suite)]


def _trained(spec):
    """(state before training, state after, the trained model): the real loop's setup and training."""
    from transferbench.runners.train import hf_loop

    task = get_task(spec.task)(spec.task_args)
    data, train_set, model = hf_loop.setup(spec, task, spec.model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    out = hf_loop.train(spec, task, model, train_set, data, Accelerator(cpu=True), 0)
    after = out.model.state_dict()
    return before, after, trainable, out.model, data


@pytest.fixture(scope="module")
def trained(tiny_bert):
    """Every method trained for 3 steps on the same 16 examples, at a large lr (every trainable tensor moves)."""
    return {spec.mode: (spec, *_trained(spec)) for spec in _suite(tiny_bert, METHODS)}


def _head(name: str) -> bool:
    return name.startswith("classifier.") or ".classifier." in name


@pytest.mark.parametrize("mode", list(METHODS))
def test_each_method_trains_only_what_it_says(trained, mode):
    spec, before, after, trainable, model, _ = trained[mode]
    assert before.keys() == after.keys()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    frozen = set(before) - trainable
    assert not changed & frozen, sorted(changed & frozen)[:5]  # base weights (and buffers) bit-identical
    head = {k for k in trainable if _head(k)}
    assert head and head <= changed  # the new head trains in full
    body = trainable - head
    if mode == "linear-probe":
        assert not body
    elif mode == "partial":  # the last block trains, everything before it is the checkpoint's
        assert body and all(".layer.1." in k for k in body) and body <= changed
        assert not any(".layer.0." in k or "embeddings" in k for k in changed)
    else:  # adapters only, and each of them moved
        assert body and body <= changed
        assert all(("base_layer" not in k) and ("original_module" not in k) for k in body)
        assert all(k.startswith("base_model.") for k in trainable)  # wrapped by peft
    if spec.hyper.peft:
        assert model.peft_config["default"].peft_type == spec.hyper.peft["method"].upper()


def test_the_methods_adapt_what_their_configs_say(trained):
    names = {mode: trained[mode][3] for mode in METHODS}
    assert any(".lora_magnitude_vector." in k for k in names["dora"])  # use_dora reached peft
    assert not any("magnitude" in k for k in names["lora"])
    assert any(".hada_w1_a." in k for k in names["loha"])
    assert any(".lokr_w1." in k for k in names["lokr"]) and not any(".hada_" in k for k in names["lokr"])
    assert any(".vera_lambda_d." in k for k in names["vera"])
    # IA3: the task's feed-forward layers join its attention targets, and are the feed-forward ones
    ia3 = trained["ia3"][4]
    layers = {n for n, m in ia3.named_modules() if hasattr(m, "ia3_l")}
    assert {n.split("layer.0.")[-1] for n in layers if ".layer.0." in n} == \
        {"attention.self.query", "attention.self.value", "output.dense"}
    assert ia3.get_submodule("base_model.model.bert.encoder.layer.0.output.dense").is_feedforward
    assert not ia3.get_submodule("base_model.model.bert.encoder.layer.0.attention.self.query").is_feedforward


def test_the_shipped_peft_suite_compares_the_methods_tested_here():
    """benchmarks/peft-methods.yaml: every mode the issue names, each at a learning rate of its own, and each adapter
    method one that the tests above train with the same config fields (only the sizes differ)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "peft-methods.yaml"
    runs = _specs(load_suite(path))
    assert len(runs) == 30 and {r.seed for r in runs} == {0, 1, 2} and {r.train_samples for r in runs} == {256}
    hypers = {r.mode: r.hyper for r in runs}
    assert list(hypers) == ["scratch", "linear-probe", "partial", "finetune", "lora", "dora", "loha", "lokr", "ia3",
                            "vera"]
    assert all("lr" in m for m in yaml.safe_load(path.read_text())["benchmarks"][0]["modes"].values())
    peft = {mode: h.peft for mode, h in hypers.items() if h.peft}
    assert set(peft) == {"dora", "loha", "lokr", "ia3", "vera"} and peft["dora"]["use_dora"] is True
    for mode, config in peft.items():
        assert config.keys() == METHODS[mode]["peft"].keys() and config["method"] == METHODS[mode]["peft"]["method"]


@pytest.mark.parametrize("mode", ["lora", "dora"])
def test_merged_model_predicts_as_the_adapter_model(trained, mode):
    _, _, _, _, model, data = trained[mode]
    model = copy.deepcopy(model).eval()
    batch = (data.eval_collate or data.collate)([data.eval[i] for i in range(8)])
    batch.pop("labels")
    with torch.no_grad():
        adapted = model(**batch).logits
        merged_model = model.merge_and_unload()
        merged = merged_model(**batch).logits
    assert not hasattr(merged_model, "peft_config") or not merged_model.peft_config
    assert not any("lora_" in n for n, _ in merged_model.named_parameters())
    torch.testing.assert_close(merged, adapted, rtol=1e-4, atol=1e-5)
    assert adapted.abs().max() > 1e-3  # not a trivially zero output


def test_blocks_are_found_generically():
    import timm
    from transformers import (BertConfig, BertForSequenceClassification, ResNetConfig, ResNetForImageClassification,
                              ViTConfig, ViTForImageClassification)

    from transferbench.tasks._image_torch import TimmClassifier

    bert = BertForSequenceClassification(BertConfig(hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                                                    intermediate_size=32, vocab_size=50))
    vit = ViTForImageClassification(ViTConfig(hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                              intermediate_size=32, image_size=16, patch_size=8))
    resnet = ResNetForImageClassification(ResNetConfig(hidden_sizes=[8, 16, 32], depths=[1, 3, 1], embedding_size=8))
    lite0 = TimmClassifier(timm.create_model("efficientnet_lite0", num_classes=3))
    found = {name: (where, len(blocks)) for name, (where, blocks) in
             {"bert": find_blocks(bert), "vit": find_blocks(vit), "resnet": find_blocks(resnet),
              "lite0": find_blocks(lite0)}.items()}
    assert found == {"bert": ("BertEncoder.layer", 3), "vit": ("ViTModel.layers", 4),
                     "resnet": ("ResNetEncoder.stages", 3),  # the stage list, not the longest stage's 3 blocks
                     "lite0": ("EfficientNet.blocks", 7)}
    task = get_task("image-classification")({})
    hyper = Hyper(partial_blocks=2)
    apply(get_mode("partial", hyper), lite0, task, hyper)
    trainable = {n.split(".")[2] for n, p in lite0.named_parameters() if p.requires_grad and ".blocks." in n}
    assert trainable == {"5", "6"}
    assert lite0.model.classifier.weight.requires_grad and not lite0.model.conv_stem.weight.requires_grad
    with pytest.raises(Exception, match="no repeated block list"):
        find_blocks(torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))


def test_new_keys_stay_out_of_run_ids_at_their_defaults_and_name_the_config(tiny_bert):
    plain = _suite(tiny_bert, {"lora": {}, "partial": {}})  # the lora mode's run_id: tests/test_stages_shipped.py
    assert "peft" not in plain[0].hyper.model_dump() and "partial_blocks" not in plain[1].hyper.model_dump()
    assert _suite(tiny_bert, {"partial": {"partial_blocks": 3}})[0].run_id != plain[1].run_id
    specs = {s.mode: s for s in _suite(tiny_bert, {"dora": METHODS["dora"], "dora2": {"peft": {
        "method": "LoRA", "use_dora": True, "r": 4}}, "lora": {"peft": {"method": "lora", "r": 4}}})}
    assert specs["dora"].hyper.peft == {"method": "lora", "use_dora": True, "r": 4}
    assert specs["dora2"].hyper == specs["dora"].hyper  # the method's spelling is canonical
    assert specs["lora"].run_id != plain[0].run_id  # `lora` given a peft config is that config's run
    assert get_mode("lora", specs["lora"].hyper).prepare is not get_mode("lora").prepare
    assert specs["dora"].hyper.lr == 1e-2  # the suite's; a peft mode without one gets what the lora mode gets
    no_lr = {k: v for k, v in DEFAULTS.items() if k != "lr"}  # (its default rate, or the lr search once that is on)
    assert _suite(tiny_bert, {"dora": METHODS["dora"]}, no_lr)[0].hyper.lr == _suite(tiny_bert, {"lora": {}},
                                                                                     no_lr)[0].hyper.lr


def test_a_run_records_method_config_adapter_size_and_the_table_shows_it(tiny_bert, tmp_path, capsys):
    modes = "{dora: {peft: {method: lora, use_dora: true, r: 4}}, partial: {partial_blocks: 1}, linear-probe}"
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes=modes, budget="[16]",
                        extra="    max_steps: 2\n    eval_samples: 16\n")
    assert run_main("run", suite, "--results-dir", tmp_path / "res") == 0
    rows = {r["mode"]: r for r in map(json.loads, (tmp_path / "res" / "runs.jsonl").read_text().splitlines())}
    assert {m: r["status"] for m, r in rows.items()} == {"dora": "ok", "partial": "ok", "linear-probe": "ok"}
    assert rows["dora"]["config"]["hyper"]["peft"] == {"method": "lora", "use_dora": True, "r": 4}
    assert rows["partial"]["config"]["hyper"]["partial_blocks"] == 1
    # the head in fp32: 32 x 4 + 4; plain trainable weights for partial, the saved adapter tensors for dora
    assert rows["linear-probe"]["adapter_bytes"] == 4 * (32 * 4 + 4) == 4 * rows["linear-probe"]["params_trainable"]
    assert rows["partial"]["adapter_bytes"] == 4 * rows["partial"]["params_trainable"]
    assert rows["dora"]["adapter_bytes"] == 4 * rows["dora"]["params_trainable"]  # LoRA saves its trainable tensors
    assert rows["linear-probe"]["adapter_bytes"] < rows["dora"]["adapter_bytes"] < rows["partial"]["adapter_bytes"]
    table = (tmp_path / "res" / "leaderboard.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| model"))
    assert "| trainable | adapter size |" in header
    assert "| 528 B |" in table  # linear-probe's head
    assert f"| {rows['partial']['adapter_bytes'] / 1024:.1f} KiB |" in table


def test_adapter_size_of_a_method_with_saved_buffers_is_what_it_saves(tmp_path, tiny_bert):
    """VeRA saves its frozen shared projections with the adapter: counted, as save_pretrained writes them."""
    from safetensors.torch import load_file

    task = get_task("text-classification")({})
    hyper = Hyper(peft={"method": "vera", "r": 16})
    model = apply(get_mode("vera", hyper), task.build_model(tiny_bert, ["a", "b"], pretrained=True), task, hyper)
    from transferbench.modes import adapter_bytes

    model.save_pretrained(tmp_path / "vera")
    saved = load_file(tmp_path / "vera" / "adapter_model.safetensors")
    assert adapter_bytes(model) == sum(t.numel() * t.element_size() for t in saved.values())
    assert adapter_bytes(model) > 4 * sum(p.numel() for p in model.parameters() if p.requires_grad)


BAD = {  # case: (modes, extra suite lines, the one line's text)
    "unknown method": ("{x: {peft: {method: lroa}}}", "", "benchmarks[0].modes.x.peft: unknown peft method 'lroa'"),
    "unknown field": ("{dora: {peft: {method: lora, use_droa: true}}}", "",
                      "'use_droa' is not a field of peft's LoraConfig (did you mean 'use_dora'?)"),
    "unknown field of another method": ("{lokr: {peft: {method: lokr, decompose_factr: 4}}}", "",
                                        "'decompose_factr' is not a field of peft's LoKrConfig (did you mean "
                                        "'decompose_factor'?)"),
    "wrong type": ("{dora: {peft: {method: lora, r: eight}}}", "", "'r' of peft's LoraConfig takes an integer"),
    "peft's own check": ("{ia3: {peft: {method: ia3, target_modules: [query], feedforward_modules: [key]}}}", "",
                         "`feedforward_modules` should be a subset of `target_modules`"),
    "prompt learning": ("{pt: {peft: {method: prompt_tuning}}}", "", "does not adapt a model's layers"),
    "needs the loop": ("{ada: {peft: {method: adalora}}}", "", "update_and_allocate"),
    "4-bit on CPU": ("{qlora: {peft: {method: lora, load_in_4bit: true}}}", "", "needs a CUDA GPU"),
    "peft on a built-in mode": ("{finetune: {peft: {method: lora}}}", "", "'finetune' is a built-in mode"),
    "peft on a benchmark": ("[lora]", "    peft: {method: lora}\n", "peft belongs to a mode"),
    "unknown mode without peft": ("{dora: {lr: 0.001}}", "", "unknown mode 'dora'"),
    "targets that match nothing": ("{x: {peft: {method: lora, target_modules: [nope]}}}", "",
                                   "targets ['nope'] match no layer of BertForSequenceClassification"),
    "partial K too large": ("{partial: {partial_blocks: 20}}", "", "partial_blocks 20 > 2 blocks of BertEncoder.layer"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_peft_and_partial_settings_are_one_line_exit_2_before_training(case, tiny_bert, tmp_path, capfd):
    if case == "4-bit on CPU" and torch.cuda.is_available():
        pytest.skip("a CUDA machine refuses it with another line (not supported yet)")
    modes, extra, message = BAD[case]
    suite = write_suite(tmp_path / "s.yaml", tiny_bert, modes=modes, budget="[16]", extra=extra)
    code = run_main("run", suite, "--results-dir", tmp_path / "res")
    err = capfd.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("transferbench: error: "), err
    assert message in err[0], err[0]
    assert not (tmp_path / "res" / "runs.jsonl").exists() or not (tmp_path / "res" / "runs.jsonl").read_text()


def test_methods_on_a_convolutional_model_fit_or_say_why_in_one_line():
    """IA3 on a model without feed-forward layers scales every target's output; VeRA cannot adapt convolutions."""
    from transformers import ResNetConfig, ResNetForImageClassification

    from transferbench.errors import UserError

    task = get_task("image-classification")({})

    def resnet():
        return ResNetForImageClassification(ResNetConfig(hidden_sizes=[8, 16], depths=[1, 1], embedding_size=8,
                                                         num_labels=3))

    hyper = Hyper(peft={"method": "ia3"})
    model = apply(get_mode("ia3", hyper), resnet(), task, hyper)
    scaled = [m for n, m in model.named_modules() if hasattr(m, "ia3_l") and n.endswith("convolution")]
    assert len(scaled) == len([n for n, m in resnet().named_modules() if n.endswith("convolution")])
    assert not any(m.is_feedforward for m in scaled)
    model(pixel_values=torch.rand(2, 3, 32, 32))
    hyper = Hyper(peft={"method": "vera", "r": 4})
    with pytest.raises(UserError) as err:
        apply(get_mode("vera", hyper), resnet(), task, hyper)
    assert "peft method 'vera' could not adapt the Conv2d layers its targets match" in str(err.value)
    assert "\n" not in str(err.value)
