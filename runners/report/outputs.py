"""`transferbench report` and the end of `transferbench run`: stores -> runs (merge.load, each run_id once) -> the
leaderboard (leaderboard.build) -> every format (tables, plots, html, publish), and the plan (planner_report) when a
curve has enough budgets to fit. The numbers are computed in leaderboard.py and planner.py; this module only wires
loading to the writers, so both commands write the same files."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from transferbench.errors import UserError
from transferbench.folders import not_written

from . import html, plots, tables
from .leaderboard import build, default_title, suite_timings
from .merge import load, store_folder
from .planner_report import write_plan


def report(paths, out: Optional[Path] = None, publish: Optional[Path] = None, title: Optional[str] = None) -> str:
    """Every format for one or several stores, written to `out` (default: the one store's folder); the Markdown
    is returned for printing."""
    paths = [Path(p) for p in paths]
    if out is None:
        if len(paths) > 1:
            raise UserError("several stores merge into one leaderboard: say where it goes with --out DIR")
        out = store_folder(paths[0])
    painter = plots.Painter.fork()  # importing matplotlib while the leaderboard is built
    try:
        records = load(paths)
        board = build(records, title or default_title(records, paths), sources=paths, timings=suite_timings(paths))
        return _write(board, paths, Path(out), publish, painter)
    except OSError as err:  # read-only, full, over a file-size limit: one line, the store untouched
        raise not_written(err) from None
    finally:
        if painter is not None:
            painter.close()


def _write(board, paths, out: Path, publish: Optional[Path], painter=None) -> str:
    drawing = plots.start(board, out / "plots", painter)  # in the painter's helpers: the plan is written meanwhile
    if board.plannable:  # fewer budgets: nothing to fit, so no plan and no word about one
        write_plan(paths, out)
    figures = drawing()
    text = tables.write_all(board, out, figures)
    html.write(board, figures, out / "leaderboard.html")
    if publish is not None:
        from .publish import publish as publish_to

        publish_to(board, Path(publish), figures, plan_from=out if board.plannable else None)
    return text


def after_run(results_dir: Path, title: str) -> str:
    """What `transferbench run` writes and prints at its end: the same files as `report` on its store. When no
    leaderboard can be built (cells mixing configs: a suite edited between runs) leaderboard.md says why instead:
    the runs are done and must not turn into a crash."""
    try:
        return report([results_dir], title=title)
    except UserError as err:
        text = tables.unavailable(title, err)
        try:
            tables.write_markdown(text, Path(results_dir))
        except OSError as write_err:  # the runs are recorded; only their leaderboard file is missing
            text += f"\n({not_written(write_err, 'leaderboard.md')})\n"
        return text
