"""The committed leaderboards are what the report code computes from the committed stores: every number, verdict
line, headline and plan (plan.md, plan.json where the store has curves to fit) in results/published follows from
the runs.jsonl beside it."""
import json
from pathlib import Path

import pytest

from transferbench.runners.report.outputs import report

from helpers import assert_json_close

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = sorted(p.parent.name for p in (REPO / "results" / "published").glob("*/runs.jsonl"))
TITLES = {"quickstart": "transferbench quickstart (offline default suite), 2-core CPU",
          "topics": "transferbench topics (256 examples), 2-core CPU",
          "lr-default": "transferbench lr-auto suite at the built-in default learning rates (lr: default), 2-core CPU",
          "lr-auto": "transferbench lr-auto suite (lr: auto, searched once per cell), 2-core CPU",
          "peft-methods": "transferbench peft-methods (MiniLM, 256 examples, 10 modes), 2-core CPU",
          "metric-mcc": "transferbench metric-mcc (the stage ResNet on digits judged by matthews_correlation), "
                        "2-core CPU",
          "metric-sklearn": "transferbench metric-sklearn (the stage ResNet on digits judged by sklearn:balanced_accuracy), "
                            "2-core CPU",
          "crossover": "transferbench crossover study (digits up to 1,438 images: stage ResNet and EfficientNet-Lite0; "
                       "topics up to 512 sentences: MiniLM), 2-core CPU"}


@pytest.mark.parametrize("name", PUBLISHED)
def test_published_leaderboard_is_regenerated_identically_from_its_store(name, tmp_path, monkeypatch):
    monkeypatch.chdir(REPO)  # the page names its store by the relative path it was made from
    store = Path("results/published") / name
    report([store], out=tmp_path, title=TITLES[name])
    committed = (store / "leaderboard.md").read_text()
    assert (tmp_path / "leaderboard.md").read_text() == committed
    assert_json_close(json.loads((tmp_path / "leaderboard.json").read_text()),
                      json.loads((store / "leaderboard.json").read_text()))
    assert "Verdicts (computed from the rows above)" in committed
    # the plan is part of the report once a curve has enough budgets to fit; without one, neither side has it
    for name in ("plan.md", "plan.json"):
        if (store / name).exists() and name == "plan.json":  # fitted numbers: equal within a tolerance
            assert_json_close(json.loads((tmp_path / name).read_text()), json.loads((store / name).read_text()))
        elif (store / name).exists():
            assert (tmp_path / name).read_text() == (store / name).read_text(), name
        else:
            assert not (tmp_path / name).exists(), f"the report writes {name}: commit it beside the store"
    records = [json.loads(line) for line in (store / "runs.jsonl").read_text().splitlines()]
    assert len({r["seed"] for r in records}) == 3 and all(r["status"] == "ok" for r in records)


def test_the_default_suite_is_published():
    assert "quickstart" in PUBLISHED
