"""The package as people install it: suites ship inside it and resolve by name, every imported library is declared,
and a wheel installed outside the repository lists and plans the default suite from another directory."""
import ast
import os
import re
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from helpers import HANG_GUARD_S, run_main
from transferbench.errors import UserError
from transferbench.runners.suites import BENCHMARKS, resolve_suite, shipped_suites

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(p.stem for p in (REPO / "benchmarks").glob("*.yaml"))


def _requirement_name(spec: str) -> str:
    return re.split(r"[<>=!~\[;\s]", spec, maxsplit=1)[0].lower().replace("_", "-")


def test_every_imported_library_is_declared():
    """Each third-party top-level module imported anywhere in transferbench/, tasks/ or runners/ (lazily too)
    belongs to a distribution listed in [project] dependencies or an optional extra."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    imported: dict[str, str] = {}
    for folder in ("transferbench", "tasks", "runners"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    imported.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(d) for d in project["dependencies"]}
    declared |= {_requirement_name(d) for ds in project.get("optional-dependencies", {}).values() for d in ds}
    owners = metadata.packages_distributions()
    third_party = {m: f for m, f in imported.items()
                   if m not in sys.stdlib_module_names and m not in ("transferbench", "__future__")}
    assert {"torch", "sklearn", "scipy", "pandas", "filelock", "psutil"} <= set(third_party)
    missing = {m: (owners.get(m), f) for m, f in third_party.items()
               if not {_requirement_name(d) for d in owners.get(m, [])} & declared}
    assert not missing, f"imported but not declared in pyproject.toml (module: (distribution, first importer)): {missing}"


def test_shipped_suites_resolve_by_name_and_paths_still_work(tmp_path):
    assert list(shipped_suites()) == SHIPPED and "quickstart" in SHIPPED
    assert resolve_suite("quickstart") == BENCHMARKS / "quickstart.yaml"
    own = tmp_path / "quickstart"  # a file of that name in the working directory is the user's, not the shipped one
    own.write_text("name: mine\n")
    assert resolve_suite(own) == own
    assert resolve_suite(str(REPO / "benchmarks" / "topics.yaml")) == REPO / "benchmarks" / "topics.yaml"
    assert resolve_suite("nowhere/else.yaml") == Path("nowhere/else.yaml")  # load_suite says it is missing
    with pytest.raises(UserError, match="transferbench run topics"):
        resolve_suite("elsewhere/benchmarks/topics.yaml")


def test_an_unknown_suite_name_is_one_line_with_did_you_mean_and_the_shipped_names(capsys):
    assert run_main("run", "quickstrat", "--dry-run") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("transferbench: error: unknown suite 'quickstrat'")
    assert "did you mean 'quickstart'?" in err and f"shipped: {', '.join(SHIPPED)}" in err
    assert run_main("stages", "vison") == 2
    assert "did you mean 'vision'?" in capsys.readouterr().err


def test_list_names_the_shipped_suites(capsys):
    assert run_main("list") == 0
    out = capsys.readouterr().out.split("suites", 1)[1]
    for name in SHIPPED:
        assert re.search(rf"^  {name}\s+{re.escape(str(BENCHMARKS / name))}\.yaml$", out, re.M), name


def _copy_sources(dst: Path) -> None:
    """What the wheel is built from, copied so the build writes its build/ and egg-info outside the repository
    (and a stale build/lib of the checkout cannot slip into the wheel)."""
    dst.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dst / name)
    for name in ("transferbench", "tasks", "runners", "benchmarks"):
        shutil.copytree(REPO / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


@pytest.mark.slow
def test_a_wheel_installed_outside_the_repository_lists_and_plans_the_default_suite(tmp_path):
    _copy_sources(tmp_path / "src")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # -v: the build backend's own output, where setuptools prints its packaging warnings
    built = subprocess.run([*pip[:-1], "-v", "wheel", "--no-deps", "--no-build-isolation", "-w", tmp_path / "dist",
                            tmp_path / "src"], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("transferbench-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert sorted(n.split("/")[-1][:-5] for n in names if n.startswith("transferbench/benchmarks/")) == SHIPPED
    assert not any(n.startswith(("tasks/", "runners/", "benchmarks/")) or "/perf/" in n for n in names)
    assert "transferbench = transferbench.runners.cli:main" in entry_points
    # the data folders setuptools lists as packages (so the build is quiet): metric modules and shipped stages
    assert {"transferbench/metric_modules/accuracy/accuracy.py", "transferbench/metric_modules/f1/f1.py",
            "transferbench/stages/README.md", "transferbench/prices.yaml", "transferbench/peaks.yaml"} <= set(names)
    shipped_stages = {n for n in names if n.startswith("transferbench/stages/") and n.endswith("/model.safetensors")}
    assert shipped_stages == {f"transferbench/{p.relative_to(REPO / 'transferbench')}"
                              for p in (REPO / "transferbench" / "stages").glob("*/model.safetensors")}
    assert "BuildBackendWarning" not in built.stdout + built.stderr  # packaging warnings stay gone
    site = tmp_path / "site"
    installed = subprocess.run([*pip, "install", "--no-deps", "--target", site, wheel], capture_output=True,
                               text=True, timeout=HANG_GUARD_S)
    assert installed.returncode == 0, installed.stderr[-2000:]

    # dependencies come from this venv; the wheel's transferbench shadows the checkout's editable install
    env = {**os.environ, "PYTHONPATH": str(site)}
    work = tmp_path / "elsewhere"
    work.mkdir()

    def python(*args, timeout=HANG_GUARD_S):
        return subprocess.run([sys.executable, *map(str, args)], cwd=work, env=env, capture_output=True, text=True,
                              timeout=timeout)

    where = python("-c", "import transferbench, transferbench.runners.suites as c; print(transferbench.__file__); "
                         "print(c.__file__); print(c.BENCHMARKS)")
    assert where.returncode == 0, where.stderr
    module, cli, benchmarks = map(Path, where.stdout.split())
    assert module == site / "transferbench" / "__init__.py" and cli.is_relative_to(site)
    assert benchmarks == site / "transferbench" / "benchmarks"

    listed = python("-m", "transferbench", "list")
    assert listed.returncode == 0, listed.stderr
    for name in SHIPPED:
        assert f"{benchmarks / name}.yaml" in listed.stdout

    planned = python("-m", "transferbench", "run", "quickstart", "--dry-run", "--results-dir", tmp_path / "r")
    assert planned.returncode == 0, planned.stderr[-2000:]
    lines = planned.stdout.strip().splitlines()
    assert lines[-1] == "108 runs" and len([x for x in lines if "  seed=" in x]) == 108
    assert not (tmp_path / "r").exists()  # a dry run writes nothing

    unknown = python("-m", "transferbench", "run", "quickstrat", "--dry-run")
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1 and "did you mean 'quickstart'" in unknown.stderr
