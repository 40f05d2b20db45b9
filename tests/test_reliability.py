"""Reliability (issue 13): concurrency, signals, faults and hostile input. Nothing trained twice, nothing lost,
nothing escapes the results folder, never a traceback.

The table runs the CLI's `main` in this process on the tiny XOR task (tests/helpers.py: a run takes a second,
no dataset or checkpoint to load), except the data cases, which need a real loader (text-classification on the
tiny BERT). Each case asserts the exit code, exactly one line on stderr (the error, or for `report` the warning
about the line it skips), no traceback anywhere, and the store byte-identical. Concurrency and signals run real
processes (@pytest.mark.slow) and assert each run_id exactly once.
"""
import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from helpers import bench, faulty_suite, result, run_main, start_cli
from transferbench.claims import Claim
from transferbench.results import Store

GOOD_BENCH = bench("[fine]")
KEEP = result("keep", metric=0.5, best_metric=0.5, status="ok", suite="faults", task="faulty", model="fine",
              dataset="builtin:unused", curve=[{"step": 1, "samples_seen": 20, "seconds": 0.1, "metric": 0.5}]).to_json()

BOMB = "x-bomb: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"x-{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9))


def _suite(tmp, text=None, head="", defaults="seeds: [0], epochs: 1, batch_size: 20, lr: 0.05", body=GOOD_BENCH):
    """The XOR suite (optionally with `head` lines before its benchmarks, or replaced by `text`)."""
    path = faulty_suite(tmp, body, defaults)
    if head:
        path.write_text(path.read_text().replace("benchmarks:\n", head + "benchmarks:\n"))
    if text is not None:
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def run_args(tmp, *extra):
    return ["run", tmp / "s.yaml", "--results-dir", tmp / "res", "--price-per-device-hour", "0", *extra]


# --- the table: name -> (setup(tmp, ctx) -> argv, exit code, what the one stderr line must say) -------------
CASES = {}


def case(name, code=2):
    def register(fn):
        fn.code = code
        CASES[name] = fn
        return fn
    return register


def yaml_case(name, text_or_fn, message):
    @case(name)
    def setup(tmp, ctx):
        text = text_or_fn
        head = isinstance(text, str) and text.startswith("HEAD:")
        _suite(tmp, text=None if head else text, head=text[5:] if head else "")
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
        _suite(tmp, defaults=", ".join(["seeds: [0]", "batch_size: 20", kv] +
                                        [v for k, v in defaults.items() if k != key]))
        ctx["message"] = "finite number"
        return run_args(tmp)


for _kv in NON_FINITE.values():
    _non_finite(_kv)


def _bench_case(name, extra, message):
    @case(name)
    def setup(tmp, ctx):
        _suite(tmp, body=bench("[fine]", extra))
        ctx["message"] = message
        return run_args(tmp)


_bench_case("target value nan", ", target: {metric: accuracy, value: .nan}", "finite number")
_bench_case("target value inf", ", target: {metric: accuracy, value: .inf}", "finite number")
_bench_case("target value -inf", ", target: {metric: accuracy, value: -.inf}", "finite number")

@case("mode lr inf")
def _mode_lr(tmp, ctx):
    _suite(tmp, body="  - {task: faulty, dataset: builtin:unused, models: [fine], modes: {scratch: {lr: .inf}}}\n")
    ctx["message"] = "finite number"
    return run_args(tmp)


def _price_case(value):
    @case(f"--price-per-device-hour {value}")
    def setup(tmp, ctx):
        _suite(tmp)
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
    _suite(tmp)
    ctx["message"] = "not writable"
    return ["run", tmp / "s.yaml", "--results-dir", "/sys/transferbench-test-results"]


@case("results dir name too long")
def _long(tmp, ctx):
    _suite(tmp)
    ctx["message"] = "cannot hold this name"
    return ["run", tmp / "s.yaml", "--results-dir", tmp / ("r" * 300)]


@case("stage name too long for the filesystem")
def _long_stage(tmp, ctx):
    _suite(tmp, head=f"pretrain:\n  {'s' * 250}: {{task: faulty, dataset: builtin:unused, model: fine}}\n",
           body=bench(f"[pretrain:{'s' * 250}]"))
    ctx["message"] = "cannot hold the name"
    return run_args(tmp)


@case("store is a dangling symlink")
def _dangling(tmp, ctx):
    _suite(tmp)
    (tmp / "res" / "runs.jsonl").unlink()
    (tmp / "res" / "runs.jsonl").symlink_to(tmp / "nowhere" / "runs.jsonl")
    ctx["message"] = "which does not exist"
    return run_args(tmp)


@case("store is a folder")
def _store_dir(tmp, ctx):
    _suite(tmp)
    (tmp / "res" / "runs.jsonl").unlink()
    (tmp / "res" / "runs.jsonl").mkdir()
    ctx["message"] = "is not a file"
    return run_args(tmp)


@case("results dir is a file")
def _res_file(tmp, ctx):
    _suite(tmp)
    (tmp / "res" / "runs.jsonl").unlink()
    (tmp / "res").rmdir()
    (tmp / "res").write_text("x\n")
    ctx["message"] = "is a file"
    return run_args(tmp)


@case("work dir is a file")
def _work_file(tmp, ctx):
    _suite(tmp)
    (tmp / "res" / "work").write_text("x\n")
    ctx["message"] = "is a file, not a folder"
    return run_args(tmp)


@case("store not writable")
def _store_ro(tmp, ctx):
    _suite(tmp)
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
        _suite(tmp)
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
}


def _bad_line(record: dict) -> str:
    return json.dumps({**json.loads(KEEP), "run_id": "bad", **record})  # NaN/Infinity as Python's json writes them


def _store_case(name, fields):
    @case(f"run: store line with {name}")
    def run_setup(tmp, ctx):
        _suite(tmp)
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
    _suite(tmp, body=bench("[fine]", ", train_samples: [1000]"))
    ctx["message"] = "train_samples 1000 exceeds the 300"
    return run_args(tmp, "--dry-run")


@case("run: budget above the data")
def _run_budget(tmp, ctx):
    _suite(tmp, body=bench("[fine]", ", train_samples: [1000]"))
    ctx["message"] = "train_samples 1000 exceeds the 300"
    return run_args(tmp)


@case("dry-run: unreadable store line")
def _dry_store(tmp, ctx):
    _suite(tmp)
    (tmp / "res" / "runs.jsonl").write_text(KEEP + "\n" + '{"run_id": "half", "sta\n')
    ctx["message"] = "runs.jsonl:2 is not a result record"
    return run_args(tmp, "--dry-run")


@case("dry-run: results dir not writable")
def _dry_ro(tmp, ctx):
    _suite(tmp)
    ctx["message"] = "not writable"
    return ["run", tmp / "s.yaml", "--dry-run", "--results-dir", "/sys/transferbench-test-results"]


@case("dry-run: alias bomb")
def _dry_bomb(tmp, ctx):
    _suite(tmp, head=BOMB)
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
        _suite(tmp)
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
    from transferbench.runners.orchestrate.suite import expand_runs

    _suite(tmp, head="pretrain:\n  base: {task: faulty, dataset: builtin:unused, model: fine}\n",
           body=bench("[pretrain:base]"))
    ctx["path"] = [str(tmp)]
    sys.path.insert(0, str(tmp))
    try:
        stage = expand_runs(load_suite(tmp / "s.yaml"))[0].stage
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


@pytest.fixture
def reliability_env(tmp_path, monkeypatch, request):
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("TRANSFERBENCH_CACHE", str(tmp_path / "cache"))
    (tmp_path / "res").mkdir()
    (tmp_path / "res" / "runs.jsonl").write_text(KEEP + "\n")
    return tmp_path


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
    capfd.readouterr()
    before = _snapshot(tmp)
    from transferbench.runners.cli import main

    t0 = time.perf_counter()
    code = main(argv)  # an uncaught exception (a traceback) fails the test
    seconds = time.perf_counter() - t0
    monkeypatch.undo()
    out, err = capfd.readouterr()
    lines = err.strip().splitlines()
    assert "Traceback" not in out + err
    assert code == CASES[name].code, (code, err[-2000:])
    assert len(lines) == 1, lines
    message = ctx["message"].replace("{tmp}", str(tmp))
    prefix = "transferbench: warning: " if ctx.get("warning") else "transferbench: error: "
    assert lines[0].startswith(prefix) and message in lines[0], lines[0]
    if ctx.get("run_id_in_message"):
        assert "run " in lines[0] and "trains again" in lines[0]
    assert _snapshot(tmp) == before  # nothing written, nothing lost: the store is byte-identical
    if "bomb" in name:
        assert seconds < 1.0


def test_the_reliability_table_is_broad():
    assert len(CASES) > 100


# --- pieces the table cannot reach through the CLI ---------------------------------------------------------
@pytest.mark.parametrize("line", ["nan 0.5 0.5 0.1 0.1", "inf 0.5 0.5 0.1 0.1", "-inf 0.5 0.5 0.1 0.1",
                                  "0 nan 0.5 0.1 0.1", "1e999 0.5 0.5 0.1 0.1", "0 0.5 0.5 inf 0.1"])
def test_yolo_label_lines_with_non_finite_numbers_are_named(tmp_path, line):
    from transferbench.tasks.object_detection import _label_problem

    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text(line + "\n")
    problem = _label_problem(str(tmp_path / "images" / "a.png"), nc=4)
    assert problem and "a.txt:1" in problem


def test_a_decompression_bomb_is_skipped_and_named_like_a_corrupt_image(tmp_path):
    import struct
    import zlib

    import numpy as np
    from PIL import Image

    from transferbench.tasks.image_classification import _decode_resize

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bomb = tmp_path / "bomb.png"  # a 100 000 x 100 000 header over a few bytes of data
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(good)
    bad: list = []
    out = _decode_resize({"image": [{"path": str(bomb), "bytes": None}, {"path": str(good), "bytes": None}]},
                         "image", 4, bad)
    assert out["_ok"] == [False, True] and bad == [str(bomb)]


def test_claims_detect_stale_live_and_remote_holders(tmp_path):
    path = tmp_path / "r.claim"
    mine = Claim(path)
    assert mine.try_acquire() and not Claim(path).try_acquire()  # held by this live process
    mine.release()
    assert not path.exists()

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    path.write_text(json.dumps({"host": os.uname().nodename, "pid": dead.pid, "ticks": "1"}))
    taker = Claim(path)
    assert taker.try_acquire()  # the claimer is gone: stale, taken over
    assert json.loads(path.read_text())["pid"] == os.getpid()
    taker.release()

    path.write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    other = Claim(path)
    assert not other.try_acquire() and other.remote() and "delete" in other.describe()

    reused = {"host": os.uname().nodename, "pid": os.getpid(), "ticks": "not-my-start-time"}
    path.write_text(json.dumps(reused))
    assert Claim(path).try_acquire()  # a reused pid: a different process started at another time


def test_a_run_claimed_on_another_machine_is_not_trained(reliability_env, capsys):
    tmp = reliability_env
    _suite(tmp)
    from transferbench.config import load_suite
    from transferbench.runners.orchestrate.suite import expand_runs

    (run,) = expand_runs(load_suite(tmp / "s.yaml"))
    claims = tmp / "res" / "claims"
    claims.mkdir()
    (claims / f"{run.run_id}.claim").write_text(json.dumps({"host": "elsewhere", "pid": 1, "since": "x"}))
    before = (tmp / "res" / "runs.jsonl").read_bytes()
    assert run_main(*run_args(tmp)) == 0
    assert "claimed by another machine" in capsys.readouterr().out
    assert (tmp / "res" / "runs.jsonl").read_bytes() == before


def test_a_stale_claim_is_taken_over_and_the_run_recorded_once(reliability_env):
    tmp = reliability_env
    _suite(tmp)
    from transferbench.config import load_suite
    from transferbench.runners.orchestrate.suite import expand_runs

    (run,) = expand_runs(load_suite(tmp / "s.yaml"))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp / "res" / "claims").mkdir()
    (tmp / "res" / "claims" / f"{run.run_id}.claim").write_text(
        json.dumps({"host": os.uname().nodename, "pid": dead.pid, "ticks": "1"}))
    assert run_main(*run_args(tmp)) == 0
    ids = [r["run_id"] for r in Store(tmp / "res").records(strict=True)]
    assert ids.count(run.run_id) == 1 and not list((tmp / "res" / "claims").glob("*.claim"))


def test_a_run_recorded_meanwhile_by_another_invocation_is_not_trained_again(reliability_env):
    """`_claim_run` after another invocation recorded the run (even as failed) since this one read the store."""
    tmp = reliability_env
    _suite(tmp)
    from transferbench.config import load_suite
    from transferbench.runners.orchestrate.execute import process_state
    from transferbench.runners.orchestrate.suite import _claim_run, expand_runs

    (run,) = expand_runs(load_suite(tmp / "s.yaml"))
    store = Store(tmp / "res")
    since = len(store.records())
    assert _claim_run(run, tmp / "res", store, since, process_state())[0] == "run"
    Claim(tmp / "res" / "claims" / f"{run.run_id}.claim").path.unlink()
    store.append(result(run.run_id, status="failed"))
    assert _claim_run(run, tmp / "res", store, since, process_state()) == ("done", None)


def test_run_and_report_read_the_store_with_one_rule(tmp_path):
    """A failed-then-ok run and a duplicate: `run` resumes from and `report` tabulates the same records."""
    from transferbench.runners.report.merge import load

    store = Store(tmp_path)
    for rec in (result("a", status="failed", cost_usd=9.0), result("a", metric=0.7, cost_usd=1.0),
                result("a", metric=0.1, cost_usd=5.0), result("b", metric=0.2)):
        store.append(rec)
    runs = store.runs(strict=True)
    assert [(r["run_id"], r["metric"], r["cost_usd"]) for r in runs] == [("a", 0.7, 1.0), ("b", 0.2, None)]
    assert [{k: v for k, v in r.items() if k != "_store"} for r in load([tmp_path])] == runs
    assert store.completed() == {"a", "b"}


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
    from transferbench.runners.orchestrate.suite import expand_runs

    stage = expand_runs(load_suite(suite))[0].stage
    assert run_main("stages", suite) == 0
    folder = stage_dir(stage)
    real = folder.resolve()
    weights = real / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert run_main(*["run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0"]) == 0
    out = capsys.readouterr().out
    assert "the cached checkpoint is corrupt" in out and "rebuilding it" in out
    assert folder.is_symlink() and folder.resolve() != real and real.exists()  # swapped, the old one kept
    (rec,) = Store(tmp_path / "res").records(strict=True)
    assert rec["status"] == "ok"


# --- real processes ----------------------------------------------------------------------------------------
def _leaderboard_table(text: str) -> str:
    """The leaderboard's tables (without the lines that name where files went or when)."""
    return "\n".join(line for line in text.splitlines() if line.startswith("|"))


@pytest.mark.slow
def test_two_concurrent_invocations_train_each_run_once(tmp_path):
    suite = faulty_suite(tmp_path, bench("[fine, fine2, fine3]"), "seeds: [0, 1], epochs: 2, batch_size: 20, lr: 0.05")
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    procs = [start_cli("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    ids = [r["run_id"] for r in Store(tmp_path / "res").records(strict=True)]
    assert len(ids) == 6 and len(set(ids)) == 6  # each run_id exactly once
    report = subprocess.run([sys.executable, "-m", "transferbench", "report", tmp_path / "res", "--out",
                             tmp_path / "rep"], capture_output=True, text=True, env=env, timeout=300)
    assert report.returncode == 0
    tables = {_leaderboard_table(o[0]) for o in outs}
    assert _leaderboard_table(report.stdout) in tables and _leaderboard_table(report.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_detection_run_within_seconds(tmp_path, signum):
    suite = tmp_path / "s.yaml"
    suite.write_text(textwrap.dedent("""
        name: det
        defaults: {seeds: [0], epochs: 50, batch_size: 8, lr: default}
        benchmarks:
          - task: object-detection
            dataset: builtin:shapes
            models: [yolov8n.yaml]
            modes: [scratch]
            train_samples: [64]
            task_args: {imgsz: 64, ultralytics: {mosaic: 0.0}}
        """))
    proc = start_cli("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    work = tmp_path / "res" / "work"
    while proc.poll() is None and time.time() < deadline and not list(work.rglob("results.csv")):
        time.sleep(0.2)  # an epoch has finished: training is under way
    sent = time.perf_counter()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, err[-3000:]  # 130 / 143
    assert time.perf_counter() - sent < 5
    assert "Traceback" not in err
    assert not (tmp_path / "res" / "runs.jsonl").exists() or not (tmp_path / "res" / "runs.jsonl").read_text()


@pytest.mark.slow
def test_two_invocations_needing_one_uncached_stage_train_it_once(tiny_bert, tmp_path):
    suite = tmp_path / "s.yaml"
    suite.write_text(textwrap.dedent(f"""
        name: stagerace
        defaults: {{seeds: [0, 1], epochs: 1, batch_size: 8}}
        pretrain:
          base: {{task: text-classification, dataset: builtin:topics, model: {tiny_bert}, mode: finetune,
                  train_samples: 32, task_args: {{max_length: 8}}}}
        benchmarks:
          - task: text-classification
            dataset: builtin:topics
            models: [pretrain:base]
            modes: [finetune, linear-probe]
            train_samples: [16]
            task_args: {{max_length: 8}}
        """))
    env = {**os.environ, "TRANSFERBENCH_CACHE": str(tmp_path / "cache")}
    procs = [start_cli("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0",
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    text = "".join(o[0] for o in outs)
    assert text.count("pretrain stage base: training") == 1  # the other invocation waited and reused it
    records = Store(tmp_path / "res").records(strict=True)
    assert len(records) == 4 == len({r["run_id"] for r in records}) and all(r["status"] == "ok" for r in records)
