"""train.py from the command line: runs land in outputs/<experiment or model-dataset>/..., their
train.log holds our lines and Lightning's, an evaluation says where it wrote, and a run refused
before training leaves no run directory behind (but never removes one it did not create)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.helpers import ROOT

TINY = ["dataset=synthetic", "dataset.num_train=192", "dataset.val_size=64", "dataset.num_test=64", "model.T=4",
        "model.hidden=8", "model.conv=null", "trainer=cpu", "trainer.max_epochs=1", "callbacks.spike_raster=null",
        "callbacks.progress_bar=null"]


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_a_run_names_its_directory_logs_to_train_log_and_its_evaluation_says_where(tmp_path):
    done = run(tmp_path, *TINY)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs" / "adex-synthetic").iterdir()
    assert re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_[0-9a-f]{6}", run_dir.name)
    log = (run_dir / "train.log").read_text()
    for line in ("Seed set to 42", "`Trainer.fit` stopped: `max_epochs=1` reached.", f"Run directory: {run_dir}",
                 "Best checkpoint (val/acc = "):
        assert line in log, line
    assert f"Run directory: {run_dir}" in done.stdout and done.stdout.count("Seed set to 42") == 1

    evaluated = run(tmp_path, "train=false", f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}", "trainer=cpu")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    # Filed under the checkpoint's run (not the command line's defaults, adex-mnist); the data: the ckpt's.
    (eval_dir,) = (tmp_path / "outputs" / "adex-synthetic" / "eval").iterdir()
    assert "its model and the data set from the checkpoint's config (synthetic)" in evaluated.stdout
    assert f"Run directory: {eval_dir}" in evaluated.stdout
    assert "test/acc" in evaluated.stdout and "Run directory" in (eval_dir / "train.log").read_text()


def test_a_run_refused_before_training_leaves_no_run_directory(tmp_path):
    (tmp_path / "not.ckpt").write_text("not a checkpoint")
    for refused in (["model.T=-1"], ["train=false", f"ckpt_path={tmp_path / 'not.ckpt'}"],
                    ["trust=[os]"], ["model.T=-1", "hydra.run.dir=runs/new"],
                    ["model.nueron.tau_mem_inv=50"], ["model._target_=mynet.MyNet"]):
        done = run(tmp_path, *TINY, *refused)
        assert done.returncode == 1 and done.stderr.startswith("Config error: "), (refused, done.stderr[-2000:])
        assert tree(tmp_path) == ["not.ckpt"], refused


def test_a_refused_run_keeps_a_directory_it_did_not_create(tmp_path):
    (tmp_path / "outputs").mkdir()
    (tmp_path / "runs" / "mine").mkdir(parents=True)
    (tmp_path / "runs" / "mine" / "notes.txt").write_text("keep")
    (tmp_path / "runs" / "empty").mkdir()
    for refused in (["model.T=-1"], ["hydra.run.dir=runs/mine"], ["model.T=-1", "hydra.run.dir=runs/empty"]):
        done = run(tmp_path, *TINY, *refused)
        assert done.returncode == 1, done.stderr[-2000:]
    assert (tmp_path / "runs" / "mine" / "notes.txt").read_text() == "keep"
    # The empty folder was the user's: what the refused run wrote there goes, the folder stays (and is
    # still free for the next run).
    assert tree(tmp_path / "runs") == ["empty", "mine", "mine/notes.txt"] and tree(tmp_path / "outputs") == []
    done = run(tmp_path, *TINY, "hydra.run.dir=runs/empty")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {".hydra", "checkpoints", "train.log"} <= set(tree(tmp_path / "runs" / "empty"))


def test_a_run_refused_for_a_directory_in_use_leaves_that_runs_lock_alone(tmp_path):
    held = tmp_path / "held"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from snn.training.run.directory import claim_run_dir; claim_run_dir(Path(sys.argv[1])); print('held', "
         "flush=True); time.sleep(120)", str(held)],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = (held / ".run.lock").read_text()
        done = run(tmp_path, *TINY, f"paths.output_dir={held}")
        assert done.returncode == 1 and f"The run directory {held} is in use by another run" in done.stderr
        assert (held / ".run.lock").read_text() == lock  # the holder's lock, untouched
        assert tree(tmp_path) == ["held", "held/.run.lock"]  # and the refused run's own directory is gone
    finally:
        holder.kill()
        holder.wait()


def test_a_run_stopped_after_it_wrote_outputs_keeps_them_and_logs_why(tmp_path):
    done = run(tmp_path, *TINY, "trainer.max_epochs=2", "scheduler.T_max=1")  # epoch 1 would run at lr 0
    assert done.returncode == 1 and "Config error: Epoch 1 would train with learning rate 0" in done.stderr
    (run_dir,) = (tmp_path / "outputs" / "adex-synthetic").iterdir()
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "Config error: Epoch 1 would train with learning rate 0" in (run_dir / "train.log").read_text()
