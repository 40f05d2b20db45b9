"""`report` draws its figures in a process forked when it starts (runners/report/plots.Painter): the same figures,
in the same order, as drawing them in the report's own process; a report that fails leaves no process behind."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "results" / "published" / "lr-auto"
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}

DRAW = """
import json, sys
from pathlib import Path
from transferbench.runners.report import plots
from transferbench.runners.report.leaderboard import build
from transferbench.runners.report.merge import load

store, out, forked = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == "1"
painter = plots.Painter.fork() if forked else None
try:
    figures = plots.start(build(load([store]), "t"), out, painter)()
finally:
    if painter is not None:
        painter.close()
print(json.dumps({"forked": painter is not None,
                  "figures": [{k: f[k] for k in ("path", "title", "caption", "kind")} for f in figures]}))
"""


def _draw(tmp_path: Path, forked: bool) -> dict:
    out = tmp_path / ("forked" if forked else "here") / "plots"
    done = subprocess.run([sys.executable, "-c", DRAW, str(STORE), str(out), "1" if forked else "0"], env=ENV,
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    return dict(json.loads(done.stdout.splitlines()[-1]), files=sorted(p.name for p in out.glob("*.png")))


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: figures are drawn in the report's own process")
def test_figures_drawn_by_the_forked_painter_are_those_drawn_in_process(tmp_path):
    forked, here = _draw(tmp_path, True), _draw(tmp_path, False)
    assert forked["forked"] and not here["forked"]
    assert len(here["figures"]) >= 2  # the painter is used only with two figures or more
    assert forked["figures"] == here["figures"]  # same titles, captions and page order
    assert forked["files"] == here["files"] == sorted(Path(f["path"]).name for f in here["figures"])


def test_a_report_that_fails_leaves_no_painter_behind(tmp_path):
    store = tmp_path / "store"
    shutil.copytree(STORE, store)
    (store / "plots").mkdir(exist_ok=True)
    (store / "leaderboard.md").unlink()
    (store / "leaderboard.md").mkdir()  # a folder where the Markdown goes: the write fails after the build
    done = subprocess.run([sys.executable, "-m", "transferbench", "report", str(store)], env=ENV, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 2, done.stderr[-2000:]
    assert len(done.stderr.strip().splitlines()) == 1  # one actionable line
    assert "leaderboard.md" in done.stderr
    # a forked process keeps its parent's command line, which names this store
    leftover = subprocess.run(["pgrep", "-f", str(store)], capture_output=True, text=True)
    assert leftover.stdout.strip() == ""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one CPU: no painter is forked")
def test_a_process_that_never_hands_its_painter_a_board_still_exits():
    """Python joins live child processes at exit; the painter, waiting for a board, is ended before that."""
    code = "from transferbench.runners.report import plots; assert plots.Painter.fork() is not None"
    done = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
