"""The cache's atomic folders: a writer killed mid-write (kill -9) leaves a temporary folder, which the next writer
in that folder removes; a live writer's is never touched."""
import signal
import subprocess
import sys

from helpers import HANG_GUARD_S
from transferbench.cache import PARTIAL, atomic_dir

KILLED_WRITER = """
import os, sys
from pathlib import Path
from transferbench.cache import atomic_dir
with atomic_dir(Path(sys.argv[1]) / sys.argv[2]) as tmp:
    (tmp / "half").write_text("half a dataset")
    os.kill(os.getpid(), 9)
"""


def test_a_killed_writers_temporary_folders_are_swept_and_a_live_ones_kept(tmp_path):
    left = []
    for name in ("glyphs-v1", "base-0123.v1"):  # a built-in dataset, a stage version
        proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path), name], timeout=HANG_GUARD_S)
        assert proc.returncode == -signal.SIGKILL
        left.append(sorted(p.name for p in tmp_path.iterdir()))
    (first,), (second,) = left  # the second writer swept the first one's folder before it wrote its own
    assert first.startswith(".glyphs-v1" + PARTIAL) and second.startswith(".base-0123.v1" + PARTIAL)
    with atomic_dir(tmp_path / "glyphs-v1") as tmp:
        (tmp / "README.md").write_text("done")
        live = sorted(p.name for p in tmp_path.iterdir())
        assert live == [tmp.name]  # the dead writer's folder gone; this live writer's folder stays meanwhile
        with atomic_dir(tmp_path / "other"):  # a second writer sweeps too, and leaves the live one alone
            assert tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["glyphs-v1", "other"]
    assert (tmp_path / "glyphs-v1" / "README.md").read_text() == "done"


def test_a_folder_of_another_host_or_without_an_owner_is_left_alone(tmp_path):
    foreign = tmp_path / f".x{PARTIAL}1.2.00000000-abc"  # host hash of no host here
    foreign.mkdir()
    plain = tmp_path / ".x-abc"  # the older naming: nobody's to remove
    plain.mkdir()
    with atomic_dir(tmp_path / "x"):
        pass
    assert foreign.exists() and plain.exists() and (tmp_path / "x").is_dir()
