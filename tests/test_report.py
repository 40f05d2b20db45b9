"""The leaderboard's numbers equal a hand computation on a fixture store."""
import json
import math

from helpers import cli
from transferbench.runners.report import cells, markdown


def rec(mode, seed, metric, **kw):
    base = dict(run_id=f"{mode}{seed}", task="text-classification", dataset="builtin:topics", model="m", mode=mode,
                seed=seed, train_samples=256, metric_name="accuracy", higher_is_better=True, metric=metric,
                target=0.9, time_to_target_s=None, train_seconds=10.0, samples_per_second=100.0, params_total=1000,
                params_trainable=1000, peak_memory_bytes=2**30, device_hours=0.01, cost_usd=0.02,
                price_per_device_hour=2.0, price_date="2026-11-25", device_name="CPU: x", status="ok", error=None)
    return {**base, **kw}


RECORDS = [
    rec("scratch", 0, 0.25), rec("scratch", 1, 0.27), rec("scratch", 2, 0.29),
    rec("finetune", 0, 0.90, time_to_target_s=4.0), rec("finetune", 1, 0.96, time_to_target_s=6.0),
    rec("finetune", 2, 0.93, time_to_target_s=5.0),
    rec("lora", 0, 0.80, params_trainable=3, time_to_target_s=None),
    rec("linear-probe", 0, None, status="failed", error="RuntimeError: boom"),
]


def test_cells_match_hand_computation():
    by_mode = {c["mode"]: c for c in cells(RECORDS)}
    assert set(by_mode) == {"scratch", "finetune", "lora"}  # the failed run forms no cell
    ft, sc = by_mode["finetune"], by_mode["scratch"]
    assert ft["n"] == 3 and math.isclose(ft["metric_mean"], 0.93)
    assert math.isclose(ft["metric_std"], math.sqrt(((0.90 - 0.93) ** 2 + (0.96 - 0.93) ** 2) / 2))  # sample std
    assert math.isclose(ft["delta_vs_scratch"], 0.93 - 0.27)
    assert math.isclose(ft["time_to_target_s"], 5.0) and ft["target_reached"] == 3
    assert math.isclose(ft["device_hours"], 0.03) and math.isclose(ft["cost_usd"], 0.06)
    assert sc["delta_vs_scratch"] == 0 and by_mode["lora"]["metric_std"] is None
    assert math.isclose(by_mode["lora"]["trainable_share"], 0.003)


def test_markdown_shows_the_same_numbers():
    text = markdown(RECORDS)
    lines = {line.split("|")[5].strip(): line for line in text.splitlines() if line.startswith("| text-")}
    assert "accuracy 0.9300 ± 0.030 (n=3)" in lines["finetune"] and "+0.6600" in lines["finetune"]
    assert "5.0 s" in lines["finetune"] and "0.03000" in lines["finetune"] and "0.06000" in lines["finetune"]
    assert "accuracy 0.8000 n=1" in lines["lora"] and "0/1 reached" in lines["lora"] and "0.30%" in lines["lora"]
    assert "$2.0000 per device-hour" in text and "dated 2026-11-25" in text
    assert "linear-probe" in text and "failed: RuntimeError: boom" in text


def test_report_command_prints_and_writes_the_leaderboard(tmp_path):
    (tmp_path / "runs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    proc = cli("report", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "accuracy 0.9300 ± 0.030 (n=3)" in proc.stdout
    assert (tmp_path / "leaderboard.md").read_text().strip() == proc.stdout.strip()
