"""The run lock never follows a planted file: a `.run.lock` that is a symbolic link, a fifo, a
directory, a hard link or another user's file is refused before anything is written, and never
makes a directory look fresh."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import snn.training.run.directory as run_directory
from snn.errors import ConfigError
from snn.training.run.directory import claim_run_dir, release_run_dir
from tests.helpers import ROOT


def test_a_planted_symlink_lock_leaves_its_target_alone_and_stops_the_run(tmp_path):
    """The reproduction: a predictable run directory prepared with a link to someone's file."""
    (tmp_path / "runs" / "x").mkdir(parents=True)
    victim = tmp_path / "victim.txt"
    victim.write_text("DATA\n")
    (tmp_path / "runs" / "x" / ".run.lock").symlink_to(victim)
    command = [sys.executable, str(ROOT / "train.py"), "dataset=synthetic", "model.conv=null", "trainer=cpu",
               "trainer.max_epochs=1", "hydra.run.dir=runs/x"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 1
    assert victim.read_text() == "DATA\n"
    assert f"Config error: The run lock {tmp_path / 'runs' / 'x' / '.run.lock'} is a symbolic link" in done.stderr
    assert "nothing was written to it" in done.stderr
    assert sorted(p.name for p in (tmp_path / "runs" / "x").iterdir()) == [".run.lock"]  # no .hydra, no log


def plant(kind: str, lock: Path, victim: Path) -> None:
    if kind == "symlink to a missing file":
        lock.symlink_to(victim.with_name("missing"))
    elif kind == "symlink to a directory":
        lock.symlink_to(victim.parent)
    elif kind == "fifo":
        os.mkfifo(lock)
    elif kind == "directory":
        lock.mkdir()
    elif kind == "hard link":
        os.link(victim, lock)
    elif kind == "another user's file":
        if os.geteuid() != 0:
            pytest.skip("only root can create a file owned by another user")
        lock.write_text("theirs\n")
        os.chown(lock, 65534, 65534)


KINDS = ["symlink to a missing file", "symlink to a directory", "fifo", "directory", "hard link",
         "another user's file"]
REASONS = {"symlink to a missing file": "a symbolic link", "symlink to a directory": "a symbolic link",
           "fifo": "not a regular file", "directory": "a directory", "hard link": "a file with 2 names",
           "another user's file": "owned by another user"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_planted_lock_of_any_kind_is_refused_and_never_written(tmp_path, kind):
    run, victim = tmp_path / "run", tmp_path / "victim.txt"
    run.mkdir()
    victim.write_text("DATA\n")
    lock = run / ".run.lock"
    plant(kind, lock, victim)
    before = os.lstat(lock)
    with pytest.raises(ConfigError, match=rf"The run lock {lock} is {REASONS[kind]}.*not a lock file this program "
                                          r"created.*nothing was written"):
        claim_run_dir(run)
    after = os.lstat(lock)
    assert (after.st_mode, after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_mode, before.st_ino, before.st_size, before.st_mtime_ns)
    assert victim.read_text() == "DATA\n" and run.resolve() not in run_directory._claimed
    assert sorted(p.name for p in run.iterdir()) == [".run.lock"]


def test_a_lock_left_by_an_earlier_run_of_ours_is_taken(tmp_path):
    """A killed run of this user leaves its (unlocked) lock file: the directory is still free."""
    (tmp_path / ".run.lock").write_text("process 1 on a machine\n")
    claim_run_dir(tmp_path)
    try:
        assert (tmp_path / ".run.lock").read_text().startswith(f"process {os.getpid()} on")
    finally:
        release_run_dir(tmp_path)
