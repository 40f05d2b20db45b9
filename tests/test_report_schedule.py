"""The lr and schedule columns and the per-benchmark `equal:` note, read from the records (lr, lr_search, the
config's schedule, optimizer_steps, stop_reason, flops_estimate), the same in Markdown, CSV, JSON and HTML; older
records without the fields still report."""
import csv
import html
import json
import re

from helpers import fixture_records, result, write_store

from transferbench.runners.report.leaderboard import build
from transferbench.runners.report.outputs import report
from transferbench.runners.report.tables import to_markdown

MODES = ("scratch", "finetune", "lora", "linear-probe")


def run(mode, seed, budget=64, hyper=None, steps=12, **fields):
    """One record as `transferbench run` writes it (Result.to_json), with the schedule fields the report reads."""
    h = {"epochs": 3.0, "max_steps": None, "max_seconds": None, "batch_size": 16, "grad_accum": 1, "lr": 1e-3,
         "warmup_ratio": 0.1, "scheduler": "linear", **(hyper or {})}
    base = dict(suite="s", task="image-classification", dataset="builtin:digits", model="net", mode=mode, seed=seed,
                train_samples=budget, metric=0.5 + 0.01 * seed, optimizer_steps=steps, epochs_run=3.0,
                stop_reason="epochs", per_device_batch=16, grad_accum=1, num_processes=1, device_name="CPU: x",
                config={"task": "image-classification", "model": "net", "mode": mode, "seed": seed,
                        "train_samples": budget, "hyper": h})
    return json.loads(result(f"{mode}-{budget}-{seed}", **{**base, **fields}).to_json())


def rows(markdown, model="net"):
    """Markdown table rows by (budget, mode): the cells' texts."""
    out = {}
    for line in markdown.splitlines():
        if line.startswith(f"| {model} |"):
            parts = [p.strip() for p in line.split("|")[1:-1]]
            out[(int(parts[1]), parts[2])] = parts
    return out


def note(board, model="net"):
    (n,) = [n for n in board.equal if n["model"] == model]
    return n["text"]


def searched(chosen, kind="auto"):
    grid = [1e-4, 3e-4, 1e-3]
    return dict(lr=chosen, lr_search=dict(kind=kind, grid=grid, chosen=chosen, steps=5, validation_samples=50,
                                          seconds=1.5, scores=[dict(lr=x, metric=0.5, loss=1.0) for x in grid]))


def lr_records():
    out = []
    for seed in range(3):
        out.append(run("scratch", seed, hyper={"lr": 3e-4}))  # an older record: no lr field, config.hyper.lr
        out.append(run("finetune", seed, hyper={"lr": "auto"}, **searched([1e-4, 3e-4, 1e-4][seed])))
        out.append(run("lora", seed, hyper={"lr": [1e-4, 3e-4, 1e-3]}, **searched(1e-3, kind="grid")))
        out.append(run("linear-probe", seed, hyper={"lr": 0.01}, lr=0.01))
    return out


def test_lr_column_in_every_format(tmp_path):
    store = write_store(tmp_path / "store", lr_records())
    md = report([store])
    table = rows(md)
    assert [table[(64, m)][3] for m in MODES] == ["3e-4", "1e-4/3e-4 (auto)", "1e-3 (grid)", "1e-2"]
    header = next(line for line in md.splitlines() if line.startswith("| model |"))
    assert header.startswith("| model | train examples | mode | lr | schedule | metric (mean ± std) |")
    cells = {c["mode"]: c for c in json.loads((store / "leaderboard.json").read_text())["cells"]}
    assert cells["finetune"]["lr"] == [1e-4, 3e-4] and cells["finetune"]["lr_search"] == "auto"
    assert cells["scratch"]["lr"] == [3e-4] and cells["scratch"]["lr_search"] is None
    assert cells["lora"]["lr_text"] == "1e-3 (grid)"
    with open(store / "leaderboard.csv", newline="", encoding="utf-8") as f:
        lines = list(csv.DictReader(f))
    cell_rows = {r["mode"]: r for r in lines if r["row"] == "cell"}
    assert (cell_rows["finetune"]["lr"], cell_rows["finetune"]["lr_search"]) == ("0.0001 0.0003", "auto")
    assert cell_rows["scratch"]["lr"] == "0.0003" and cell_rows["scratch"]["schedule"] == "3 epochs"
    runs = {(r["mode"], r["seed"]): r for r in lines if r["row"] == "run"}
    assert float(runs[("finetune", "1")]["lr"]) == 3e-4 and runs[("finetune", "1")]["lr_search"] == "auto"
    assert float(runs[("scratch", "0")]["lr"]) == 3e-4 and runs[("scratch", "0")]["lr_search"] == ""
    page = (store / "leaderboard.html").read_text()
    shown = [html.unescape(t) for t in re.findall(r'<td class="lr" data-sort="[^"]*">([^<]*)</td>', page)]
    assert shown == ["3e-4", "1e-4/3e-4 (auto)", "1e-3 (grid)", "1e-2"]
    assert "net: equal: steps (12 optimizer steps of batch 16); the learning-rate search before training is not " \
           "included" in md
    assert "<li>net: equal: steps (12 optimizer steps of batch 16); the learning-rate search" in page


def test_a_mode_with_its_own_schedule_is_marked_and_the_note_says_what_differs():
    records = []
    for seed in range(2):
        records.append(run("scratch", seed, hyper={"epochs": 12.0}, steps=48))
        records.append(run("finetune", seed))
        records.append(run("lora", seed, hyper={"warmup_ratio": 0.0, "scheduler": "constant"}))
    board = build(records)
    table = rows(to_markdown(board))
    assert table[(64, "scratch")][4] == "12 epochs (others 3)"
    assert table[(64, "finetune")][4] == "3 epochs"
    assert table[(64, "lora")][4] == "3 epochs, warm-up 0 (others 0.1), constant (others linear)"
    assert note(board) == "not equal: scratch ran 4× the optimizer steps of the other modes"
    assert {c["mode"]: c["equal"] for c in board.cells} == {"scratch": "none", "finetune": "none", "lora": "none"}
    assert "- net: not equal: scratch ran 4× the optimizer steps of the other modes" in to_markdown(board)


def test_equal_steps_at_every_budget_and_compute_when_flops_agree():
    records = [run(m, s, b, hyper={"max_steps": 20}, steps=20, stop_reason="max_steps", flops_estimate=1e12 * b)
               for b in (64, 128) for s in range(2) for m in ("scratch", "finetune")]
    board = build(records)
    assert note(board) == "equal: steps, compute (20 optimizer steps of batch 16 at every budget)"
    assert {c["schedule"] for c in board.cells} == {"20 steps"}
    # LoRA's adapters add 5% to the FLOPs: the steps stay equal, the compute does not
    records += [run("lora", s, b, hyper={"max_steps": 20}, steps=20, flops_estimate=1.05e12 * b)
                for b in (64, 128) for s in range(2)]
    assert note(build(records)) == "equal: steps (20 optimizer steps of batch 16 at every budget)"
    # the estimate counts a full backward pass: equal estimates with frozen weights do not claim equal compute
    frozen = [run(m, s, b, hyper={"max_steps": 20}, steps=20, flops_estimate=1e12 * b,
                  params_total=1000, params_trainable=1000 if m == "finetune" else 10)
              for b in (64, 128) for s in range(2) for m in ("finetune", "lora")]
    assert note(build(frozen)) == "equal: steps (20 optimizer steps of batch 16 at every budget)"


def test_steps_that_grow_with_the_budget_and_a_budget_that_is_not_equal():
    records = [run(m, s, b, steps=b // 16) for b in (64, 128) for s in range(2) for m in ("scratch", "finetune")]
    assert note(build(records)) == "equal: steps (4–8 optimizer steps of batch 16, by budget)"
    records = [r for r in records if not (r["mode"] == "finetune" and r["train_samples"] == 128)]
    records += [run("finetune", s, 128, steps=16, hyper={"epochs": 6.0}) for s in range(2)]
    assert note(build(records)) == ("equal: steps (4 optimizer steps of batch 16) at 64 examples; not equal: finetune "
                                    "ran 2× the optimizer steps of scratch at 128 examples")


def test_a_shared_time_cap_and_equal_flops():
    capped = [run(m, s, hyper={"max_seconds": 30.0}, steps=steps, stop_reason="max_seconds")
              for s in range(3) for m, steps in (("scratch", 40), ("finetune", 38), ("linear-probe", 90))]
    board = build(capped)
    assert note(board) == "equal: wall (a shared 30 s cap ended every run)"
    assert {c["schedule"] for c in board.cells} == {"3 epochs, ≤30 s (cap hit 3/3)"}
    # one run ended by its epochs, not the cap: the cap held nothing equal
    capped[0]["stop_reason"] = "epochs"
    assert note(build(capped)) == "not equal: linear-probe ran 2.4× the optimizer steps of finetune"
    flops = [run(m, s, steps=steps, flops_estimate=f) for s in range(2)
             for m, steps, f in (("scratch", 10, 1.000e12), ("finetune", 10, 1.004e12), ("lora", 14, 0.998e12))]
    assert note(build(flops)) == "equal: compute (training FLOPs within 1%)"


def test_older_records_still_report():
    board = build(fixture_records())  # schema 1: no lr, optimizer_steps, flops or schedule beyond epochs
    assert note(board, "m") == "equal: unknown (the runs record no optimizer steps)"
    table = rows(to_markdown(board), "m")
    assert table[(256, "finetune")][3:5] == ["1e-3", "1 epoch"]
    assert all(c["lr"] == (1e-3,) and c["lr_search"] is None for c in board.cells)
