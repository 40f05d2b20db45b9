"""The import-linter contracts of pyproject.toml (`make lint`) hold on this tree, and fail when someone adds a
forbidden import: each case copies the sources, adds one import, and runs lint-imports on the copy."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# where each source folder sits once installed ([tool.setuptools.package-dir] in pyproject.toml)
LAYOUT = {"transferbench": "transferbench", "tasks": "transferbench/tasks", "runners": "transferbench/runners"}
LAYERS = "Layers: runners -> tasks -> transferbench core (core never imports tasks or runners)"
RUNNERS = "Runners: cli -> api -> orchestrate | report -> train -> signals | suites | verbosity"
ACYCLIC = "No import cycles inside a package"
REPORT = "Report: leaderboard data imports no writer (writers format what the data computed)"


def _not_python_sources(folder, names):
    return [n for n in names if not (n.endswith(".py") or (Path(folder) / n).is_dir()) or n == "__pycache__"]


@pytest.fixture
def layout(tmp_path) -> Path:
    """The package's Python sources in their installed layout (tasks/ and runners/ inside transferbench/)."""
    for src, dest in LAYOUT.items():
        shutil.copytree(REPO / src, tmp_path / dest, ignore=_not_python_sources)
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def lint(root: Path) -> subprocess.CompletedProcess:
    """lint-imports on the copy: run from its root (import-linter puts the working directory first on sys.path,
    so `transferbench` is the copy, not the editable install), with the copy's contracts."""
    env = {**os.environ, "PYTHONPATH": str(root), "COLUMNS": "200"}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")], cwd=root,
                          env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)


def test_contracts_hold_on_this_tree(layout):
    out = lint(layout)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout.replace("\n", " ")
    assert all(f"{name} KEPT" in text for name in (LAYERS, RUNNERS, ACYCLIC, REPORT)), out.stdout
    assert "4 kept, 0 broken" in out.stdout


@pytest.mark.parametrize("path, line, contract", [
    ("transferbench/cost.py", "import transferbench.runners", LAYERS),  # core -> runners
    ("transferbench/errors.py", "from transferbench.tasks import get_task", LAYERS),  # core -> tasks
    ("transferbench/tasks/text_classification.py", "from transferbench.runners.report import fmt", LAYERS),  # tasks -> runners
    ("transferbench/devices.py", "from transferbench import cost", ACYCLIC),  # cost -> devices -> cost
    ("transferbench/runners/train/loops.py", "from transferbench.runners.orchestrate import suite", RUNNERS),
    ("transferbench/runners/report/stats.py", "from transferbench.runners.orchestrate import execute", RUNNERS),
    # leaderboard data -> a writer
    ("transferbench/runners/report/curves.py", "from transferbench.runners.report import tables", REPORT),
    ("transferbench/runners/api.py", "from transferbench.runners import cli", RUNNERS),  # the CLI sits on the API
])
def test_a_forbidden_import_breaks_its_contract(layout, path, line, contract):
    with open(layout / path, "a") as f:
        f.write(f"\n{line}  # added by the test\n")
    out = lint(layout)
    assert out.returncode != 0, out.stdout
    # (a layer violation usually also closes a cycle between the layers, so the acyclic contract may break too)
    assert f"{contract} BROKEN" in out.stdout.replace("\n", " "), out.stdout


def test_a_new_core_module_must_be_placed_in_a_layer(layout):
    (layout / "transferbench" / "unplaced.py").write_text("X = 1\n")
    out = lint(layout)
    assert out.returncode != 0 and f"{LAYERS} BROKEN" in out.stdout, out.stdout
    assert "transferbench.unplaced" in out.stdout
