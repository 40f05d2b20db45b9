"""The documentation site (mkdocs.yml, docs/) builds in strict mode with every page in the nav and its headings
rendered, and its code runs as written: every Python block of docs/ and the README (unless marked
`<!-- docs-test: skip (why) -->`), with its printed output where the page shows it (a `text` block marked
`<!-- docs-test: output -->`), and every shell block marked `<!-- docs-test: run -->`, offline, against a copy of
the published stores. The Add-a-task page's files are written and run by tests/test_add_task_doc.py."""
import html
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import HANG_GUARD_S

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"(?:<!-- docs-test: (?P<mark>[^>]*?) -->\n)?```(?P<lang>\w*)\n(?P<body>.*?)```", re.S)
FILE_BLOCK = re.compile(r"# [\w.]+\.(py|yaml)")  # a block that is a file's content (Add a task writes them)

# Headings each topic must keep wherever its text moves (a page's other headings are checked against the build)
KEY_HEADINGS = {
    "index.md": ["transferbench", "Set up and run"],
    "leaderboards.md": ["Published leaderboards", "The default suite", "The text benchmark at 256 sentences"],
    "crossover.md": ["Where scratch catches up: the crossover study", "How the planner works"],
    "commands.md": ["Commands", "Offline use"],
    "python-api.md": ["Python API"],
    "suites.md": ["Suites", "Hyper-parameters", "Overrides on the command line", "Budgets", "Built-in datasets",
                  "Suites that ship"],
    "modes.md": ["Modes", "Other peft methods", "Linear probe on cached features"],
    "tasks.md": ["Tasks", "Augmentation", "Object detection"],
    "pretrain-stages.md": ["Pretrain stages"],
    "schedules.md": ["Schedules and convergence", "The plateau schedule", "Convergence"],
    "learning-rates.md": ["Learning rates", "The verdict a rate can flip"],
    "reports.md": ["Reports and publishing", "Merging", "Publishing"],
    "record.md": ["The result record"],
    "cost.md": ["Cost and energy"],
    "gpus.md": ["Running on GPUs with accelerate", "The effective-batch rule"],
    "scale.md": ["Running at scale", "Ray: one machine", "SLURM", "Concurrent invocations"],
    "reliability.md": ["Faults, safety and input checks", "Faults, and what each status means",
                       "Preflight: everything checked before training"],
    "performance.md": ["Performance", "FLOPs and MFU"],
    "add-a-task.md": ["Add a task", "Where a task comes from", "The contract"],
    "architecture.md": ["Architecture"],
}


def headings(page: Path) -> list[str]:
    """The page's `#` and `##` headings as text (code spans unwrapped), outside code blocks."""
    prose = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return [m.group(2).replace("`", "") for m in re.finditer(r"^(#{1,2}) (.+)$", prose, re.M)]


def nav_files(nav) -> list[str]:
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [f for v in nav.values() for f in nav_files(v)]
    return [f for item in nav for f in nav_files(item)]


def blocks(path: Path) -> list[dict]:
    """Fenced blocks in order: lang, body, mark (the docs-test comment right above it, or None)."""
    return [m.groupdict() for m in FENCE.finditer(path.read_text(encoding="utf-8"))]


def python_cases() -> list[tuple[Path, int, str, str | None]]:
    """(file, index, code, expected output or None) of every Python block the tests run."""
    cases = []
    for path in [REPO / "README.md", *PAGES]:
        found = blocks(path)
        for i, b in enumerate(found):
            if b["lang"] != "python" or (b["mark"] or "").startswith("skip"):
                continue
            if FILE_BLOCK.fullmatch(b["body"].splitlines()[0]):
                assert path.name == "add-a-task.md", f"{path.name}: a file block outside Add a task is never run"
                continue
            after = found[i + 1] if i + 1 < len(found) else None
            expected = after["body"] if after and after["mark"] == "output" else None
            cases.append((path, i, b["body"], expected))
    return cases


def shell_commands() -> list[tuple[str, str]]:
    """(file, command) of every line of the shell blocks marked to run; `\\` continues a line, `  #` starts a comment."""
    commands = []
    for path in [REPO / "README.md", *PAGES]:
        for b in blocks(path):
            if b["lang"] == "bash" and b["mark"] == "run":
                for line in b["body"].replace("\\\n", " ").splitlines():
                    if line.split("  #")[0].strip():
                        commands.append((path.name, line.split("  #")[0].strip()))
    return commands


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A folder laid out as a checkout the examples run in: a copy of the published stores (a report may write
    beside them) and the shipped suites."""
    work = tmp_path_factory.mktemp("docs-work")
    shutil.copytree(REPO / "results" / "published", work / "results" / "published")
    shutil.copytree(REPO / "benchmarks", work / "benchmarks", ignore=shutil.ignore_patterns("__pycache__"))
    return work


def _env() -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "NO_MKDOCS_2_WARNING": "1"}


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", config, "-d", site],
                          capture_output=True, text=True, timeout=HANG_GUARD_S, env=_env())


def test_every_page_is_in_the_nav_and_keeps_its_key_headings():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert config["theme"]["name"] == "material" and config["strict"] is True
    listed = nav_files(config["nav"])
    assert sorted(listed) == sorted(p.name for p in PAGES) and len(set(listed)) == len(listed)
    assert set(KEY_HEADINGS) <= {p.name for p in PAGES}, "a page gone (or renamed) that held key headings"
    for page in PAGES:
        assert page.read_text(encoding="utf-8").startswith("# "), page.name  # the title is the first line
        assert [h for h in headings(page) if h == headings(page)[0]] == [headings(page)[0]], page.name
        assert KEY_HEADINGS.get(page.name, headings(page))[0] == headings(page)[0], page.name
        assert set(KEY_HEADINGS.get(page.name, [])) <= set(headings(page)), page.name


def test_the_readme_is_short_and_links_the_pages():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    assert readme.index("make quickstart") < readme.index("make test") < readme.index("\n## ")  # the two commands first
    for page in PAGES:
        assert f"docs/{page.name}" in readme, f"README does not link docs/{page.name}"


@pytest.mark.slow
def test_the_site_builds_strict_with_every_heading(tmp_path):
    built = _build(REPO / "mkdocs.yml", tmp_path / "site")
    print(built.stderr)  # shown with -s: the acceptance output
    assert built.returncode == 0, built.stderr[-3000:]
    assert not re.search(r"^(WARNING|ERROR)", built.stderr, re.M), built.stderr
    for page in PAGES:
        out = tmp_path / "site" / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        rendered = out.read_text(encoding="utf-8")
        for heading in headings(page):
            assert html.escape(heading, quote=False) in rendered, (page.name, heading)


@pytest.mark.slow
def test_strict_mode_fails_on_a_broken_link(tmp_path):
    """The build is a check, not a formality: a link to a page or anchor that does not exist fails it."""
    shutil.copytree(DOCS, tmp_path / "docs")
    shutil.copy2(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    page = tmp_path / "docs" / "index.md"
    for link in ("[gone](no-such-page.md)", "[gone](suites.md#no-such-heading)"):
        page.write_text((DOCS / "index.md").read_text() + f"\n{link}\n")
        built = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
        assert built.returncode != 0 and "no-such" in built.stderr, link


def _same_output(printed: str, expected: str) -> bool:
    """Line by line, words equal and numbers within the last printed digit (stored floats, re-rounded)."""
    a, b = printed.strip().splitlines(), expected.strip().splitlines()
    if len(a) != len(b):
        return False
    for line_a, line_b in zip(a, b):
        words_a, words_b = line_a.split(), line_b.split()
        if len(words_a) != len(words_b):
            return False
        for x, y in zip(words_a, words_b):
            try:
                if abs(float(x) - float(y)) > 1.5e-4:
                    return False
            except ValueError:
                if x != y:
                    return False
    return True


def test_the_docs_have_code_that_runs():
    assert len(python_cases()) >= 1 and any(expected for *_, expected in python_cases())
    assert {"transferbench list", "transferbench run quickstart --dry-run"} <= {c for _, c in shell_commands()}


@pytest.mark.slow
@pytest.mark.parametrize("path, index, code, expected", python_cases(),
                         ids=[f"{p.name}:{i}" for p, i, *_ in python_cases()])
def test_python_block_runs_as_written(work, path, index, code, expected):
    out = subprocess.run([sys.executable, "-c", code], cwd=work, env=_env(), capture_output=True, text=True,
                         timeout=HANG_GUARD_S)
    assert out.returncode == 0, out.stderr[-3000:]
    if expected is not None:
        assert _same_output(out.stdout, expected), f"{path.name} block {index} printed:\n{out.stdout}"


@pytest.mark.slow
@pytest.mark.parametrize("page, command", shell_commands(), ids=[f"{p}:{c[:60]}" for p, c in shell_commands()])
def test_marked_shell_command_runs_as_written(work, page, command):
    out = subprocess.run(command, shell=True, cwd=work, env=_env(), capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert out.returncode == 0, f"{page}: {command}\n{out.stderr[-3000:]}"


def _tables(text: str) -> list[list[str]]:
    tables, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables, current = tables + [current], []
    return tables


def test_quoted_leaderboards_are_the_published_ones_verbatim():
    """A table (or answer line) the README or a results page shows from a published leaderboard or plan is copied
    exactly: every row of a table whose header a published page has, and every answer line."""
    published = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "results" / "published").glob("*/*.md"))
    quoted = 0
    for path in (REPO / "README.md", DOCS / "leaderboards.md", DOCS / "crossover.md"):
        text = path.read_text(encoding="utf-8")
        for table in _tables(text):
            if table[0] in published:
                quoted += 1
                assert [row for row in table if row not in published] == [], path.name
        for line in re.findall(r"^- ((?:digits|shapes|topics), .*)$", text, re.M):
            assert line in published, (path.name, line[:80])
    assert quoted >= 5  # README's excerpt, the quickstart's two tables, topics, the crossover predictions
