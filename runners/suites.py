"""The suites that ship with transferbench, and a suite argument resolved to its YAML (a path or a shipped name)."""
from __future__ import annotations

import difflib
from pathlib import Path

from transferbench.errors import UserError

# The shipped suites: benchmarks/ beside runners/ in a checkout, transferbench/benchmarks/ (package data, mapped in
# pyproject.toml) in an installed wheel; runners/ sits one level below either.
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
DEFAULT_SUITE = BENCHMARKS / "quickstart.yaml"


def shipped_suites() -> dict[str, Path]:
    """Suite name (the file's stem) -> its YAML, for every suite that ships with transferbench."""
    return {p.stem: p for p in sorted(BENCHMARKS.glob("*.yaml"))}


def resolve_suite(arg: str | Path) -> Path:
    """A suite given as a path to a YAML file, or as the name of a shipped suite (`quickstart`). A path that does
    not exist is returned as it is (loading it says so), unless it names no folder and no .yaml: then it was meant
    as a name, and an unknown one is refused in one line with the shipped names."""
    path = Path(arg)
    if path.is_file():
        return path
    shipped = shipped_suites()
    if str(arg) in shipped:
        return shipped[str(arg)]
    if path.suffix.lower() in (".yaml", ".yml") or len(path.parts) != 1:
        if path.stem in shipped:  # benchmarks/NAME.yaml from outside a checkout, say
            raise UserError(f"suite file not found: {arg}; the suite of that name ships with transferbench: "
                            f"`transferbench run {path.stem}`")
        return path
    close = difflib.get_close_matches(str(arg), list(shipped), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise UserError(f"unknown suite '{arg}': no such file, and no shipped suite of that name ({hint}shipped: "
                    f"{', '.join(shipped) or 'none'}); give a shipped name or a path to a suite YAML")
