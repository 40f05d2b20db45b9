"""The Welch intervals and p-values come from scipy.stats.ttest_ind(equal_var=False) on the seeds' values, and give
the numbers the published tables were computed with (a hand-written Welch–Satterthwaite interval before)."""
import json
from collections import defaultdict
from pathlib import Path

import pytest
from scipy.stats import ttest_ind

from transferbench.runners.report import stats
from transferbench.runners.report.cells import BUDGET_KEY, CELL_KEY, cell_key, run_key

REPO = Path(__file__).resolve().parents[1]
# scipy warns of precision loss when one side's seeds are all equal (variance exactly 0; the interval is exact)
pytestmark = pytest.mark.filterwarnings("ignore:Precision loss:RuntimeWarning")
PUBLISHED = sorted(p.parent for p in (REPO / "results" / "published").glob("*/leaderboard.json"))


def _published_cells(folder: Path) -> list[dict]:
    return json.loads((folder / "leaderboard.json").read_text())["cells"]


def _seeds_by_cell(folder: Path) -> dict:
    values = defaultdict(list)
    for line in (folder / "runs.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("status") == "ok" and r.get("metric") is not None:
            values[run_key(r)].append((r["seed"], r["metric"]))
    return {k: [m for _, m in sorted(v)] for k, v in values.items()}


@pytest.mark.parametrize("folder", PUBLISHED, ids=[p.name for p in PUBLISHED])
def test_welch_intervals_through_scipy_match_the_published_tables(folder):
    """Every Δ-vs-scratch interval of every published leaderboard, recomputed by scipy straight from the store's
    runs, is the published one (written by the hand-coded interval), and stats.welch_interval gives it too."""
    seeds = _seeds_by_cell(folder)
    cells = _published_cells(folder)
    scratch = {cell_key(c, BUDGET_KEY): c for c in cells if c["mode"] == "scratch" and c["n"]}
    checked = 0
    for c in cells:
        base = scratch.get(cell_key(c, BUDGET_KEY))
        if c["delta_ci"] is None or base is None:
            continue
        a, b = seeds[cell_key(c, CELL_KEY)], seeds[cell_key(base, CELL_KEY)]
        ci = ttest_ind(a, b, equal_var=False).confidence_interval(confidence_level=0.95)
        assert (ci.low, ci.high) == pytest.approx(c["delta_ci"], rel=1e-9, abs=1e-12)
        assert stats.welch_interval(dict(metric_values=a), dict(metric_values=b)) == pytest.approx(c["delta_ci"],
                                                                                                   rel=1e-9, abs=1e-12)
        checked += 1
    assert checked > 0


def test_pinned_numbers_of_the_quickstart_table():
    """Three published intervals written out (results/published/quickstart/leaderboard.json), and the p-value of
    one of them (the verdicts' Holm test starts from it)."""
    cells = {(c["model"], c["train_samples"], c["mode"]): c for c in _published_cells(REPO / "results/published/"
                                                                                        "quickstart")}
    pinned = {("efficientnet-lite0", 80, "lora"): (0.6229467950100644, 0.8014976494343797),
              ("all-minilm-l6-v2", 64, "finetune"): (0.45805077262184296, 0.9086158940448237),
              ("pretrain:glyphs-resnet", 200, "linear-probe"): (-0.1899154195877778, -0.01675124707888899)}
    for key, interval in pinned.items():
        cell, base = cells[key], cells[key[:2] + ("scratch",)]
        assert cell["delta_ci"] == pytest.approx(interval, rel=1e-9)
        assert stats.welch_interval(cell, base) == pytest.approx(interval, rel=1e-9)
    cell, base = cells[("efficientnet-lite0", 80, "lora")], cells[("efficientnet-lite0", 80, "scratch")]
    want = ttest_ind(cell["metric_values"], base["metric_values"], equal_var=False).pvalue
    assert stats.welch_p(cell, base) == pytest.approx(want, rel=1e-12) and stats.welch_p(cell, base) < 1e-3


def test_seeds_without_spread_and_single_seeds():
    one, flat = dict(metric_values=[0.5]), dict(metric_values=[0.5, 0.5])
    assert stats.welch_interval(one, flat) is None and stats.welch_p(one, flat) is None
    assert stats.welch_interval(flat, dict(metric_values=[0.4, 0.4])) == pytest.approx((0.1, 0.1))
    assert stats.welch_p(flat, dict(metric_values=[0.4, 0.4])) == 0.0 and stats.welch_p(flat, flat) == 1.0
