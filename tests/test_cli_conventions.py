"""Command-line conventions: -q/-v before or after the command, --version, `--set` items a more specific key shadows
(a warning naming the keys) or that nothing reads (an error), the dry run's effective learning rate, length and
budget, and plain progress lines where stderr is not a terminal."""
import logging

import pytest

from helpers import bench, faulty_suite, run_main
from transferbench.runners.cli import _parser, _verbosity


@pytest.mark.parametrize("argv, level", [
    ("run x -q", -1), ("-q run x", -1), ("-v run x -q", 0), ("run x -vv", 2), ("-v run x -v", 2), ("list -q", -1),
    ("report r -qq", -2), ("plan r -v", 1)])
def test_verbosity_flags_count_before_and_after_the_command(argv, level):
    assert _verbosity(_parser().parse_args(argv.split())) == level


@pytest.mark.parametrize("argv", [["--version"], ["run", "--version"], ["list", "--version"]])
def test_version(argv, capsys):
    import transferbench

    with pytest.raises(SystemExit) as stop:
        run_main(*argv)
    assert stop.value.code == 0 and capsys.readouterr().out.strip() == f"transferbench {transferbench.__version__}"


def _dry(capsys, suite, *extra, results=None) -> tuple[int, list[str]]:
    rc = run_main("run", suite, "--dry-run", "--results-dir", results or suite.parent / "res", *extra)
    return rc, capsys.readouterr().out.splitlines()


@pytest.fixture
def xor(tmp_path, monkeypatch):
    """A suite of the XOR test task (its module importable from tmp_path) with these benchmark lines."""
    monkeypatch.syspath_prepend(str(tmp_path))
    return lambda body: faulty_suite(tmp_path, body)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "--set" in r.getMessage()]


def test_an_override_every_mode_shadows_is_a_warning_naming_the_keys(tmp_path, capsys, caplog):
    """The issue's case: the default suite sets lr per mode, so `defaults.learning_rate` changes no run."""
    rc, plain = _dry(capsys, "quickstart", results=tmp_path)
    rc2, lines = _dry(capsys, "quickstart", "--set", "defaults.learning_rate=1e-4", results=tmp_path)
    assert rc == rc2 == 0 and lines == plain  # all 108 runs, same run_ids, same rates
    (warning,) = _warnings(caplog)
    assert warning.startswith("transferbench: warning: --set defaults.learning_rate=1e-4 is shadowed by "
                              "benchmarks.0.modes.scratch.lr, benchmarks.0.modes.finetune.lr, ")
    assert "and 17 more" in warning and "it changes no run" in warning
    assert warning.endswith("e.g. --set benchmarks.0.modes.scratch.learning_rate=1e-4")


def test_an_override_some_runs_shadow_warns_and_applies_to_the_others(xor, capsys, caplog):
    suite = xor(bench("[fine]", ", lr: 0.1") + bench("[other]"))
    _, before = _dry(capsys, suite)
    rc, after = _dry(capsys, suite, "--set", "defaults.lr=0.2")
    assert rc == 0 and before[0] == after[0] and "lr=0.05" in before[1] and "lr=0.2" in after[1]
    (warning,) = _warnings(caplog)
    assert "is shadowed by benchmarks.0.lr (a more specific key wins): it still applies to 1 of the 2 modes" in warning


@pytest.mark.parametrize("item", ["defaults.plateau.patience=5", "benchmarks.0.lr_search.fraction=0.5"])
def test_an_override_nothing_reads_is_an_error(item, xor, capsys):
    """epochs given: schedule fixed, which reads no plateau settings; lr given: no search, which reads lr_search."""
    suite = xor(bench("[fine]"))
    assert run_main("run", suite, "--dry-run", "--set", item) == 2
    err = capsys.readouterr().err
    assert f"--set {item}: no run of this suite reads it" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("item", ["defaults.epochs=2", "defaults.weight_decay=0.01", "defaults.lr_search.fraction=0.5"])
def test_an_override_repeating_the_runs_value_or_read_somewhere_is_accepted(item, xor, capsys):
    """epochs 2 is the file's, weight_decay 0.01 the default; lr_search is read by the benchmark searching its lr."""
    suite = xor(bench("[fine]") + bench("[other]", ", lr: [0.01, 0.1]"))
    assert run_main("run", suite, "--dry-run", "--set", item) == 0, capsys.readouterr().err


def test_dry_run_prints_each_runs_rate_length_and_budget(xor, capsys):
    suite = xor(bench("[fine]", ", train_samples: [100]") + bench("[other]", ", lr: auto") +
                         bench("[third]", ", max_steps: 7, lr: [0.01, 0.1]"))
    rc, lines = _dry(capsys, suite)
    assert rc == 0 and lines[-1] == "3 runs"
    # 100 examples, batch 20: 5 steps an epoch, 2 epochs
    assert lines[0].endswith("faulty  builtin:unused  fine  scratch  budget=100  seed=0  lr=0.05  epochs=2 (10 steps)"
                             "  batch=20")
    assert "  budget=all  seed=0  lr=auto[" in lines[1] and lines[1].endswith("]  epochs=2  batch=20")
    assert lines[2].endswith("budget=all  seed=0  lr=grid[0.01,0.1]  max_steps=7  batch=20")


@pytest.mark.parametrize("quiet", [False, True])
def test_plain_progress_lines_where_stderr_is_not_a_terminal(quiet, tmp_path, monkeypatch, caplog, capsys):
    """Under pytest stderr is no terminal, as under nohup or CI: the run's bar is off, and one line per evaluation
    says where it is (none with -q)."""
    suite = faulty_suite(tmp_path, bench("[fine]"))
    monkeypatch.syspath_prepend(str(tmp_path))
    caplog.set_level(logging.INFO, logger="transferbench")
    assert run_main("run", suite, "--results-dir", tmp_path / "res", "--price-per-device-hour", "0",
                    *(["-q"] if quiet else [])) == 0
    lines = [r.getMessage() for r in caplog.records if " step " in r.getMessage()]
    if quiet:
        assert lines == []
        return
    from transferbench.results import Store

    (record,) = Store(tmp_path / "res").records()
    assert len(lines) == len(record["curve"]) == 2  # 300 rows, batch 20: 15 steps an epoch, evaluated each epoch
    for line, point in zip(lines, record["curve"]):
        assert line.startswith(f"fine n=300 scratch s0: step {point['step']}/30 (epoch {point['step'] / 15:.2f}) loss ")
        assert f" accuracy {point['metric']:.4f} (" in line
