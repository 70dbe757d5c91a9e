"""Every file a run writes stays in its run directory (issue 29, item 3): a planted ``train.log``
symbolic link, a planted ``.hydra`` (or a file in it), a run directory that is itself a symbolic
link or a regular file: each is refused in one line before anything is written, and the log file
handler never follows a link even where the directory is not checked first (a sweep's job folder)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from snn.errors import ConfigError
from snn.training.run.directory import claim_run_dir, release_run_dir
from snn.training.run.log import NoFollowFileHandler
from tests.helpers import ROOT

QUICK = ["dataset=synthetic", "model.conv=null", "trainer=cpu", "trainer.max_epochs=1", "logger=none",
         "dataset.num_train=64", "dataset.val_size=32", "dataset.num_test=32"]


def run_train(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.parametrize("case", ["train.log link", "run dir link", "run dir file"])
def test_the_probes_run_directories_are_refused_in_one_line(tmp_path, case):
    """The reproduction: ``ln -s /victim d/train.log; train.py hydra.run.dir=d`` appended the log to
    the victim; a linked run directory wrote into its target; a regular file gave a raw
    FileExistsError."""
    victim, target, run = tmp_path / "victim", tmp_path / "target", tmp_path / "d"
    victim.write_text("DATA\n")
    target.mkdir()
    if case == "train.log link":
        run.mkdir()
        (run / "train.log").symlink_to(victim)
        expected = f"Config error: {run / 'train.log'} is a symbolic link (to {victim}), not a file this program wrote"
    elif case == "run dir link":
        run.symlink_to(target)
        expected = f"Config error: The run directory {run} is a symbolic link (to {target})"
    else:
        run.write_text("DATA\n")
        expected = f"Config error: The run directory {run} exists and is not a directory"
    done = run_train(tmp_path, *QUICK, f"hydra.run.dir={run}")
    assert done.returncode == 1, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip().splitlines()[0]]  # one line, no traceback
    assert done.stderr.startswith(expected), done.stderr
    assert victim.read_text() == "DATA\n" and list(target.iterdir()) == []
    if case == "train.log link":
        assert sorted(p.name for p in run.iterdir()) == ["train.log"]  # no lock, no .hydra left behind


@pytest.mark.parametrize("planted", [".hydra", ".hydra/config.yaml", "train.log", "other.log"])
def test_planted_links_are_refused_before_the_claim_writes(tmp_path, planted):
    run, victim = tmp_path / "run", tmp_path / "victim"
    victim.mkdir() if planted == ".hydra" else victim.write_text("DATA\n")
    (run / ".hydra").mkdir(parents=True) if planted.startswith(".hydra/") else run.mkdir()
    (run / planted).symlink_to(victim)
    with pytest.raises(ConfigError, match=rf"{run / planted} is a symbolic link \(to {victim}\), not a file this "
                                          r"program wrote.*nothing was written"):
        claim_run_dir(run, before_hydra=False)
    assert not (run / ".run.lock").exists()
    assert (victim.is_dir() and not any(victim.iterdir())) or victim.read_text() == "DATA\n"


def test_a_hard_linked_log_and_a_linked_output_dir_are_refused(tmp_path):
    run, victim = tmp_path / "run", tmp_path / "victim"
    run.mkdir()
    victim.write_text("DATA\n")
    os.link(victim, run / "train.log")
    with pytest.raises(ConfigError, match=r"train.log is a file with 2 names \(a hard link\)"):
        claim_run_dir(run)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(ConfigError, match=r"The run directory .*link is a symbolic link"):
        claim_run_dir(tmp_path / "link")  # paths.output_dir= given as a link
    assert list((tmp_path / "elsewhere").iterdir()) == []
    claim_run_dir(tmp_path / "fresh")  # a real, new directory is claimed as before
    release_run_dir(tmp_path / "fresh")


@pytest.mark.parametrize("kind", ["symlink", "fifo", "hard link"])
def test_the_log_handler_never_writes_through_a_planted_file(tmp_path, kind):
    """Hydra's file handler (conf/config.yaml) opens train.log with O_NOFOLLOW and refuses what it did
    not create: the sweep's job folders are not checked before Hydra configures logging."""
    victim, log = tmp_path / "victim", tmp_path / "train.log"
    victim.write_text("DATA\n")
    if kind == "symlink":
        log.symlink_to(victim)
    elif kind == "fifo":
        os.mkfifo(log)
    else:
        os.link(victim, log)
    with pytest.raises(OSError):
        NoFollowFileHandler(str(log))
    assert victim.read_text() == "DATA\n"
    handler = NoFollowFileHandler(str(tmp_path / "fresh.log"))  # a new file: written as before
    handler.emit(logging.makeLogRecord({"msg": "hello"}))
    handler.close()
    assert (tmp_path / "fresh.log").read_text() == "hello\n"


def test_a_sweep_job_folder_with_a_planted_log_leaves_the_victim_alone(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("DATA\n")
    (tmp_path / "m" / "0").mkdir(parents=True)
    (tmp_path / "m" / "0" / "train.log").symlink_to(victim)
    done = run_train(tmp_path, "-m", *QUICK, f"hydra.sweep.dir={tmp_path / 'm'}")
    assert done.returncode != 0
    assert victim.read_text() == "DATA\n"
