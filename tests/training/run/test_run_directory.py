"""Run directories: runs never overwrite runs. A claim is atomic (of two runs on one directory exactly
one wins), dies with its process, and a directory an earlier run wrote to is refused."""

import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from snn.errors import ConfigError
from snn.training.run import run as train
from snn.training.run.directory import claim_run_dir, release_run_dir
from tests.helpers import ROOT, make_cfg

SMALL = ["dataset=synthetic", "model.T=6", "model.hidden=16", "model.conv=null", "trainer.max_epochs=2",
         "trainer.accelerator=cpu", "logger=none", "test=false"]


def _claim(run_dir: Path, barrier, results, done) -> None:
    barrier.wait()  # both processes claim at the same moment
    try:
        claim_run_dir(run_dir)
        results.put("claimed")
    except ConfigError as error:
        results.put(str(error))
    done.wait()  # the winner holds its claim until both have answered


def test_two_runs_claiming_one_directory_at_once_exactly_one_wins(tmp_path):
    run_dir = tmp_path / "run"
    context = multiprocessing.get_context("fork")
    barrier, results, done = context.Barrier(2), context.Queue(), context.Event()
    processes = [context.Process(target=_claim, args=(run_dir, barrier, results, done)) for _ in range(2)]
    for process in processes:
        process.start()
    answers = sorted((results.get(timeout=900) for _ in processes), key=lambda a: a != "claimed")
    done.set()
    for process in processes:
        process.join(timeout=900)
    assert answers[0] == "claimed", answers
    # The winner writes its process id into the lock file just after taking the lock.
    assert re.match(f"The run directory {run_dir} is in use by another run right now "
                    "\\((process \\d+ on .+|another process)\\); ", answers[1])
    assert "two runs never share a directory. Choose another hydra.run.dir" in answers[1]


def test_a_crashed_runs_claim_does_not_outlive_it(tmp_path):
    def crash():
        claim_run_dir(tmp_path)
        os._exit(1)  # no cleanup: the lock file stays, the OS drops the lock

    process = multiprocessing.get_context("fork").Process(target=crash)
    process.start()
    process.join(timeout=900)
    assert (tmp_path / ".run.lock").exists()
    claim_run_dir(tmp_path)  # the directory holds no outputs: it is free again
    release_run_dir(tmp_path)


def test_a_run_directory_with_outputs_is_never_reused(tmp_path):
    train(make_cfg(tmp_path, *SMALL, "trainer.max_epochs=1"))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    with pytest.raises(ConfigError,
                       match=f"{tmp_path} already holds another run's outputs \\(checkpoints\\); "
                             "nothing is overwritten"):
        train(make_cfg(tmp_path, *SMALL, "trainer.max_epochs=1"))
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


@pytest.mark.slow
def test_a_run_that_ended_leaves_a_directory_the_next_run_on_it_refuses(tmp_path):
    """A debug run writes only .hydra/ and ends, releasing its lock: a second run given the same
    hydra.run.dir must still be refused before Hydra overwrites the first run's config (the race
    that made two runs 'started together' both succeed when the first ended before the second
    claimed)."""
    run = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), "debug=fdr", "dataset=synthetic", "logger=none",
               f"hydra.run.dir={run}", f"paths.data_dir={tmp_path}"]
    first = subprocess.run([*command, "seed=1"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr
    second = subprocess.run([*command, "seed=2"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert second.returncode == 1
    assert "already holds another run's outputs (.hydra)" in second.stderr.strip().splitlines()[-1]
    assert OmegaConf.load(run / ".hydra" / "config.yaml").seed == 1


@pytest.mark.slow
def test_two_runs_started_together_on_one_directory_never_mix(tmp_path):
    run = tmp_path / "run"
    commands = [[sys.executable, str(ROOT / "train.py"), "debug=fdr", "dataset=synthetic", "logger=none",
                 f"seed={seed}", f"hydra.run.dir={run}", f"paths.data_dir={tmp_path}"] for seed in (1, 2)]
    processes = [subprocess.Popen(c, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for c in commands]
    errors = [process.communicate(timeout=900)[1] for process in processes]
    codes = [process.returncode for process in processes]
    assert sorted(codes) == [0, 1], errors
    winner, loser = (0, 1) if codes[0] == 0 else (1, 0)
    refusal = errors[loser].strip().splitlines()[-1]
    assert refusal.startswith(f"Config error: The run directory {run} ") and "Traceback" not in errors[loser]
    assert "is in use by another run right now" in refusal or "already holds another run's outputs" in refusal
    assert OmegaConf.load(run / ".hydra" / "config.yaml").seed == winner + 1  # the loser wrote nothing there


@pytest.mark.slow
def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    command = [sys.executable, str(ROOT / "train.py"), "debug=fdr", "dataset=synthetic", "logger=none",
               f"paths.data_dir={tmp_path}"]
    processes = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    for process in processes:
        assert process.wait(timeout=900) == 0, process.stderr.read()[-2000:]
    runs = sorted(p.parent.parent for p in (tmp_path / "outputs").glob("*/*/.hydra/config.yaml"))
    assert len(runs) == 2 and runs[0] != runs[1]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}", r.name) for r in runs), runs
    assert {r.parent.name for r in runs} == {"adex-synthetic"}  # outputs/<model>-<dataset>/ without an experiment
