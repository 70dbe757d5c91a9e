"""Failure handling: NaN/inf loss, bad config, corrupt data, Ctrl-C, and runs never overwriting runs."""

import gzip
import os
import re
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from train_hooks import with_callback

from snn.training import NonFiniteLossError, load_checkpoint
from train import ConfigError, explain_composition_error, train

ROOT = Path(__file__).parents[1]
SMALL = ["dataset=synthetic", "model.T=6", "model.hidden=16", "model.conv=null", "trainer.max_epochs=2",
         "trainer.accelerator=cpu", "logger=none", "test=false"]


def make_cfg(tmp_path, *overrides: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}", *overrides])


class Poison(L.Callback):
    """Sets the output layer's weights to ``value`` before batch ``batch`` of epoch ``epoch`` (the
    neurons themselves turn NaN input into silence, so the loss goes bad through the readout)."""

    def __init__(self, epoch: int, batch: int, value: float):
        self.epoch, self.batch, self.value = epoch, batch, value

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            with torch.no_grad():
                pl_module.net.output.weight.fill_(self.value)


class CtrlC(L.Callback):
    def __init__(self, epoch: int, batch: int):
        self.epoch, self.batch = epoch, batch

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            raise KeyboardInterrupt


# --- NaN / inf loss ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_stops_training_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch, value):
    with_callback(monkeypatch, Poison(epoch=1, batch=2, value=value))
    last = tmp_path / "checkpoints" / "last.ckpt"
    with pytest.raises(NonFiniteLossError) as error:
        train(make_cfg(tmp_path, *SMALL, "model.encoder.scale=3.0"))
    message = str(error.value)
    assert "Training loss became" in message and "at epoch 1, global step 8 (batch 2 of the epoch)" in message
    assert f"The last good checkpoint is kept: {last}" in message
    checkpoint = load_checkpoint(last)
    assert checkpoint["epoch"] == 0 and checkpoint["global_step"] == 6  # written after epoch 0, never replaced
    assert all(torch.isfinite(w).all() for w in checkpoint["state_dict"].values())
    assert sorted(p.name for p in last.parent.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]


def test_non_finite_loss_before_any_checkpoint_says_so(tmp_path, monkeypatch):
    with_callback(monkeypatch, Poison(epoch=0, batch=0, value=float("nan")))
    with pytest.raises(NonFiniteLossError, match="at epoch 0, global step 0 .*No checkpoint had been written yet"):
        train(make_cfg(tmp_path, *SMALL))


# --- bad config: one paragraph, valid choices, before any data is read ------------------------------


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["dataset=imagenet"], "Unknown dataset 'imagenet'; choose one of cifar10, fashion_mnist, mnist, synthetic (the files in conf/dataset/)."),
        (["model=hh"], "Unknown model 'hh'; choose one of adex, adex_conv, lif"),
        (["model.neuron.tau_mem=3"], "Unknown config key 'model.neuron.tau_mem'. Valid keys at 'model.neuron': kind, tau_syn_inv, tau_mem_inv,"),
        (["trainer.max_epoch=3", "model.T=4"], "Unknown config key 'trainer.max_epoch'. Valid keys at 'trainer': _target_, default_root_dir, accelerator, devices, precision, min_epochs, max_epochs,"),
        (["seeed=1"], "Unknown config key 'seeed'. Valid keys at the top level: "),
    ],
)
def test_unknown_keys_and_options_are_explained_with_the_valid_choices(overrides, message):
    explanation = explain_composition_error(overrides)
    assert message in explanation and "\n" not in explanation
    assert "+" + overrides[0].split("=")[0] in explanation or "choose one of" in explanation


def test_a_composable_command_line_is_left_to_hydra():
    assert explain_composition_error(["model=lif", "+model.neuron.extra=1", "hydra.run.dir=/tmp/x"]) is None


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.T=-4", "The number of time steps T must be a positive integer, got -4"),
        ("model.neuron.method=relu", r"relu.*atan.*super"),
        ("+model.neuron.tau_mem=3", r"no field\(s\) \['tau_mem'\]; valid: \[.*'tau_syn_inv', 'tau_mem_inv'"),
    ],
)
def test_bad_values_fail_before_the_data_is_read(tmp_path, override, message):
    # dataset=mnist with an empty data_dir: reading the data would fail with "MNIST not found".
    with pytest.raises(ConfigError, match=message):
        train(make_cfg(tmp_path, "dataset=mnist", "logger=none", override))
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args,message",
    [
        (["dataset=imagenet"], "Config error: Unknown dataset 'imagenet'; choose one of cifar10, fashion_mnist, mnist, synthetic"),
        (["model.T=-4"], "Config error: Invalid model config: The number of time steps T must be a positive integer, got -4."),
    ],
)
def test_command_line_config_errors_are_one_paragraph(tmp_path, args, message):
    command = [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(message), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "not found" not in result.stderr


# --- corrupt data -----------------------------------------------------------------------------------


def test_truncated_data_file_is_named(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 10)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        (data / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28) + images.tobytes()))
        (data / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, n) + labels.tobytes())
    bad = data / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes()[:-3])  # a download cut short
    with pytest.raises(ValueError, match=f"{bad} is truncated"):
        train(make_cfg(tmp_path, "dataset=mnist", "dataset.val_size=8", "model.T=4", "model.hidden=8", "model.conv=null",
                       "trainer.max_epochs=1", "trainer.accelerator=cpu", "logger=none", "test=false"))
    gz = data / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{gz} is a corrupt or truncated gzip file"):
        train(make_cfg(tmp_path / "again", "dataset=mnist", f"dataset.data_dir={data}", "dataset.val_size=8", "model.T=4",
                       "model.hidden=8", "model.conv=null", "trainer.accelerator=cpu", "logger=none", "test=false"))


# --- Ctrl-C -----------------------------------------------------------------------------------------


def test_ctrl_c_saves_a_checkpoint_that_resumes(tmp_path, monkeypatch):
    with monkeypatch.context() as m:
        with_callback(m, CtrlC(epoch=1, batch=3))
        with pytest.raises(SystemExit):
            train(make_cfg(tmp_path / "run", *SMALL))
    interrupted = tmp_path / "run" / "checkpoints" / "interrupted.ckpt"
    checkpoint = load_checkpoint(interrupted)
    assert checkpoint["global_step"] == 6 + 3  # 3 steps into the second epoch
    train(make_cfg(tmp_path / "resumed", *SMALL, f"ckpt_path={interrupted}"))
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert (resumed["epoch"], resumed["global_step"]) == (1, 12)  # the rest of epoch 1, then done


@pytest.mark.slow
def test_sigint_to_a_running_training_saves_a_checkpoint(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), *SMALL, "trainer.max_epochs=500", f"hydra.run.dir={run}",
               f"paths.data_dir={tmp_path}", "callbacks.progress_bar=null"]
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)
    os.kill(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert process.returncode == 1, output[-3000:]
    assert "Interrupted at epoch" in output
    checkpoint = load_checkpoint(run / "checkpoints" / "interrupted.ckpt")
    assert 6 <= checkpoint["global_step"] < 500 * 6


# --- runs never overwrite runs ----------------------------------------------------------------------


def test_a_run_directory_with_outputs_is_never_reused(tmp_path):
    train(make_cfg(tmp_path, *SMALL, "trainer.max_epochs=1"))
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    with pytest.raises(ConfigError, match=f"{tmp_path} already holds another run's outputs \\(checkpoints\\); nothing is overwritten"):
        train(make_cfg(tmp_path, *SMALL, "trainer.max_epochs=1"))
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before


@pytest.mark.slow
def test_runs_started_in_the_same_second_get_their_own_directories(tmp_path):
    command = [sys.executable, str(ROOT / "train.py"), "debug=fdr", "dataset=synthetic", "logger=none", f"paths.data_dir={tmp_path}"]
    processes = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in processes:
        assert process.wait(timeout=180) == 0, process.stderr.read()[-2000:]
    runs = sorted(p.parent.parent for p in (tmp_path / "outputs").glob("*/*/.hydra/config.yaml"))
    assert len(runs) == 2 and runs[0] != runs[1]
    assert all(re.fullmatch(r"\d\d-\d\d-\d\d_[0-9a-f]{6}", r.name) for r in runs), runs
