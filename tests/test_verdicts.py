"""Verdicts that hold (fairness rule 2c): a win needs a significant lead over every other mode (Welch tests,
Holm–Bonferroni), "adequate" uses a stated equivalence margin (never a std of zero), and cells still improving or too short to tell
make a verdict provisional and never bold. Constructed cells, no training."""
import pytest
from helpers import rec

from transferbench.runners.report import html, stats
from transferbench.runners.report.leaderboard import build
from transferbench.runners.report.tables import to_markdown


def cells(values: dict, budget=256, modes: dict = None, **fields) -> list[dict]:
    """Records of one budget: {mode: [metric per seed]}, settled (converged) unless `modes` ({mode: fields}) says
    otherwise; `fields` go to every record."""
    return [rec(mode, seed, m, budget, **{"converged": True, **fields, **(modes or {}).get(mode, {})})
            for mode, ms in values.items() for seed, m in enumerate(ms)]


def only(board):
    (verdict,) = board.budget_verdicts
    (line,) = board.headlines
    return verdict, line


def test_holm_adjusts_step_down():
    # sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04, then monotone
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.2]) == [0.2]


def test_a_zero_std_best_decides_nothing_and_a_cheaper_mode_within_the_margin_is_named():
    # LoRA 1.000 ± 0 over 480 eval examples; linear-probe 2 images in 480 behind on average, 1.5x cheaper per run
    board = build(cells({"lora": [1.0, 1.0, 1.0], "linear-probe": [480 / 480, 478 / 480, 476 / 480],
                         "scratch": [0.30, 0.32, 0.34]}, eval_samples=480))
    verdict, line = only(board)
    assert verdict["best_mode"] == "lora" and verdict["margin"] == 0.01  # max(1/480, 0.01)
    assert verdict["adequate"] == ["lora", "linear-probe"] and verdict["cheapest_mode"] == "linear-probe"
    assert verdict["cheapest_gap"] == pytest.approx(-2 / 480)
    low, high = verdict["cheapest_gap_ci"]
    assert low < verdict["cheapest_gap"] < high and high > 0  # the gap's 95% Welch interval, beside it
    assert "adequate (within the margin 0.01 of the best): linear-probe -0.0042 [" in verdict["text"]
    assert "cheapest adequate: linear-probe (0.9958" in verdict["text"]
    assert "cheapest adequate mode (within the margin of the best): linear-probe (-0.0042 [" in line["text"]
    # the margin grows with a small evaluation set: one example of 50 is 0.02
    small = build(cells({"lora": [1.0, 1.0, 1.0], "linear-probe": [0.98, 0.98, 0.98]}, eval_samples=50))
    assert only(small)[0]["margin"] == 0.02 and only(small)[0]["cheapest_mode"] == "linear-probe"


def test_a_wide_std_on_the_best_does_not_make_a_distant_mode_adequate():
    # finetune 0.80 ± 0.21: linear-probe 0.19 behind was "within one std"; the margin (0.01) says it is not
    board = build(cells({"finetune": [0.56, 0.80, 1.04], "linear-probe": [0.60, 0.61, 0.62]}))
    verdict, line = only(board)
    assert verdict["adequate"] == ["finetune"] and verdict["cheapest_mode"] == "finetune"
    assert "no other mode within the margin 0.01 of the best" in verdict["text"]
    assert "cheapest adequate" not in line["text"]


def test_a_wide_runner_up_is_no_win():
    board = build(cells({"finetune": [0.80, 0.86, 0.83], "lora": [0.70, 0.95, 0.80], "scratch": [0.30, 0.31, 0.32]}))
    verdict, line = only(board)
    closest = verdict["lead"][0]
    assert closest["mode"] == "lora" and closest["ci"][0] < 0 < closest["ci"][1] and not closest["significant"]
    assert verdict["state"] == "ahead" and "wins" not in line["text"] and "wins" not in verdict["text"]
    assert line["text"].startswith("topics, m (one budget: 256 examples): finetune ahead (lead over lora not "
                                   "significant)")
    assert "ahead (lead over lora +0.013 [" in verdict["text"] and "Holm p" in verdict["text"]


def test_a_significant_lead_over_the_runner_up_but_not_over_a_third_mode_is_no_win():
    records = cells({"finetune": [0.90, 0.91, 0.92], "lora": [0.86, 0.865, 0.87], "linear-probe": [0.50, 0.95, 0.70]})
    verdict, line = only(build(records))
    by_mode = {r["mode"]: r for r in verdict["lead"]}
    assert by_mode["lora"]["significant"] and not by_mode["linear-probe"]["significant"]
    assert by_mode["lora"]["p_holm"] == pytest.approx(2 * by_mode["lora"]["p"])  # the smaller of 2 p-values, x2
    assert verdict["state"] == "ahead"
    # the closest mode whose lead is not significant is named, not the runner-up by mean
    assert "finetune ahead (lead over linear-probe not significant)" in line["text"] and "**" not in line["markdown"]
    # without the wide mode, the same lead is a win, and bold
    clear = [r for r in records if r["mode"] != "linear-probe"]
    verdict, line = only(build(clear))
    assert verdict["state"] == "wins" and "**finetune wins**" in line["markdown"]


def test_each_comparison_is_held_to_the_holm_level():
    # two comparisons, each p < 0.05 on its own, but the smaller is not below 0.05 / 2: no win
    records = cells({"finetune": [0.90, 0.92, 0.94], "lora": [0.85, 0.87, 0.89], "linear-probe": [0.85, 0.87, 0.89]})
    verdict, _ = only(build(records))
    assert all(r["p"] < 0.05 < r["p_holm"] for r in verdict["lead"]) and verdict["state"] == "ahead"


@pytest.mark.parametrize("unsettled, marker", [
    (dict(converged=False, convergence="training loss -40% over the last quarter of steps"),
     "finetune still improving at 256 examples (3/3 runs)"),
    (dict(converged=None, convergence="4 optimizer steps: too short to tell"),
     "too short to tell: finetune at 256 examples (3/3 runs)")])
def test_a_win_on_unsettled_cells_is_provisional_and_never_bold(unsettled, marker):
    records = cells({"finetune": [0.90, 0.91, 0.92], "lora": [0.60, 0.61, 0.62], "scratch": [0.30, 0.31, 0.32]},
                    modes={"finetune": unsettled})
    board = build(records)
    verdict, line = only(board)
    assert verdict["state"] == "wins" and verdict["provisional"][0]["mode"] == "finetune"
    assert verdict["text"].endswith(f"; provisional: {marker}")
    assert line["text"].startswith("topics, m (one budget: 256 examples): finetune wins (provisional); vs scratch: "
                                   "+0.60 (significant, provisional)")
    assert line["text"].endswith(f"; provisional: {marker}") and line["provisional"]
    assert not any(bold for _, bold in line["parts"]) and "**" not in line["markdown"]
    md = to_markdown(board)
    assert "**finetune" not in md.split("\n\n")[1] and "<strong>" not in html.render(board, [])
    # an old store without convergence fields (converged None, no reason) is not provisional
    old = build([dict(r, converged=None, convergence=None) for r in records])
    assert "**finetune wins**" in only(old)[1]["markdown"] and not only(old)[0]["provisional"]


def test_the_report_states_its_rules():
    md = to_markdown(build(cells({"finetune": [0.90, 0.91, 0.92], "lora": [0.60, 0.61, 0.62]})))
    assert stats.RULES in md
    assert "Holm–Bonferroni-adjusted p ≤ 0.05" in md
    assert "max(one evaluation example = 1 / the eval examples, 0.01)" in md
    assert "a claim that rests on either is provisional and never bold" in md
