"""Failure handling: NaN/inf loss, gradients and weights, bad config, corrupt data, Ctrl-C and SIGTERM
(run directories: run/test_run_directory.py)."""

import gzip
import os
import re
import signal
import struct
import subprocess
import sys
import time
import types
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import snn.train as train_script
from snn.errors import ConfigError
from snn.training import NonFiniteError, NonFiniteGuard, load_checkpoint
from snn.training.run import run as train
from snn.training.run.config_errors import explain_composition_error
from snn.training.run.resume import check_epochs_left
from tests.helpers import CONF, ROOT, make_cfg, with_callback

DATASETS = ", ".join(sorted(p.stem for p in (ROOT / "conf" / "dataset").glob("*.yaml")))
SMALL = ["dataset=synthetic", "model.T=6", "model.hidden=16", "model.conv=null", "trainer.max_epochs=2",
         "trainer.accelerator=cpu", "logger=none", "test=false"]


class Poison(L.Callback):
    """Sets the output layer's weights to ``value`` before batch ``batch`` of epoch ``epoch`` (the
    neurons themselves turn NaN input into silence, so the loss goes bad through the readout)."""

    def __init__(self, epoch: int, batch: int, value: float):
        self.epoch, self.batch, self.value = epoch, batch, value

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            with torch.no_grad():
                pl_module.net.output.weight.fill_(self.value)


class PoisonGradient(L.Callback):
    """Sets one gradient entry of the output layer to NaN after the backward pass of batch ``batch``."""

    def __init__(self, batch: int):
        self.batch, self.weights = batch, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batch_idx = batch_idx

    def on_after_backward(self, trainer, pl_module):
        if trainer.current_epoch == 0 and self.batch_idx == self.batch:
            pl_module.net.output.weight.grad[0, 0] = float("nan")
            self.weights = {k: v.clone() for k, v in pl_module.state_dict().items()}


def finite_tensors(path: Path) -> bool:
    """Whether every floating-point tensor a checkpoint file stores (weights, buffers, optimizer states) is finite."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    tensors = list(checkpoint["state_dict"].values())
    for optimizer in checkpoint.get("optimizer_states", []):
        tensors += [v for state in optimizer["state"].values() for v in state.values() if isinstance(v, torch.Tensor)]
    return all(torch.isfinite(t).all() for t in tensors if t.is_floating_point())


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
    with pytest.raises(NonFiniteError) as error:
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
    with pytest.raises(NonFiniteError, match="at epoch 0, global step 0 .*No checkpoint had been written yet"):
        train(make_cfg(tmp_path, *SMALL))


def test_non_finite_gradient_stops_training_before_the_optimizer_step(tmp_path, monkeypatch):
    poison = PoisonGradient(batch=2)
    with_callback(monkeypatch, poison)
    with pytest.raises(NonFiniteError) as error:
        train(make_cfg(tmp_path, *SMALL))
    assert str(error.value).startswith("Gradients became non-finite at epoch 0, global step 2 (batch 2 of the epoch): "
                                       "net.output.weight (1 of 64 values); "
                                       "training stopped before the optimizer step.")
    assert "No checkpoint had been written yet" in str(error.value)


# --- reading the checks every N steps (the GPU default: no host sync per step) ---------------------------


def recording_reads(monkeypatch) -> list:
    """``(global step, hook)`` of every host read of NonFiniteGuard's checks."""
    reads = []
    read = NonFiniteGuard.read

    def recorded(self, trainer, pl_module, **kwargs):
        reads.append((self.step, sys._getframe(1).f_code.co_name))
        return read(self, trainer, pl_module, **kwargs)

    monkeypatch.setattr(NonFiniteGuard, "read", recorded)
    return reads


@pytest.mark.parametrize("every", [1, 3])
def test_the_guard_reads_its_checks_every_n_steps_and_before_every_checkpoint(tmp_path, monkeypatch, every):
    """check_every=1 (the CPU default): both checks read in every step, as before; 3: in every third
    step only, plus before validation, before each checkpoint and at the end. The run is the same."""
    reads = recording_reads(monkeypatch)
    train(make_cfg(tmp_path, *SMALL, f"callbacks.nonfinite.check_every={every}"))  # 2 epochs of 6 steps
    in_steps = [(step, hook) for step, hook in reads if hook in ("on_before_optimizer_step", "on_train_batch_end")]
    due = [step for step in range(12) if (step + 1) % every == 0]
    assert in_steps == [(step, hook) for step in due for hook in ("on_before_optimizer_step", "on_train_batch_end")]
    others = {hook for _, hook in reads} - {"on_before_optimizer_step", "on_train_batch_end"}
    assert others == {"on_validation_start", "on_save_checkpoint", "on_train_end"}
    assert finite_tensors(tmp_path / "checkpoints" / "last.ckpt")


def test_a_bad_step_between_reads_is_named_and_found_at_the_next_read(tmp_path, monkeypatch):
    with_callback(monkeypatch, Poison(epoch=0, batch=1, value=float("nan")))
    with pytest.raises(NonFiniteError) as error:
        train(make_cfg(tmp_path, *SMALL, "callbacks.nonfinite.check_every=4"))
    assert str(error.value).startswith(
        "Training loss became nan at epoch 0, global step 1 (batch 1 of the epoch) (found at global step 3: the guard "
        "reads its checks every 4 steps); training stopped. No checkpoint had been written yet.")


def test_no_checkpoint_stores_a_bad_step_that_no_read_in_the_steps_found(tmp_path, monkeypatch):
    """Checks never due in a step (every 1000): the read before validation, before the epoch's
    checkpoints, finds the poisoned last batch of epoch 1; epoch 0's checkpoint stays the last."""
    with_callback(monkeypatch, Poison(epoch=1, batch=5, value=float("nan")))
    with pytest.raises(NonFiniteError) as error:
        train(make_cfg(tmp_path, *SMALL, "callbacks.nonfinite.check_every=1000", "model.encoder.scale=3.0"))
    assert str(error.value).startswith(
        "Training loss became nan at epoch 1, global step 11 (batch 5 of the epoch) (found after its optimizer step: "
        "the guard reads its checks every 1000 steps); training stopped. The last good checkpoint is kept: ")
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert load_checkpoint(last)["global_step"] == 6 and finite_tensors(last)


def test_the_guard_reads_every_step_on_the_cpu_and_at_logging_time_on_a_gpu():
    trainer = types.SimpleNamespace(log_every_n_steps=20)
    assert NonFiniteGuard().every(trainer, torch.device("cpu")) == 1
    assert NonFiniteGuard().every(trainer, torch.device("cuda", 0)) == 20
    assert NonFiniteGuard(check_every=5).every(trainer, torch.device("cuda", 0)) == 5


def test_check_every_must_be_a_positive_number_of_steps():
    with pytest.raises(ValueError, match=r"check_every=0\): set a number of training steps >= 1"):
        NonFiniteGuard(check_every=0)


def test_a_huge_learning_rate_never_writes_a_non_finite_checkpoint(tmp_path):
    """optimizer.lr=1e6: the weights blow up while the loss stays finite (the neurons turn NaN input
    into silence), and the batch-norm statistics overflow first. Training stops at the first
    non-finite tensor, naming the step and the last checkpoint, which is finite like every file written."""
    small_with_batch_norm = [o for o in SMALL if o != "model.conv=null"] + ["model.conv.channels=[4]"]
    cfg = make_cfg(tmp_path, *small_with_batch_norm, "trainer.max_epochs=4", "optimizer.lr=1e6")
    with pytest.raises(NonFiniteError) as error:
        train(cfg)
    message = str(error.value)
    pattern = r"became non-finite (in the training step )?at epoch \d, global step \d+ \(batch \d of the epoch\)"
    assert re.search(pattern, message), message
    checkpoints = sorted((tmp_path / "checkpoints").glob("*.ckpt"))
    kept = re.search(r"The last good checkpoint is kept: (\S+)\. ", message)
    if kept:  # epoch 0 survives on this seed: the checkpoint named is the newest one written
        assert Path(kept.group(1)) == max(checkpoints, key=lambda p: p.stat().st_mtime)
    else:
        assert "No checkpoint had been written yet" in message and not checkpoints
    assert all(finite_tensors(path) for path in checkpoints)


def test_main_exits_non_zero_with_the_message(tmp_path, monkeypatch):
    def stop(cfg):
        raise NonFiniteError("Training loss became nan at epoch 3, global step 40 (batch 4 of the epoch); ...")

    monkeypatch.setattr(train_script, "run", stop)
    with pytest.raises(SystemExit) as exit_:
        train_script.hydra_main.__wrapped__(make_cfg(tmp_path))
    assert exit_.value.code == ("Training stopped: Training loss became nan at epoch 3, global step 40 "
                                "(batch 4 of the epoch); ...")


def test_main_reports_a_checkpoint_that_could_not_be_written_in_one_sentence(tmp_path, monkeypatch):
    """A full disk (CheckpointWriteError) ends the run with its one sentence, not a traceback."""
    from snn.training import CheckpointWriteError

    sentence = "Could not write /x/last.ckpt: No space left on device (errno 28); the previous checkpoints are intact."

    def full_disk(cfg):
        raise CheckpointWriteError(sentence)

    monkeypatch.setattr(train_script, "run", full_disk)
    with pytest.raises(SystemExit) as exit_:
        train_script.hydra_main.__wrapped__(make_cfg(tmp_path))
    assert exit_.value.code == f"Checkpoint not written: {sentence}"


# --- bad config: one paragraph, valid choices, before any data is read ------------------------------


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["dataset=imagenet"], f"Unknown dataset 'imagenet'; choose one of {DATASETS} (the files in conf/dataset/)."),
        (["model=hh"], "Unknown model 'hh'; choose one of adex, adex_conv, lif"),
        (["model.neuron.tau_mem=3"],
         "Unknown config key 'model.neuron.tau_mem'. Did you mean 'model.neuron.tau_mem_inv'? Valid keys at "
         "'model.neuron': kind, tau_syn_inv, tau_mem_inv,"),
        (["trainer.max_epoch=3", "model.T=4"],
         "Unknown config key 'trainer.max_epoch'. Did you mean 'trainer.max_epochs'? Valid keys at 'trainer': "
         "_target_, default_root_dir, accelerator, devices, precision, min_epochs, max_epochs,"),
        (["seeed=1"], "Unknown config key 'seeed'. Did you mean 'seed'? Valid keys at the top level: "),
        # A typo above the last level: the valid keys where it is, also with other overrides beside it.
        (["model.nueron.tau_mem_inv=50", "model.T=4"],
         "Unknown config key 'model.nueron'. Did you mean 'model.neuron'? Valid keys at 'model': neuron, _target_,"),
        (["modle.T=4"], "Unknown config key 'modle'. Did you mean 'model'? Valid keys at the top level: seed,"),
        (["dataset=store_recall", "dataset.task.framess=3"],
         "Unknown config key 'dataset.task.framess'. Did you mean 'dataset.task.frames'? Valid keys at 'dataset.task'"),
    ],
)
def test_unknown_keys_and_options_are_explained_with_the_valid_choices(overrides, message):
    explanation = explain_composition_error(CONF, overrides)
    assert message in explanation and "\n" not in explanation
    assert "choose one of" in explanation or any(f"+{o.split('=')[0]}=<value>" in explanation for o in overrides)


def test_a_composable_command_line_is_left_to_hydra():
    assert explain_composition_error(CONF, ["model=lif", "+model.neuron.extra=1", "hydra.run.dir=/tmp/x"]) is None


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.T=-4", "The number of time steps T must be a positive integer, got -4"),
        ("model.neuron.method=relu", r"relu.*atan.*super"),
        ("+model.neuron.tau_mem=3", r"no field\(s\) \['tau_mem'\]; valid: \[.*'tau_syn_inv', 'tau_mem_inv'"),
        ("optimized_metric=val/foo", "optimized_metric=val/foo is not a metric logged during training; choose one of "
                                     "val/acc, val/loss, train/acc, train/loss, train/loss_epoch, loss, "
                                     "spikes/hidden1/val_rate, "
                                     "spikes/hidden1/rate."),
        ("optimized_metric=test/acc",
         r"test/acc is not a metric logged during training \(test metrics are logged only after training\)"),
        ("callbacks.model_checkpoint.monitor=val/accuracy",
         "callbacks.model_checkpoint.monitor=val/accuracy is not a metric"),
        ("optimizer.lr=abc", "optimizer.lr must be a positive number, got 'abc'."),
        ("optimizer.lr=-1", "optimizer.lr must be a positive number, got -1."),
        ("+optimizer.betas=[0.9,2.0]", "Invalid optimizer config: Invalid beta parameter at index 1: 2.0"),
        ("model._target_=mynet.MyNet", r"model config's _target_ 'mynet.MyNet' cannot be built: the module 'mynet' "
                                       r"cannot be imported.*PYTHONPATH=.*pip install -e"),
        ("optimizer._target_=torch.optim.Lion", r"'torch.optim' \(.*\) has no attribute or submodule 'Lion'"),
        ("callbacks.epoch_log._target_=mycallbacks.Log",
         r"The callbacks.epoch_log config's _target_ 'mycallbacks.Log' cannot be built: the module 'mycallbacks'"),
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
        (["dataset=imagenet"], "Config error: Unknown dataset 'imagenet'; choose one of cifar10, cue_accumulation,"),
        (["model.T=-4"],
         "Config error: Invalid model config: The number of time steps T must be a positive integer, got -4."),
    ],
)
def test_command_line_config_errors_are_one_paragraph(tmp_path, args, message):
    command = [sys.executable, str(ROOT / "train.py"), *args, f"hydra.run.dir={tmp_path / 'run'}",
               f"paths.data_dir={tmp_path}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith(message), result.stderr[-2000:]
    assert "Traceback" not in result.stderr and "not found" not in result.stderr


def test_resuming_a_finished_checkpoint_asks_for_more_epochs(tmp_path):
    train(make_cfg(tmp_path / "run", *SMALL, "trainer.max_epochs=1"))
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=f"The checkpoint {last} already finished epoch 0 \\(1 epochs\\), and "
                                          r"trainer.max_epochs=1 leaves nothing to train: "
                                          r"raise trainer.max_epochs \(above 1\)."):
        train(make_cfg(tmp_path / "resumed", *SMALL, "trainer.max_epochs=1", f"ckpt_path={last}"))
    assert not (tmp_path / "resumed" / "checkpoints").exists()


def test_a_checkpoint_taken_after_an_epochs_last_batch_counts_that_epoch_as_finished():
    # Ctrl-C/SIGTERM between the last batch and the validation of epoch 1: Lightning resumes with epoch 2.
    fit_loop = {
        "epoch_progress": {"current": {"started": 2, "processed": 1}},
        "epoch_loop.batch_progress": {"is_last_batch": True},
    }
    checkpoint = {"loops": {"fit_loop": fit_loop}, "global_step": 12}
    with pytest.raises(ValueError, match=r"already finished epoch 1 \(2 epochs\), and trainer.max_epochs=2"):
        check_epochs_left(checkpoint, OmegaConf.create({"max_epochs": 2}), "interrupted.ckpt")
    check_epochs_left(checkpoint, OmegaConf.create({"max_epochs": 3}), "interrupted.ckpt")
    fit_loop["epoch_loop.batch_progress"]["is_last_batch"] = False  # mid-epoch: epoch 1 is still to finish
    check_epochs_left(checkpoint, OmegaConf.create({"max_epochs": 2}), "interrupted.ckpt")


# --- corrupt data -----------------------------------------------------------------------------------


def write_mnist(data: Path, n_train: int = 40, n_test: int = 10) -> None:
    """A small MNIST in ``data``: random images, labels 0..9 in turn."""
    data.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        header = struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28)
        (data / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + images.tobytes()))
        (data / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">BBBBI", 0, 0, 8, 1, n) + labels.tobytes())


def test_a_validation_split_larger_than_the_data_names_both_sizes(tmp_path):
    # Synthetic data: the sizes are in the config, so building the DataModule fails.
    with pytest.raises(ConfigError, match=r"dataset.val_size=600 holds out 600 of the 512 samples of the synthetic "
                                          r"training set for validation, which leaves no training data: "
                                          r"choose a count from 1 to 511"):
        train(make_cfg(tmp_path / "synthetic", *SMALL, "dataset.val_size=600"))
    # Files: the sizes are known once they are read.
    write_mnist(tmp_path / "data")
    with pytest.raises(ConfigError,
                       match="dataset.val_size=5000 holds out 5000 of the 40 samples of the MNIST training set"):
        train(make_cfg(tmp_path / "mnist", "dataset=mnist", f"dataset.data_dir={tmp_path / 'data'}", "model.T=4",
                       "model.hidden=8", "model.conv=null", "trainer.accelerator=cpu", "logger=none", "test=false"))


def test_truncated_data_file_is_named(tmp_path):
    data = tmp_path / "data"
    write_mnist(data)
    bad = data / "t10k-labels-idx1-ubyte"
    bad.write_bytes(bad.read_bytes()[:-3])  # a download cut short
    with pytest.raises(ValueError, match=f"{bad} is truncated"):
        train(make_cfg(tmp_path, "dataset=mnist", "dataset.val_size=8", "model.T=4", "model.hidden=8",
                       "model.conv=null", "trainer.max_epochs=1", "trainer.accelerator=cpu", "logger=none",
                       "test=false"))
    gz = data / "train-images-idx3-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:100])
    with pytest.raises(ValueError, match=f"{gz} is a corrupt or truncated gzip file"):
        train(make_cfg(tmp_path / "again", "dataset=mnist", f"dataset.data_dir={data}", "dataset.val_size=8",
                       "model.T=4", "model.hidden=8", "model.conv=null", "trainer.accelerator=cpu", "logger=none",
                       "test=false"))


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
@pytest.mark.parametrize("signum,returncode,said", [(signal.SIGINT, 1, "Interrupted at epoch"),
                                                    (signal.SIGTERM, 143, "Terminated (SIGTERM) at epoch")])
def test_a_signal_to_a_running_training_saves_a_checkpoint_that_resumes(tmp_path, signum, returncode, said):
    """Ctrl-C, and SIGTERM (kill, a container stop, a scheduler) as well: a non-zero exit and interrupted.ckpt."""
    run = tmp_path / "run"
    command = [sys.executable, str(ROOT / "train.py"), *SMALL, "trainer.max_epochs=500", f"hydra.run.dir={run}",
               f"paths.data_dir={tmp_path}", "callbacks.progress_bar=null"]
    # The child gets SIGINT's default disposition, as a process started from a shell does: an ignored
    # SIGINT (left so in the test process by something an earlier test ran) is inherited across exec,
    # and a Python started with it ignored never turns Ctrl-C into KeyboardInterrupt.
    process = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 900
    while not (run / "checkpoints" / "last.ckpt").exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
    time.sleep(0.5)  # mid-epoch
    os.kill(process.pid, signum)
    output, _ = process.communicate(timeout=900)
    assert process.returncode == returncode, output[-3000:]
    assert said in output
    assert "weights_only" not in output  # Lightning's note on saving it: snn.training.quiet drops it
    interrupted = run / "checkpoints" / "interrupted.ckpt"
    checkpoint = load_checkpoint(interrupted)
    assert 6 <= checkpoint["global_step"] < 500 * 6
    # The rest of the interrupted epoch (none when the signal came after its last batch) and one more.
    epochs = checkpoint["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"] + 2
    train(make_cfg(tmp_path / "resumed", *SMALL, f"trainer.max_epochs={epochs}", f"ckpt_path={interrupted}"))
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert (resumed["epoch"], resumed["global_step"]) == (epochs - 1, epochs * 6)


def test_all_finite_finds_nan_and_inf_and_never_mistakes_huge_finite_values():
    """The CPU fast path sums the values: a sum that overflows on finite values (3e38 + 3e38) must
    not stop training, and NaN, inf and +inf with -inf (whose sum is NaN) must."""
    from snn.training.failures import all_finite

    huge = [torch.full((1000,), 3e38), torch.full((10,), -3e38)]
    assert bool(all_finite(huge))
    assert bool(all_finite([torch.randn(5, 5), torch.randn(3, dtype=torch.float64)]))
    for bad in (float("nan"), float("inf"), -float("inf")):
        tensors = [torch.randn(4, 4), torch.randn(7)]
        tensors[1][3] = bad
        assert not bool(all_finite(tensors))
    assert not bool(all_finite([torch.tensor([float("inf"), -float("inf")])]))
    assert not bool(all_finite([torch.randn(3), torch.tensor([1.0, float("nan")], dtype=torch.float64)]))
    assert all_finite([torch.arange(3)]) is None  # integer buffers are not checked
