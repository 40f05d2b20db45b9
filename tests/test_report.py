"""The leaderboard's numbers equal a hand computation on a fixture store, in every format; verdicts, merging
and the awkward rows (failed, no eval, one seed); MFU per cell."""
import csv
import json
import math
import statistics

import pytest
from scipy.stats import t as student_t

from helpers import cli, fixture_records, rec, write_store
from transferbench.errors import UserError
from transferbench.runners.cli import main
from transferbench.runners.report import fmt, outputs as report
from transferbench.runners.report.leaderboard import build, MODE_ORDER
from transferbench.runners.report.merge import load
from transferbench.runners.report.outputs import after_run
from transferbench.runners.report.stats import welch_interval
from transferbench.runners.report.tables import to_markdown


def test_report_shows_mean_mfu_per_cell():
    from transferbench.runners.report.tables import to_markdown

    base = dict(task="t", dataset="d", model="m", train_samples=8, mode="finetune", status="ok", metric=0.5,
                metric_name="accuracy", higher_is_better=True, config={})
    board = report.build([dict(base, run_id="a", seed=0, mfu=0.2), dict(base, run_id="b", seed=1, mfu=0.3)])
    assert board.cells[0]["mfu"] == pytest.approx(0.25)
    assert to_markdown(board).count("| 25.00% |") == 1  # the last column of its row


def by_key(cells):
    return {(c["train_samples"], c["mode"]): c for c in cells}


def test_cells_match_hand_computation():
    cells = by_key(build(fixture_records()).cells)
    ft, sc, lora = cells[(64, "finetune")], cells[(64, "scratch")], cells[(64, "lora")]
    assert ft["n"] == 3 and math.isclose(ft["metric_mean"], 0.83)
    assert math.isclose(ft["metric_std"], math.sqrt(((0.80 - 0.83) ** 2 + (0.86 - 0.83) ** 2) / 2))  # sample std
    assert math.isclose(ft["delta_vs_scratch"], 0.83 - 0.27) and sc["delta_vs_scratch"] == 0
    # Welch: se² = s1²/n1 + s2²/n2; Welch–Satterthwaite degrees of freedom; t quantile at 97.5%
    v1, v2 = 0.03**2 / 3, 0.02**2 / 3
    dof = (v1 + v2) ** 2 / (v1**2 / 2 + v2**2 / 2)
    half = student_t.ppf(0.975, dof) * math.sqrt(v1 + v2)
    assert math.isclose(dof, 3.4845, rel_tol=1e-4) and math.isclose(half, 0.0613, abs_tol=1e-4)
    assert all(math.isclose(a, b) for a, b in zip(ft["delta_ci"], (0.56 - half, 0.56 + half)))
    assert ft["delta_significant"] is True
    big = cells[(256, "finetune")]  # +0.01 with overlapping seeds: the interval spans 0
    assert big["delta_ci"][0] < 0 < big["delta_ci"][1] and big["delta_significant"] is False
    assert math.isclose(big["time_to_target_s"], 5.0) and big["target_reached"] == 3
    assert math.isclose(lora["trainable_share"], 0.003) and math.isclose(lora["cost_usd"], 0.012)  # per run
    assert math.isclose(lora["cost_per_point"], 0.012 / 82)
    assert math.isclose(ft["device_hours_total"], 0.03) and math.isclose(ft["cost_usd_total"], 0.06)
    assert [c["best"] for c in (sc, ft, lora)] == [False, True, False]


def test_awkward_cells():
    cells = by_key(build(fixture_records()).cells)
    failed, no_eval, single = cells[(64, "linear-probe")], cells[(256, "linear-probe")], cells[(256, "lora")]
    assert failed["status"] == "failed" and failed["n"] == 0 and failed["errors"] == (
        "seed 0: failed: RuntimeError: boom",)  # budget from the config: the run failed before resolving it
    assert no_eval["status"] == "no eval" and no_eval["metric_mean"] is None and no_eval["delta_vs_scratch"] is None
    assert single["n"] == 1 and single["metric_std"] is None and single["delta_ci"] is None
    assert math.isclose(single["delta_vs_scratch"], 0.89 - 0.92)
    assert fmt.spread(single) == "n=1" and fmt.delta(single) == "-0.0300 (no CI: n=1)"


def test_welch_interval_edge_cases():
    one = dict(n=1, metric_mean=0.5, metric_std=None, metric_values=[0.5])
    same = dict(n=2, metric_mean=0.5, metric_std=0.0, metric_values=[0.5, 0.5])
    assert welch_interval(one, same) is None
    assert welch_interval(same, dict(same, metric_mean=0.4, metric_values=[0.4, 0.4])) == pytest.approx((0.1, 0.1))


def test_verdicts_are_computed_from_the_cells():
    board = build(fixture_records())
    v64, v256 = board.budget_verdicts
    # 64: finetune 0.83 ± 0.03 is best; lora 0.82 trails by 0.01, within the margin (no eval_samples: 0.01), and
    # costs $0.012 < $0.02
    assert (v64["best_mode"], v64["adequate"], v64["cheapest_mode"]) == ("finetune", ["finetune", "lora"], "lora")
    assert v64["margin"] == 0.01 and v64["state"] == "ahead"
    assert ("adequate (within the margin 0.01 of the best): lora -0.010 [-0.076, +0.056]; cheapest adequate: lora "
            "(0.8200, $0.012 per run, $0.0001463 per accuracy point)") in v64["text"]
    # 256: scratch 0.92 trails finetune by 0.01 and costs the same: the tie goes to the better metric
    assert v256["adequate"] == ["scratch", "finetune"] and v256["cheapest_mode"] == "finetune"
    (cross,) = board.crossovers
    assert cross["crossover_budget"] == 256 and "from 256 examples on (budgets run: 64, 256)" in cross["text"]
    never = [r for r in fixture_records() if not (r["mode"] == "scratch" and r["train_samples"] == 256)]
    never += [rec("scratch", s, m) for s, m in enumerate([0.60, 0.62, 0.64])]
    (cross,) = build(never).crossovers
    assert cross["crossover_budget"] is None and "not reached within the budgets run (64, 256)" in cross["text"]


def test_verdict_without_prices_uses_device_hours():
    records = [dict(r, cost_usd=None, price_per_device_hour=None) for r in fixture_records()]
    v64 = build(records).budget_verdicts[0]
    assert v64["cheapest_by"] == "device_hours" and v64["cheapest_mode"] == "lora"
    assert "0.006 device-h per run" in v64["text"]


def _md_rows(text):
    rows = {}
    for line in text.splitlines():
        parts = [p.strip() for p in line.split("|")[1:-1]]
        if line.startswith("| m |"):
            rows[(int(parts[1]), parts[2])] = parts
    return rows


def markdown(records):
    return to_markdown(build(records))


def test_markdown_rows():
    rows = _md_rows(markdown(fixture_records()))
    assert rows[(64, "finetune")][5:8] == ["**0.8300 ± 0.0300 (n=3)**", "+0.5600 [+0.4987, +0.6213]", "0/3 reached"]
    assert rows[(64, "lora")][11:15] == ["0.30%", "0.006", "$0.012", "$0.0001463"]
    assert rows[(256, "finetune")][7] == "5.0 s" and rows[(256, "scratch")][6] == "baseline"
    assert rows[(256, "lora")][5] == "0.8900 n=1" and "±" not in rows[(256, "lora")][5]
    assert rows[(64, "linear-probe")][5] == "failed (1 run): seed 0: failed: RuntimeError: boom"
    assert rows[(256, "linear-probe")][5] == "no eval (1 run)" and rows[(256, "linear-probe")][6] == "—"
    assert rows[(64, "finetune")][3:5] == ["1e-3", "1 epoch"]  # the fixture's config.hyper (no lr field: older)
    text = markdown(fixture_records())
    assert "$2.0000 per device-hour (price table dated 2026-11-25)" in text
    assert "0.148 device-h, $0.296" in text  # totals: 0.03 + 0.03 + 0.018 + 0 (failed) + 0.03 + 0.03 + 0.006 + 0.004
    assert "seed 0 (run linear-probe-64-0): failed: RuntimeError: boom" in text


@pytest.mark.slow
def test_every_format_agrees(tmp_path):
    store = write_store(tmp_path / "store", fixture_records())
    proc = cli("report", store)
    assert proc.returncode == 0, proc.stderr
    md = (store / "leaderboard.md").read_text()
    assert md.strip() == proc.stdout.strip()
    data = json.loads((store / "leaderboard.json").read_text())
    with open(store / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    runs = [r for r in rows if r["row"] == "run"]
    csv_cells = {(int(r["train_samples"]), r["mode"]): r for r in rows if r["row"] == "cell"}
    assert len(runs) == len(fixture_records()) == len(data["runs"]) and len(csv_cells) == len(data["cells"]) == 8
    md_rows = _md_rows(md)
    for cell in data["cells"]:
        key = (cell["train_samples"], cell["mode"])
        row = csv_cells[key]
        seeds = [float(r["metric"]) for r in runs
                 if (r["train_samples"], r["mode"]) == (str(key[0]), key[1]) and r["metric"]]
        if cell["n"]:
            # JSON == CSV cell == the mean of the CSV run rows == the Markdown text
            assert math.isclose(float(row["metric"]), cell["metric_mean"])
            assert math.isclose(statistics.fmean(seeds), cell["metric_mean"])
            assert md_rows[key][5].strip("*").startswith(fmt.metric(float(row["metric"])))
        if cell["delta_ci"]:
            low, high = float(row["delta_ci_low"]), float(row["delta_ci_high"])
            assert [low, high] == pytest.approx(cell["delta_ci"])
            assert f"[{fmt.signed(low)}, {fmt.signed(high)}]" in md_rows[key][6]
        if cell["cost_usd"] is not None:
            assert float(row["cost_usd"]) == pytest.approx(cell["cost_usd"])
            assert md_rows[key][13] == fmt.money(cell["cost_usd"])
        assert (row["best"] == "True") == cell["best"] == md_rows[key][5].startswith("**")
    assert [v["text"] for v in data["verdicts"]["budgets"] + data["verdicts"]["crossovers"]] == [
        line[2:] for line in md.splitlines() if line.startswith("- m") and not line.startswith("- m: equal")]
    assert sorted(p.name for p in (store / "plots").iterdir()) == [
        f"{kind}-text-classification-builtin-topics.png" for kind in ("learning", "pareto", "time-to-target", "training")]
    assert "leaderboard.html" in {p.name for p in store.iterdir()}


def test_merging_stores_counts_each_run_once(tmp_path):
    records = fixture_records()
    a = write_store(tmp_path / "a", records[:10])
    b = write_store(tmp_path / "b", [dict(r, suite="other") for r in records[8:]])  # 2 runs in both
    out = tmp_path / "merged"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    data = json.loads((out / "leaderboard.json").read_text())
    assert len(data["runs"]) == len(records)
    lora = next(c for c in data["cells"] if (c["train_samples"], c["mode"]) == (64, "lora"))
    assert lora["n"] == 3 and lora["seeds"] == [0, 1, 2]


def test_a_retried_run_counts_once_as_ok(tmp_path):
    first = rec("finetune", 0, None, status="failed", error="OOM")
    board = build(load([write_store(tmp_path, [first, rec("finetune", 0, 0.9), rec("finetune", 0, 0.1)])]))
    assert [(r["status"], r["metric"]) for r in board.records] == [("ok", 0.9)]


@pytest.mark.slow
def test_refuses_to_merge_different_configs(tmp_path):
    a = write_store(tmp_path / "a", [rec("finetune", 0, 0.9)])
    other = rec("finetune", 1, 0.8)
    other["config"] = {**other["config"], "hyper": {"lr": 5e-5, "epochs": 1}}
    b = write_store(tmp_path / "b", [other])
    proc = cli("report", a, b, "--out", tmp_path / "out")
    assert proc.returncode == 2 and not proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert "finetune-256-0" in line and "finetune-256-1" in line and "hyper.lr (0.001 vs 5e-05)" in line
    assert not (tmp_path / "out").exists()
    with pytest.raises(UserError):
        build([rec("finetune", 0, 0.9), other])
    # `transferbench run` prints (and writes) the reason instead of a table rather than crashing after training
    mixed = write_store(tmp_path / "mixed", [rec("finetune", 0, 0.9), other])
    assert "No leaderboard: runs finetune-256-0" in after_run(mixed, "Leaderboard: fixture")
    assert (mixed / "leaderboard.md").read_text().startswith("## Leaderboard: fixture\n\nNo leaderboard: runs")


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys):
    a = write_store(tmp_path / "a", [rec("finetune", 0, 0.9)])
    for args, words in [([tmp_path / "nothing"], "no results store"), ([a, a], "--out")]:
        assert main(["report", *map(str, args)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and words in err


def test_mode_order_matches_the_modes():
    from transferbench.modes import MODES

    assert list(MODE_ORDER) == list(MODES)


def test_lower_is_better_metrics_pick_the_lowest():
    records = [rec(m, s, v, metric_name="loss", higher_is_better=False)
               for m, vs in (("scratch", [2.0, 2.2]), ("finetune", [1.0, 1.2]), ("lora", [1.1, 1.3]))
               for s, v in enumerate(vs)]
    board = build(records)
    assert [c["mode"] for c in board.cells if c["best"]] == ["finetune"]
    (verdict,) = board.budget_verdicts
    # lora's 1.2 trails by 0.1 (less than finetune's std 0.14, which decides nothing), beyond the margin: 1% of 1.1
    assert verdict["best_mode"] == "finetune" and verdict["cheapest_mode"] == "finetune"
    assert verdict["margin"] == pytest.approx(0.011) and verdict["adequate"] == ["finetune"]
    assert all(c["cost_per_point"] is None for c in board.cells)  # "points" only mean something for higher-better


def test_cells_are_computed_once_and_no_writer_can_change_them():
    """Energy and adapter size are cell values of the build, like every other: the formats agree whichever writer
    runs first, and a writer that tries to change a cell fails."""
    import copy
    import dataclasses

    from transferbench.runners.report import html, tables

    records = [dict(r, energy_source="rapl", energy_kwh=0.001 * (r["seed"] + 1), co2_kg=0.0005 * (r["seed"] + 1),
                    adapter_bytes=4096 if r["mode"] == "lora" else None) for r in fixture_records()]
    board = build(records)
    lora = by_key(board.cells)[(64, "lora")]
    assert math.isclose(lora["energy_kwh"], 0.002) and math.isclose(lora["co2_kg"], 0.001)
    assert lora["adapter_bytes"] == 4096 and by_key(board.cells)[(64, "scratch")]["adapter_bytes"] is None
    before = json.dumps(tables.to_json(board), default=str)
    assert "energy/run" in to_markdown(board) and "adapter size" in html.render(board)
    assert json.dumps(tables.to_json(board), default=str) == before
    with pytest.raises(TypeError, match="read-only"):
        lora["energy_kwh"] = 0.0
    with pytest.raises(TypeError, match="read-only"):
        lora.update(best=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        board.cells = ()
    assert lora["seeds"] == (0, 1, 2) and copy.deepcopy(lora) == lora and dict(lora)["n"] == 3
    assert "energy_kwh" not in build(fixture_records()).cells[0]  # older stores: no energy field, no column


def test_a_report_over_the_file_size_limit_is_one_line_and_exit_2(tmp_path):
    """`ulimit -f 4` while the report is written: Python ignores SIGXFSZ, so the write fails with EFBIG; one line
    naming the file, exit 2, the store untouched."""
    import resource
    import subprocess
    import sys

    from helpers import HANG_GUARD_S

    store = write_store(tmp_path / "store", fixture_records())
    before = (store / "runs.jsonl").read_bytes()
    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))  # noqa: E731 - ulimit -f 4
    proc = subprocess.run([sys.executable, "-m", "transferbench", "report", str(store), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, preexec_fn=limit, timeout=HANG_GUARD_S)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert lines[0].startswith("transferbench: error: writing the report failed: ") and "File too large" in lines[0]
    assert (store / "runs.jsonl").read_bytes() == before
