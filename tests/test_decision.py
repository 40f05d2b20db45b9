"""The decision the report opens with (runners/report/decision.py): per benchmark, the mode to use over each range of
budgets (the cheapest adequate mode), its cost, what it beats significantly, whether scratch catches up; a claim that
rests on a cell too short to tell or still improving is provisional and never bold; the Markdown, the HTML and the
published decisions.json say the same thing, and the details wait in a fold."""
from helpers import fixture_records

from transferbench.runners.report import decision, html
from transferbench.runners.report.leaderboard import build
from transferbench.runners.report.tables import hidden_note, to_markdown


def _too_short(records, mode="scratch", budget=64):
    return [dict(r, converged=None, convergence="too short to tell: 2 optimizer steps")
            if (r["mode"], r["train_samples"]) == (mode, budget) else r for r in records]


def test_decision_uses_the_cheapest_adequate_mode_per_budget_range():
    board = build(fixture_records())
    (d,) = board.decisions
    # 64: finetune 0.83 leads, lora 0.82 is within the margin at 0.012 $/run against 0.02: lora, 1.7x cheaper;
    # 256: finetune 0.93 leads (lora has one seed); scratch 0.92 is within the margin from 256 on
    assert d["text"] == ("topics · m: use lora up to 64 examples (ties the best, 1.7× cheaper), finetune from 256 "
                         "examples (best mean); scratch catches up from 256 examples")
    first, second = decision.table_rows(board.decisions)
    assert (first["benchmark"], first["examples"], first["use"], first["cost"]) == ("topics · m", "64",
                                                                                  "lora (ties the best)", "$0.012")
    assert first["beats"] == [("scratch", True)]  # 0.82 ± 0.01 vs 0.27 ± 0.02: significant, both settled
    assert (second["benchmark"], second["use"], second["beats"]) == ("", "finetune", [])
    md = to_markdown(board)
    assert md.splitlines()[2] == f"- {d['text']}"  # the decision opens the page
    assert "| topics · m | 64 | lora (ties the best) | 0.82 accuracy | $0.012 | **scratch** |" in md
    assert md.index("<details>") < md.index("### text-classification · builtin:topics") < md.index("</details>")


def test_a_cell_too_short_to_tell_never_supports_a_bold_claim():
    board = build(_too_short(fixture_records()))
    first, _ = decision.table_rows(board.decisions)
    assert first["beats"] == [("scratch", False)]
    md = to_markdown(board)
    assert "| $0.012 | scratch (provisional) |" in md and "**scratch**" not in md.split("<details>")[0]
    page = html.render(board)
    assert "scratch (provisional)" in page and "<strong>scratch</strong>" not in page.split("<details")[0]
    # the recommended mode itself unsettled: the whole line is provisional
    shaky = build(_too_short(fixture_records(), mode="lora"))
    assert shaky.decisions[0]["text"].endswith("— provisional: runs still improving or too short to tell")


def test_empty_columns_are_hidden_with_a_note():
    board = build(fixture_records())  # CPU: no stated peak, no MFU in any row
    note = hidden_note(board)
    assert note == "Hidden (empty in every row): MFU (no stated peak FLOPs for the device, as for CPUs)."
    md = to_markdown(board)
    assert "| MFU |" not in md and note in md
    measured = build([dict(r, mfu=0.25) for r in fixture_records()])
    assert "| MFU |" in to_markdown(measured) and hidden_note(measured) == ""


def test_still_improving_is_highlighted_only_where_it_could_change_the_decision():
    records = [dict(r, converged=False) if r["mode"] in ("scratch", "lora") and r["train_samples"] == 64 else r
               for r in fixture_records()]
    page = html.render(build(records))
    # lora ties the best at 64 (yellow); scratch trails far behind (its text says so, no highlight)
    assert page.count("metric improving") == 1 and "still improving 3/3" in page
