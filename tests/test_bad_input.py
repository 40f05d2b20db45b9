"""Hostile input of every kind (YAML bombs, non-finite numbers, unwritable stores and outputs, bad CSVs, corrupt
checkpoints): nothing trained, nothing lost, nothing escapes the results folder, never a traceback.

The table runs the CLI's `main` in this process on the tiny XOR task (tests/helpers.py: a run takes a second,
no dataset or checkpoint to load), except the data cases, which need a real loader (text-classification on the
tiny BERT). Each case asserts the exit code, exactly one line on stderr (the error, or for `report` the warning
about the line it skips), no traceback anywhere, and the store byte-identical."""
import errno
import json
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from helpers import bench, KEEP, run_args, xor_suite

PROGRESS_LINE = re.compile(r"^.+: step \d+/\d+ \(epoch [\d.]+\) loss ")  # runners/train/progress.py's plain lines


BOMB = "x-bomb: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"x-{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))


# --- the table: name -> (setup(tmp, ctx) -> argv, exit code, what the one stderr line must say) -------------
CASES = {}


REGISTERED = []  # every name case() was given, in order: a repeated name would silently replace a case


def case(name, code=2):
    def register(fn):
        fn.code = code
        REGISTERED.append(name)
        CASES[name] = fn
        return fn
    return register


def yaml_case(name, text_or_fn, message):
    @case(name)
    def setup(tmp, ctx):
        text = text_or_fn
        head = isinstance(text, str) and text.startswith("HEAD:")
        xor_suite(tmp, text=None if head else text, head=text[5:] if head else "")
        ctx["message"] = message
        return run_args(tmp)


# hostile YAML: bounded alias expansion and nesting, one line each
yaml_case("alias bomb", "name: faults\n" + BOMB + "benchmarks: []\n", "expands to more than")


yaml_case("alias bomb inside a benchmark", "HEAD:" + BOMB, "expands to more than")


yaml_case("recursive alias", "name: faults\nx: &a [*a]\nbenchmarks: []\n", "recursive alias")


yaml_case("deep flow nesting", "name: faults\nx: " + "[" * 5000 + "]" * 5000 + "\nbenchmarks: []\n",
          "nested more than")


yaml_case("deep block nesting", "name: faults\n" + "".join("  " * i + f"k{i}:\n" for i in range(200)) +
          "benchmarks: []\n", "nested more than")


yaml_case("suite not UTF-8", b"name: \xff\xfe faults\n", "cannot be read")


yaml_case("yaml with a tab indent", "name: faults\nbenchmarks:\n\t- task: x\n", "malformed YAML")


# numbers must be finite: every hyper-parameter, price and threshold
NON_FINITE = {
    "lr nan": "lr: .nan", "lr inf": "lr: .inf", "epochs inf": "epochs: .inf", "max_seconds inf": "max_seconds: .inf",
    "weight_decay nan": "weight_decay: .nan", "warmup_ratio nan": "warmup_ratio: .nan",
    "lora_dropout nan": "lora_dropout: .nan", "eval_every inf": "eval_every: .inf",
    "suite price inf": "price_per_device_hour: .inf", "suite price nan": "price_per_device_hour: .NaN",
}


def _non_finite(kv):
    @case(f"non-finite {kv}")
    def setup(tmp, ctx):
        defaults = {"lr": "lr: 0.05", "epochs": "epochs: 1"}
        key = kv.split(":")[0]
        xor_suite(tmp, defaults=", ".join(["seeds: [0]", "batch_size: 20", kv] +
                                        [v for k, v in defaults.items() if k != key]))
        ctx["message"] = "finite number"
        return run_args(tmp)


for _kv in NON_FINITE.values():
    _non_finite(_kv)


def _bench_case(name, extra, message):
    @case(name)
    def setup(tmp, ctx):
        xor_suite(tmp, body=bench("[fine]", extra))
        ctx["message"] = message
        return run_args(tmp)


_bench_case("target value nan", ", target: {metric: accuracy, value: .nan}", "finite number")


_bench_case("target value inf", ", target: {metric: accuracy, value: .inf}", "finite number")


_bench_case("target value -inf", ", target: {metric: accuracy, value: -.inf}", "finite number")


@case("mode lr inf")
def _mode_lr(tmp, ctx):
    xor_suite(tmp, body="  - {task: faulty, dataset: builtin:unused, models: [fine], modes: {scratch: {lr: .inf}}}\n")
    ctx["message"] = "finite number"
    return run_args(tmp)


def _price_case(value):
    @case(f"--price-per-device-hour {value}")
    def setup(tmp, ctx):
        xor_suite(tmp)
        ctx["message"] = "--price-per-device-hour must be >= 0 and finite"
        return ["run", tmp / "s.yaml", "--results-dir", tmp / "res", f"--price-per-device-hour={value}"]


for _v in ("nan", "inf", "-inf", "1e999", "-1"):
    _price_case(_v)


# Ultralytics pass-through: an allow-list of training hyper-parameters; nothing that names a path or output
def _ultra_case(name, options, message):
    @case(f"ultralytics {name}")
    def setup(tmp, ctx):
        (tmp / "s.yaml").write_text(textwrap.dedent(f"""
            name: det
            defaults: {{seeds: [0], epochs: 1, batch_size: 8, lr: default}}
            benchmarks:
              - task: object-detection
                dataset: builtin:shapes
                models: [yolov8n.yaml]
                modes: [scratch]
                train_samples: [16]
                task_args: {{imgsz: 32, ultralytics: {options}}}
            """))
        ctx["message"] = message
        return run_args(tmp)


_ultra_case("save_dir", "{save_dir: /tmp/escape}", "ultralytics.save_dir is not a training hyper-parameter")


_ultra_case("project", "{project: /tmp/escape}", "may not set project")


_ultra_case("name", "{name: ../../escape}", "may not set name")


_ultra_case("cfg", "{cfg: /tmp/other.yaml}", "ultralytics.cfg is not a training hyper-parameter")


_ultra_case("cache", "{cache: disk}", "ultralytics.cache is not a training hyper-parameter")


_ultra_case("save_period", "{save_period: 1}", "ultralytics.save_period is not a training hyper-parameter")


_ultra_case("tracker", "{tracker: /tmp/t.yaml}", "ultralytics.tracker is not a training hyper-parameter")


_ultra_case("unknown key", "{mosiac: 0.0}", "ultralytics.mosiac is not a training hyper-parameter")


_ultra_case("nan value", "{mosaic: .nan}", "is not a plain finite number")


_ultra_case("inf value", "{lrf: .inf}", "is not a plain finite number")


_ultra_case("list value", "{mosaic: [1, 2]}", "is not a plain finite number")


_ultra_case("path value", "{copy_paste_mode: ../../x}", "is not a plain finite number")


# the results folder, the store and the names: proved writable before anything trains
@case("results dir not writable")
def _ro(tmp, ctx):
    xor_suite(tmp)
    ctx["message"] = "not writable"
    return ["run", tmp / "s.yaml", "--results-dir", "/sys/transferbench-test-results"]


@case("results dir name too long")
def _long(tmp, ctx):
    xor_suite(tmp)
    ctx["message"] = "cannot hold this name"
    return ["run", tmp / "s.yaml", "--results-dir", tmp / ("r" * 300)]


@case("stage name too long for the filesystem")
def _long_stage(tmp, ctx):
    xor_suite(tmp, head=f"pretrain:\n  {'s' * 250}: {{task: faulty, dataset: builtin:unused, model: fine}}\n",
           body=bench(f"[pretrain:{'s' * 250}]"))
    ctx["message"] = "cannot hold the name"
    return run_args(tmp)


@case("store is a dangling symlink")
def _dangling(tmp, ctx):
    xor_suite(tmp)
    (tmp / "res" / "runs.jsonl").unlink()
    (tmp / "res" / "runs.jsonl").symlink_to(tmp / "nowhere" / "runs.jsonl")
    ctx["message"] = "which does not exist"
    return run_args(tmp)


@case("store is a folder")
def _store_dir(tmp, ctx):
    xor_suite(tmp)
    (tmp / "res" / "runs.jsonl").unlink()
    (tmp / "res" / "runs.jsonl").mkdir()
    ctx["message"] = "is not a file"
    return run_args(tmp)


@case("results dir is a file")
def _res_file(tmp, ctx):
    xor_suite(tmp)
    (tmp / "res" / "runs.jsonl").unlink()
    (tmp / "res").rmdir()
    (tmp / "res").write_text("x\n")
    ctx["message"] = "is a file"
    return run_args(tmp)


@case("work dir is a file")
def _work_file(tmp, ctx):
    xor_suite(tmp)
    (tmp / "res" / "work").write_text("x\n")
    ctx["message"] = "is a file, not a folder"
    return run_args(tmp)


@case("store not writable")
def _store_ro(tmp, ctx):
    xor_suite(tmp)
    store = str(tmp / "res" / "runs.jsonl")
    real = os.open

    def refuse(path, flags, *a, **k):
        if str(path) == store and flags & os.O_WRONLY:
            raise PermissionError(errno.EACCES, "Permission denied", store)
        return real(path, flags, *a, **k)

    ctx["patch"] = [(os, "open", refuse)]
    ctx["message"] = "is not writable"
    return run_args(tmp)


def _append_fault(err_no, where):
    @case(f"append fails with {errno.errorcode[err_no]} in {where}")
    def setup(tmp, ctx):
        xor_suite(tmp)
        real_write, real_fsync = os.write, os.fsync

        def is_store(fd):
            try:
                return os.readlink(f"/proc/self/fd/{fd}").endswith("runs.jsonl")
            except OSError:
                return False

        def write(fd, data):
            if is_store(fd):
                real_write(fd, bytes(data)[: len(data) // 2])  # half a line reaches the disk
                raise OSError(err_no, os.strerror(err_no))
            return real_write(fd, data)

        def fsync(fd):
            if is_store(fd):
                raise OSError(err_no, os.strerror(err_no))
            return real_fsync(fd)

        ctx["patch"] = [(os, "write", write)] if where == "write" else [(os, "fsync", fsync)]
        ctx["message"] = "finished but cannot be recorded"
        ctx["run_id_in_message"] = True
        return run_args(tmp)


for _e in (errno.ENOSPC, errno.EFBIG, errno.EIO, errno.EDQUOT):
    _append_fault(_e, "write")


_append_fault(errno.EIO, "fsync")


# store lines with wrong types or values: `run` refuses them in one line, `report` skips them with one warning
BAD_LINES = {
    "string metric": {"metric": "0.9"}, "NaN metric": {"metric": float("nan")}, "inf metric": {"metric": float("inf")},
    "-inf metric": {"metric": float("-inf")}, "bool metric": {"metric": True}, "string best_metric": {"best_metric": "x"},
    "NaN cost": {"cost_usd": float("nan")}, "string price": {"price_per_device_hour": "1"},
    "curve not a list": {"curve": "x"}, "curve of numbers": {"curve": [1, 2]},
    "curve point string metric": {"curve": [{"step": 1, "metric": "a"}]},
    "curve point NaN metric": {"curve": [{"step": 1, "metric": float("nan")}]},
    "newer schema_version": {"schema_version": 99}, "string schema_version": {"schema_version": "4"},
    "boolean schema_version": {"schema_version": True}, "null run_id": {"run_id": None}, "numeric run_id": {"run_id": 5},
    "string seed": {"seed": "0"}, "numeric task": {"task": 5}, "numeric status": {"status": 1},
    "config a list": {"config": []}, "string train_samples": {"train_samples": "64"},
    # issue 25: values out of range and required fields missing are refused like wrong types
    "negative train_samples": {"train_samples": -5}, "zero train_samples": {"train_samples": 0},
    "status running": {"status": "running"}, "negative seed": {"seed": -1}, "seed 10^26": {"seed": 10**26},
    "negative cost": {"cost_usd": -1.0}, "empty model": {"model": ""}, "ok without train_samples": {"train_samples": None},
    "no metric_name": {"metric_name": None}, "no task": {"task": None},
}


def _bad_line(record: dict) -> str:
    return json.dumps({**json.loads(KEEP), "run_id": "bad", **record})  # NaN/Infinity as Python's json writes them


def _store_case(name, fields):
    @case(f"run: store line with {name}")
    def run_setup(tmp, ctx):
        xor_suite(tmp)
        (tmp / "res" / "runs.jsonl").write_text(KEEP + "\n" + _bad_line(fields) + "\n")
        ctx["message"] = "runs.jsonl:2 is not a result record"
        return run_args(tmp)

    @case(f"report: store line with {name}", code=0)
    def report_setup(tmp, ctx):
        (tmp / "res" / "runs.jsonl").write_text(KEEP + "\n" + _bad_line(fields) + "\n")
        ctx["message"] = "runs.jsonl:2"
        ctx["warning"] = True
        return ["report", tmp / "res", "--out", tmp / "out"]


for _n, _f in BAD_LINES.items():
    _store_case(_n, _f)


# report / plan outputs
def _out_case(name, argv, message):
    @case(name)
    def setup(tmp, ctx):
        (tmp / "res" / "runs.jsonl").write_text(KEEP + "\n")
        (tmp / "a-file").write_text("x\n")
        ctx["message"] = message
        return [a.replace("{tmp}", str(tmp)) for a in argv]


_out_case("report --out is a file", ["report", "{tmp}/res", "--out", "{tmp}/a-file"], "--out {tmp}/a-file is a file")


_out_case("report --publish is a file", ["report", "{tmp}/res", "--publish", "{tmp}/a-file"], "--publish")


_out_case("plan --out is a file", ["plan", "{tmp}/res", "--out", "{tmp}/a-file"], "--out {tmp}/a-file is a file")


_out_case("report on a missing store", ["report", "{tmp}/nope"], "no results store")


# --dry-run: the same checks as run
@case("dry-run: budget above the data")
def _dry_budget(tmp, ctx):
    xor_suite(tmp, body=bench("[fine]", ", train_samples: [1000]"))
    ctx["message"] = "train_samples 1000 exceeds the 300"
    return run_args(tmp, "--dry-run")


@case("run: budget above the data")
def _run_budget(tmp, ctx):
    xor_suite(tmp, body=bench("[fine]", ", train_samples: [1000]"))
    ctx["message"] = "train_samples 1000 exceeds the 300"
    return run_args(tmp)


@case("dry-run: unreadable store line")
def _dry_store(tmp, ctx):
    xor_suite(tmp)
    (tmp / "res" / "runs.jsonl").write_text(KEEP + "\n" + '{"run_id": "half", "sta\n')
    ctx["message"] = "runs.jsonl:2 is not a result record"
    return run_args(tmp, "--dry-run")


@case("dry-run: results dir not writable")
def _dry_ro(tmp, ctx):
    xor_suite(tmp)
    ctx["message"] = "not writable"
    return ["run", tmp / "s.yaml", "--dry-run", "--results-dir", "/sys/transferbench-test-results"]


@case("dry-run: alias bomb")
def _dry_bomb(tmp, ctx):
    xor_suite(tmp, head=BOMB)
    ctx["message"] = "expands to more than"
    return run_args(tmp, "--dry-run")


# data: tiny csv files through the real text-classification loader (the tiny BERT)
def _csv_case(name, text, message, dry=False):
    @case(f"{'dry-run: ' if dry else ''}csv {name}")
    def setup(tmp, ctx):
        model = ctx["tiny_bert"]()
        (tmp / "data.csv").write_text(text)
        (tmp / "s.yaml").write_text(textwrap.dedent(f"""
            name: faults
            defaults: {{seeds: [0], epochs: 1, batch_size: 4, lr: default}}
            benchmarks:
              - task: text-classification
                dataset: {{source: {tmp}/data.csv, columns: {{text: sentence, label: topic}}}}
                models: [{model}]
                modes: [scratch]
                task_args: {{max_length: 8}}
            """))
        ctx["message"] = message
        return run_args(tmp, *(["--dry-run"] if dry else []))


ROWS = "".join(f"text {i},t{i % 2}\n" for i in range(20))


_csv_case("empty file", "", "is empty")


_csv_case("only blank lines", "\n\n", "is empty")


_csv_case("header only", "sentence,topic\n", "has a header but no rows")


_csv_case("one row", "sentence,topic\nhello,t0\n", "cannot be split")


_csv_case("blank label cell", "sentence,topic\n" + ROWS + "no label,\n", "have a blank label (column 'topic')")


_csv_case("NaN label cell", "sentence,topic\n" + ROWS + "no label,NaN\n", "have a blank label (column 'topic')")


_csv_case("two blank label cells", "sentence,topic\n" + ROWS + "a,\nb,\n", "2 of")


_csv_case("header only", "sentence,topic\n", "has a header but no rows", dry=True)


_csv_case("blank label cell", "sentence,topic\n" + ROWS + "no label,\n", "blank label", dry=True)


# checkpoints: a corrupt local model is named at preflight
def _corrupt_model_case(name, file, how, dry=False):
    @case(f"{'dry-run: ' if dry else ''}corrupt local model: {name}")
    def setup(tmp, ctx):
        import shutil

        model = tmp / "model"
        shutil.copytree(ctx["tiny_bert"](), model)
        target = model / file
        if how == "truncate":
            data = target.read_bytes() if target.exists() else b""
            target.write_bytes(data[: len(data) // 3])
        else:
            target.write_bytes(how)
        xor_suite(tmp)
        (tmp / "s.yaml").write_text(textwrap.dedent(f"""
            name: faults
            defaults: {{seeds: [0], epochs: 1, batch_size: 4, lr: default}}
            benchmarks:
              - task: text-classification
                dataset: builtin:topics
                models: [{model}]
                modes: [finetune]
                train_samples: [8]
                task_args: {{max_length: 8}}
            """))
        ctx["message"] = f"corrupt checkpoint file {target}"
        return run_args(tmp, *(["--dry-run"] if dry else []))


_corrupt_model_case("truncated model.safetensors", "model.safetensors", "truncate")


_corrupt_model_case("garbage model.safetensors", "model.safetensors", b"\x00" * 100)


_corrupt_model_case("truncated config.json", "config.json", "truncate")


_corrupt_model_case("truncated pytorch_model.bin", "pytorch_model.bin", b"PK\x03\x04" + b"\x00" * 80)


_corrupt_model_case("truncated model.safetensors", "model.safetensors", "truncate", dry=True)


@case("corrupt shipped stage")
def _shipped(tmp, ctx):
    from transferbench.config import load_suite
    from transferbench.runners.orchestrate import stages
    from transferbench.runners.orchestrate.plan import plan_runs

    xor_suite(tmp, head="pretrain:\n  base: {task: faulty, dataset: builtin:unused, model: fine}\n",
           body=bench("[pretrain:base]"))
    ctx["path"] = [str(tmp)]
    sys.path.insert(0, str(tmp))
    try:
        stage = plan_runs(load_suite(tmp / "s.yaml"))[0].spec.stage
    finally:
        sys.path.remove(str(tmp))
    shipped = tmp / "shipped"
    folder = shipped / f"{stage.stage_name}-{stage.run_id}"
    folder.mkdir(parents=True)
    (folder / "stage_result.json").write_text("{}\n")
    (folder / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")
    ctx["patch"] = [(stages, "SHIPPED_STAGES", shipped)]
    ctx["message"] = "the shipped checkpoint is corrupt"
    return run_args(tmp)



# issue 25: a store line is a whole record, or it is nobody's finished run
def _bare_line_case(name, line):
    @case(f"run: store line {name}")
    def run_setup(tmp, ctx):
        xor_suite(tmp)
        (tmp / "res" / "runs.jsonl").write_text(KEEP + "\n" + line + "\n")
        ctx["message"] = "runs.jsonl:2 is not a result record (required fields"
        return run_args(tmp)

    @case(f"dry-run: store line {name}")
    def dry_setup(tmp, ctx):
        xor_suite(tmp)
        (tmp / "res" / "runs.jsonl").write_text(KEEP + "\n" + line + "\n")
        ctx["message"] = "runs.jsonl:2 is not a result record (required fields"
        return run_args(tmp, "--dry-run")

    @case(f"report: store line {name}", code=0)
    def report_setup(tmp, ctx):
        (tmp / "res" / "runs.jsonl").write_text(KEEP + "\n" + line + "\n")
        ctx["message"] = "runs.jsonl:2 is not a usable result record (required fields"
        ctx["warning"] = True
        return ["report", tmp / "res", "--out", tmp / "out"]


_bare_line_case("with only run_id and status ok", json.dumps({"run_id": "a-real-run", "status": "ok"}))


_bare_line_case("with run_id, status and a metric", json.dumps({"run_id": "x", "status": "ok", "metric": 0.49}))


# every check that needs no training runs before training, in `run` and in `--dry-run` alike
def _both(name, setup_fn, message):
    for dry in (False, True):
        def setup(tmp, ctx, dry=dry):
            argv = setup_fn(tmp, ctx)
            ctx["message"] = message
            return argv + (["--dry-run"] if dry else [])
        case(f"{'dry-run' if dry else 'run'}: {name}")(setup)


def _saving(defaults_extra=""):
    def setup(tmp, ctx):
        xor_suite(tmp, defaults="seeds: [0], epochs: 1, batch_size: 20, lr: 0.05, save_models: final" + defaults_extra)
        return run_args(tmp)
    return setup


def _models_file(tmp, ctx):
    argv = _saving()(tmp, ctx)
    (tmp / "res" / "models").write_text("x\n")
    return argv


def _models_read_only(tmp, ctx):
    argv = _saving()(tmp, ctx)
    real = os.open

    def refuse(path, flags, *a, **k):
        if Path(path).parent.name == "models" and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, flags, *a, **k)

    ctx["patch"] = [(os, "open", refuse)]
    return argv


_both("save_models: final, models/ is a file", _models_file, "res/models is a file, not a folder")


_both("save_models: final, models/ read-only", _models_read_only, "res/models: it is not writable (Permission denied)")


_both("save_models: final, a model without save_pretrained", _saving(),
      "save_models: final saves the trained model with save_pretrained, which the faulty model (Net) does not have")


def _lr_beyond(tmp, ctx):
    xor_suite(tmp, defaults="seeds: [0], epochs: 1, batch_size: 20, lr: auto, lr_search: {validation: beyond}",
              body=bench("[fine]", ", train_fraction: [1.0]"))
    return run_args(tmp)


_both("lr: auto scoring beyond a budget of the whole pool", _lr_beyond,
      "scores its candidate rates on 100 training examples beyond the budget, and only 0 of the 300 are left")


def _lr_small_budget(tmp, ctx):
    xor_suite(tmp, defaults="seeds: [0], epochs: 1, batch_size: 2, lr: auto, schedule: fixed",
              body=bench("[fine]", ", train_samples: [3]"))
    return run_args(tmp)


_both("lr: auto on a budget too small to validate inside", _lr_small_budget,
      "lr: auto validates on 4 of the budget's 3 examples and needs at least 2 left to fit")


def _seeds(value):
    def setup(tmp, ctx):
        xor_suite(tmp)
        return run_args(tmp, "--set", f"defaults.seeds={value}")
    return setup


_both("seed -1", _seeds("[-1]"), "defaults.seeds[0]: Input should be greater than or equal to 0 (got -1)")


_both("seed 10^26", _seeds(f"[{10**26}]"), "defaults.seeds[0]: Input should be less than or equal to 4294967295")


_both("a seed listed twice", _seeds("[0, 0]"), "the run fine scratch budget=all seed=0 is listed twice")


def _model_twice(tmp, ctx):
    xor_suite(tmp, body=bench("[fine, fine]"))
    return run_args(tmp)


_both("a model listed twice", _model_twice, "is listed twice (a repeated seed, model or budget)")


def _not_utf8(tmp, ctx):
    xor_suite(tmp)
    return ["run", tmp / "s.yaml", "--results-dir", str(tmp / "res") + "-\udcff", "--price-per-device-hour", "0"]


_both("results dir not UTF-8", _not_utf8, "the name is not valid UTF-8")


@case("report: results dir not UTF-8")
def _report_not_utf8(tmp, ctx):
    ctx["message"] = "RESULTS_DIR"
    return ["report", str(tmp / "res") + "-\udcff"]


@case("report --out below a file")
def _out_below_file(tmp, ctx):
    (tmp / "a-file").write_text("x\n")
    ctx["message"] = "cannot be created: {tmp}/a-file is a file"
    return ["report", tmp / "res", "--out", tmp / "a-file" / "sub"]


@case("report --publish onto a dangling symlink")
def _publish_dangling(tmp, ctx):
    (tmp / "pub").symlink_to(tmp / "nowhere")
    ctx["message"] = "--publish {tmp}/pub is a symlink to a folder that does not exist"
    return ["report", tmp / "res", "--out", tmp / "out", "--publish", tmp / "pub"]


@case("report --out not writable")
def _out_read_only(tmp, ctx):
    import builtins
    import io

    real = builtins.open

    def refuse(path, mode="r", *a, **k):  # every writer opens through open() (pathlib through io.open)
        if str(tmp / "out") in str(path) and any(c in mode for c in "wax"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, mode, *a, **k)

    ctx["patch"] = [(builtins, "open", refuse), (io, "open", refuse)]
    ctx["message"] = "writing the report failed: {tmp}/out/"
    return ["report", tmp / "res", "--out", tmp / "out"]


@case("report --push-to-hub with an empty repo id")
def _push_empty(tmp, ctx):
    ctx["message"] = "--push-to-hub '' is not a Hub repo id"
    return ["report", tmp / "res", "--out", tmp / "out", "--publish", tmp / "out" / "pub", "--push-to-hub", ""]


def _stage_suite(tmp):
    return xor_suite(tmp, head="pretrain:\n  base: {task: faulty, dataset: builtin:unused, model: fine}\n",
                     body=bench("[pretrain:base]"))


@case("stages: TRANSFERBENCH_CACHE is a file")
def _stages_cache_file(tmp, ctx):
    _stage_suite(tmp)
    (tmp / "cache-file").write_text("x\n")
    ctx["env"] = {"TRANSFERBENCH_CACHE": str(tmp / "cache-file")}
    ctx["message"] = "{tmp}/cache-file is a file, not a folder"
    return ["stages", tmp / "s.yaml"]


@case("stages: cache not writable")
def _stages_cache_ro(tmp, ctx):
    _stage_suite(tmp)
    real = os.open

    def refuse(path, flags, *a, **k):
        if str(tmp / "cache") in str(path) and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, flags, *a, **k)

    ctx["patch"] = [(os, "open", refuse)]
    ctx["message"] = "it is not writable (Permission denied)"
    return ["stages", tmp / "s.yaml"]


_csv_case("blank text cell", "sentence,topic\n" + ROWS + ",t0\n", "have a blank text (column 'sentence')")


_csv_case("blank text cell", "sentence,topic\n" + ROWS + ",t0\n", "blank text", dry=True)


@case("run: not enough free space for the saved models")
def _no_space(tmp, ctx):
    from transferbench.runners.orchestrate import disk_space

    xor_suite(tmp, defaults="seeds: [0, 1, 2], epochs: 1, batch_size: 20, lr: 0.05, save_models: final")
    ctx["patch"] = [(disk_space, "RECORD_BYTES", 10**15)]  # the store lines alone exceed any disk
    ctx["message"] = "not enough free space: the pending runs will write about"
    return run_args(tmp)


def _snapshot(tmp: Path) -> dict:
    """Every file but the ones a case itself wrote and the claim bookkeeping."""
    skip = {"claims", "work", "cache", "out"}
    return {p: p.read_bytes() for p in tmp.rglob("*")
            if p.is_file() and not p.is_symlink() and not skip & set(p.relative_to(tmp).parts)}


@pytest.mark.parametrize("name", list(CASES))
def test_reliability_table(name, reliability_env, monkeypatch, capfd, request):
    tmp = reliability_env
    ctx = {"tiny_bert": lambda: request.getfixturevalue("tiny_bert")}
    argv = [str(a) for a in CASES[name](tmp, ctx)]
    for obj, attr, value in ctx.get("patch", []):
        monkeypatch.setattr(obj, attr, value)
    for p in ctx.get("path", []):
        monkeypatch.syspath_prepend(p)
    for key, value in ctx.get("env", {}).items():
        monkeypatch.setenv(key, value)
    capfd.readouterr()
    before = _snapshot(tmp)
    from transferbench.runners.cli import main

    constructed = []  # alias bombs: documents that reached the YAML constructor (which would expand them)
    if "bomb" in name:
        construct = yaml.SafeLoader.construct_document

        def spy(loader, node):
            if isinstance(node, yaml.MappingNode) and "x-bomb" in [k.value for k, _ in node.value]:
                constructed.append(node)
                raise RuntimeError("the alias bomb reached the YAML constructor")
            return construct(loader, node)

        monkeypatch.setattr(yaml.SafeLoader, "construct_document", spy)
    code = main(argv)  # an uncaught exception (a traceback) fails the test
    monkeypatch.undo()
    out, err = capfd.readouterr()
    # a run that trained before the failure logged its evaluations (plain lines where stderr is no terminal): those
    # are progress, not the error, which is one line
    lines = [line for line in err.strip().splitlines() if not PROGRESS_LINE.match(line)]
    assert "Traceback" not in out + err
    assert code == CASES[name].code, (code, err[-2000:])
    assert len(lines) == 1, lines
    message = ctx["message"].replace("{tmp}", str(tmp))
    prefix = "transferbench: warning: " if ctx.get("warning") else "transferbench: error: "
    assert lines[0].startswith(prefix) and message in lines[0], lines[0]
    if ctx.get("run_id_in_message"):
        assert "run " in lines[0] and "trains again" in lines[0]
    assert _snapshot(tmp) == before  # nothing written, nothing lost: the store is byte-identical
    assert not constructed  # a bomb is refused from its composed graph, before anything expands it


def test_no_case_of_the_reliability_table_replaces_another():
    assert len(REGISTERED) == len(set(REGISTERED)), sorted(n for n in REGISTERED if REGISTERED.count(n) > 1)
