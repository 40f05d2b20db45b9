"""The plots draw the leaderboard's numbers: learning-curve points are cell means, the Pareto front is right."""
import math

from helpers import fixture_records

from transferbench.runners.report import plots
from transferbench.runners.report.leaderboard import build


def test_learning_curves_plot_the_cell_means_and_stds():
    board = build(fixture_records())
    fig = plots._figure()
    plots.learning_curves(board, [c for c in board.cells if c["n"]], fig)
    (ax,) = fig.axes
    assert ax.get_xscale() == "log" and [t.get_text() for t in ax.get_xticklabels()] == ["64", "256"]
    series = {c.get_label(): c for c in ax.containers}  # one errorbar container per mode
    assert set(series) == {"scratch (n=3/3)", "finetune (n=3/3)", "lora (n=3/1)"}
    line, _, (bars,) = series["finetune (n=3/3)"].lines  # the data line, the caps, the vertical bars
    xs, ys = line.get_data()
    assert list(xs) == [64, 256] and all(math.isclose(a, b) for a, b in zip(ys, [0.83, 0.93]))
    lows = [seg[0][1] for seg in bars.get_segments()]
    assert all(math.isclose(a, b) for a, b in zip(lows, [0.83 - 0.03, 0.93 - 0.02]))


def test_pareto_front():
    points = [(1.0, 0.5, "a"), (2.0, 0.4, "lower"), (2.0, 0.7, "b"), (3.0, 0.7, "tie, dearer"), (4.0, 0.9, "c")]
    assert [p[2] for p in plots.pareto_front(points, higher_is_better=True)] == ["a", "b", "c"]
    assert [p[2] for p in plots.pareto_front(points, higher_is_better=False)] == ["a", "lower"]


def test_every_plot_has_a_title_axis_labels_and_a_legend(tmp_path):
    board = build(fixture_records())
    figures = plots.write_all(board, tmp_path / "plots")
    assert [f["kind"] for f in figures] == ["learning", "pareto", "time-to-target", "training"]
    from PIL import Image

    for f in figures:
        with Image.open(f["file"]) as img:
            assert img.size == (750, 480) and len(img.convert("RGB").getcolors(maxcolors=100_000)) > 20
    assert figures[3]["caption"] == "Training curves at 256 examples: one line per run (seed)"


def test_every_mode_has_its_own_colour_and_marker():
    modes = ["scratch", "finetune", "lora", "linear-probe", "partial", "dora", "loha", "lokr", "ia3", "vera"]
    assert len({plots._color(m) for m in modes}) == len(modes) and len({plots._marker(m) for m in modes}) == len(modes)
    assert plots._color("my-peft") == plots._color("my-peft")  # a suite's own mode: a stable pick


def test_charts_with_nothing_to_draw_are_left_out(tmp_path):
    # no seed reached the target and each run evaluated once: no time-to-target bars, no training "curves" of dots
    records = [dict(r, time_to_target_s=None, curve=(r.get("curve") or [])[-1:]) for r in fixture_records()]
    figures = plots.write_all(build(records), tmp_path / "plots")
    assert [f["kind"] for f in figures] == ["learning", "pareto"]


def test_cost_axis_in_readable_units():
    assert plots.cost_scale([0.00002, 0.00018]) == (1e3, "USD per 1,000 runs")
    assert plots.cost_scale([0.5, 3.0]) == (1, "USD per run")
    assert plots.cost_scale([2e-9]) == (1e6, "USD per million runs")
    board = build(fixture_records())
    fig = plots._figure()
    plots.pareto(board, [c for c in board.cells if c["n"]], fig)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_xlabel() == "USD per run" and "e-" not in " ".join(t.get_text() for t in ax.get_xticklabels())
