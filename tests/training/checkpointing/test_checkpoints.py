"""Checkpoints: best and last, rebuilding the model from one file, exact resume, evaluation, mismatches;
atomic writes (a full disk keeps the previous file), no non-finite weights written, damaged files refused."""

import errno
import os
import struct
import zipfile
from pathlib import Path

import lightning as L
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import snn.training.checkpointing.checkpoint_io as checkpoint_io
from snn.errors import ConfigError
from snn.training import (
    CheckpointError,
    CheckpointWriteError,
    NonFiniteCheckpointError,
    SafeCheckpointIO,
    SpikingClassifierModule,
    load_checkpoint,
    load_classifier,
    load_module,
)
from snn.training.run import build
from snn.training.run import run as train
from tests.helpers import TRAINED_RUN, make_cfg, with_callback

# Randomness everywhere a resume could lose it: shuffled batches, Poisson input spikes, dropout.
RANDOM = ["dataset=synthetic", "model.T=6", "model.hidden=16", "model.conv=null", "model.encoder.kind=poisson",
          "model.dropout=0.2", "trainer.max_epochs=2", "trainer.accelerator=cpu", "logger=none", "test=false"]


class KillAtEpoch(L.Callback):
    """Stands in for a killed job: Ctrl-C when epoch ``epoch`` starts."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["state_dict"]


@pytest.mark.parametrize("rng_state", [True, False])
def test_resumed_run_ends_with_exactly_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch, rng_state):
    extra = [] if rng_state else ["callbacks.rng_state=null"]
    train(make_cfg(tmp_path / "full", *RANDOM, *extra))

    with monkeypatch.context() as m:
        with_callback(m, KillAtEpoch(1))
        with pytest.raises(SystemExit):
            train(make_cfg(tmp_path / "killed", *RANDOM, *extra))
    killed = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(killed)["epoch"] == 0  # only epoch 1 of 2 was completed
    train(make_cfg(tmp_path / "resumed", *RANDOM, *extra, f"ckpt_path={killed}"))

    full = weights(tmp_path / "full" / "checkpoints" / "last.ckpt")
    resumed = weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["global_step"] == 12
    same = all(torch.equal(full[k], resumed[k]) for k in full)
    # With the generator states in the checkpoint the resume is bit-exact; without them the
    # shuffling, Poisson spikes and dropout of epoch 2 differ (which shows what the test checks).
    assert same is rng_state


def test_best_and_last_checkpoints_and_the_model_rebuilt_from_one_file(tmp_path):
    best_val_acc = train(make_cfg(tmp_path, *RANDOM, "model.encoder.kind=constant", "trainer.max_epochs=3"))
    folder = tmp_path / "checkpoints"
    best = sorted(folder.glob("epoch_*.ckpt"))
    assert len(best) == 1 and (folder / "last.ckpt").is_file()
    assert load_checkpoint(folder / "last.ckpt")["epoch"] == 2  # last: the final epoch, whatever val/acc did
    ckpt = load_checkpoint(best[0])
    state = next(v for k, v in ckpt["callbacks"].items() if "val/acc" in k)
    assert Path(state["best_model_path"]) == best[0] and float(state["best_model_score"]) == pytest.approx(best_val_acc)
    assert ckpt["hyper_parameters"]["config"]["model"]["hidden"] == 16  # the whole run config travels along

    net = load_classifier(folder / "last.ckpt")
    assert not net.training and type(net).__name__ == "SpikingClassifier"
    module = load_module(folder / "last.ckpt").eval()
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(net(x), module(x), rtol=0, atol=0)


def test_evaluation_entry_reports_the_test_metrics_of_a_checkpoint(tmp_path, trained_run, capsys):
    best = trained_run.best
    # The model and the data set are the checkpoint's (the defaults here are another model and MNIST).
    acc = train(make_cfg(tmp_path / "eval", "train=false", f"ckpt_path={best}", "logger=none"))
    assert acc == trained_run.test_acc
    assert "Evaluating" in capsys.readouterr().out

    with pytest.raises(ConfigError, match="train=false evaluates a checkpoint: add ckpt_path"):
        train(make_cfg(tmp_path / "eval2", "dataset=synthetic", "train=false"))
    command_line = ["dataset=synthetic", "dataset.num_classes=5", "train=false", f"ckpt_path={best}"]
    with pytest.raises(ConfigError, match=r"takes inputs \[1, 8, 8\] with 4 classes.*\[1, 8, 8\] with 5"):
        train(make_cfg(tmp_path / "eval3", *command_line), overrides=command_line)


def test_checkpoint_of_another_model_config_is_refused(tmp_path, trained_run):
    ckpt = trained_run.last
    with pytest.raises(ConfigError,
                       match=r"different model config.*hidden: 16 -> 20.*neuron.kind: 'adex' -> 'lif'") as error:
        train(make_cfg(tmp_path / "b", *TRAINED_RUN, "model=lif", "model.hidden=20", "model.conv=null",
                       "model.encoder.kind=constant", "model.dropout=0.2", f"ckpt_path={ckpt}"))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "b" / "checkpoints").exists()  # refused before anything ran


def test_unreadable_checkpoints_give_clear_errors(tmp_path, trained_run):
    good = trained_run.last.read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=f"{truncated} is not a readable checkpoint"):
        load_classifier(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1}}, foreign)
    with pytest.raises(ValueError, match="does not record the model config"):
        load_classifier(foreign)
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        load_classifier(tmp_path / "missing.ckpt")
    with pytest.raises(ConfigError, match="missing.ckpt does not exist"):
        train(make_cfg(tmp_path / "b", *RANDOM, f"ckpt_path={tmp_path / 'missing.ckpt'}"))


# --- Writing: atomic, never a non-finite weight; reading: damaged files refused by name ---------------


@pytest.fixture
def trained(trained_run) -> Path:
    """last.ckpt of the session's one-epoch run (tests/conftest.py; the tests below never modify it)."""
    return trained_run.last


def flip_a_bit(source: Path, target: Path, member: str = "archive/data/0") -> Path:
    """A copy of ``source`` with one bit flipped in the middle of the zip member ``member`` (a tensor)."""
    data = bytearray(source.read_bytes())
    with zipfile.ZipFile(source) as archive:
        info = next(i for i in archive.infolist() if i.filename.endswith(member.removeprefix("archive")))
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26 : info.header_offset + 30])
    data[info.header_offset + 30 + name_length + extra_length + info.file_size // 2] ^= 0x10
    target.write_bytes(data)
    return target


class DiskFullAfter:
    """Stands in for ``os.fdopen`` in the checkpoint writer: from the ``n``-th checkpoint on, half the
    bytes reach the temporary file, then the write fails with ENOSPC, as on a full disk."""

    def __init__(self, n: int):
        self.n, self.calls, self.real = n, 0, os.fdopen

    def __call__(self, fd, *args, **kwargs):
        file = self.real(fd, *args, **kwargs)
        self.calls += 1
        if self.calls < self.n:
            return file
        write = file.write

        def half_then_full(data):
            write(bytes(data)[: len(data) // 2])
            file.flush()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        file.write = half_then_full
        return file


def test_every_trainer_writes_and_reads_through_the_safe_checkpoint_io(tmp_path):
    ddp = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=1"]
    for overrides in ([], ["trainer=cpu"], ddp, ["debug=fdr"]):
        trainer = build(make_cfg(tmp_path, "dataset=synthetic", "logger=none", *overrides))[2]
        assert isinstance(trainer.strategy.checkpoint_io, SafeCheckpointIO), overrides


def test_a_full_disk_keeps_the_previous_checkpoint_and_leaves_no_temporary_file(tmp_path, trained, monkeypatch):
    folder = tmp_path / "checkpoints"
    disk = DiskFullAfter(3)  # epoch 0 writes epoch_000.ckpt and last.ckpt; epoch 1's first write fails
    monkeypatch.setattr(checkpoint_io.os, "fdopen", disk)
    with pytest.raises(CheckpointWriteError) as error:
        train(make_cfg(tmp_path, *RANDOM, "trainer.max_epochs=2"))
    monkeypatch.undo()
    assert disk.calls == 3
    message = str(error.value)
    assert message.startswith(f"Could not write the checkpoint {folder}") and "No space left on device" in message
    assert "previous checkpoints are intact" in message and "\n" not in message and error.value.errno == errno.ENOSPC
    assert sorted(p.name for p in folder.iterdir()) == ["epoch_000.ckpt", "last.ckpt"]  # no temporary file left
    assert load_checkpoint(folder / "last.ckpt")["epoch"] == 0  # the previous one, whole

    # The same through the writer alone: the file keeps its old bytes.
    target = tmp_path / "copy.ckpt"
    target.write_bytes(trained.read_bytes())
    monkeypatch.setattr(checkpoint_io.os, "fdopen", DiskFullAfter(1))
    with pytest.raises(CheckpointWriteError, match=f"Could not write the checkpoint {target}: No space left"):
        SafeCheckpointIO().save_checkpoint(load_checkpoint(trained), target)
    assert target.read_bytes() == trained.read_bytes() and sorted(tmp_path.glob(".*.tmp")) == []


def test_a_checkpoint_with_a_non_finite_tensor_is_never_written(tmp_path, trained):
    checkpoint = load_checkpoint(trained)
    target = tmp_path / "last.ckpt"
    target.write_bytes(trained.read_bytes())
    checkpoint["state_dict"]["net.output.weight"][1, 2] = float("nan")
    with pytest.raises(NonFiniteCheckpointError,
                       match=rf"{target}: state_dict\['net.output.weight'\] holds 1 non-finite"):
        SafeCheckpointIO().save_checkpoint(checkpoint, target)
    assert target.read_bytes() == trained.read_bytes() and sorted(tmp_path.glob(".*")) == []

    checkpoint = load_checkpoint(trained)
    checkpoint["optimizer_states"][0]["state"][0]["exp_avg"].fill_(float("inf"))
    with pytest.raises(NonFiniteCheckpointError, match=r"optimizer_states\[0\]\['state'\]\[0\]\['exp_avg'\]"):
        SafeCheckpointIO().save_checkpoint(checkpoint, target)


class SpoilWeightsAtEpochEnd(L.Callback):
    """A weight turns NaN after the last step of epoch 1, just before the checkpoints are written."""

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            with torch.no_grad():
                pl_module.net.output.weight[0, 0] = float("nan")


def test_a_checkpoint_naming_the_old_data_module_paths_loads_on_every_path(tmp_path, trained):
    """The image DataModules moved from snn.training to snn.data; a checkpoint carries the run config
    with the old ``_target_``. Evaluation builds that data set under its new path
    (``snn.training.run.evaluation``), so such a checkpoint still rebuilds, evaluates and resumes."""
    checkpoint = load_checkpoint(trained)
    assert checkpoint["hyper_parameters"]["config"]["dataset"]["_target_"] == "snn.data.SyntheticDataModule"
    checkpoint["hyper_parameters"]["config"]["dataset"]["_target_"] = "snn.training.SyntheticDataModule"
    old = tmp_path / "old.ckpt"
    SafeCheckpointIO().save_checkpoint(checkpoint, old)
    assert load_classifier(old).num_classes == 4
    acc = train(make_cfg(tmp_path / "eval", "dataset=synthetic", "train=false", f"ckpt_path={old}", "logger=none"))
    assert acc == train(make_cfg(tmp_path / "eval_new", "dataset=synthetic", "train=false", f"ckpt_path={trained}",
                                 "logger=none"))  # its twin under the new path
    resumed = [train(make_cfg(tmp_path / name, *TRAINED_RUN, "trainer.max_epochs=2", "test=false", f"ckpt_path={ckpt}"))
               for name, ckpt in (("resumed_old", old), ("resumed_new", trained))]
    assert resumed[0] == resumed[1]
    old_weights, new_weights = (weights(tmp_path / name / "checkpoints" / "last.ckpt")
                                for name in ("resumed_old", "resumed_new"))
    assert old_weights.keys() == new_weights.keys()
    assert all(torch.equal(old_weights[k], new_weights[k]) for k in old_weights)


def test_training_never_writes_a_non_finite_weight(tmp_path, monkeypatch):
    with_callback(monkeypatch, SpoilWeightsAtEpochEnd())
    # The writer refuses (or the training guard stops the run first): either way nothing is written.
    with pytest.raises(FloatingPointError):
        train(make_cfg(tmp_path, *RANDOM, "trainer.max_epochs=2"))
    written = sorted((tmp_path / "checkpoints").iterdir())
    assert [p.name for p in written] == ["epoch_000.ckpt", "last.ckpt"]
    for path in written:
        assert all(torch.isfinite(t).all() for t in load_checkpoint(path)["state_dict"].values())


def test_a_damaged_checkpoint_is_refused_by_name_on_every_load_path(tmp_path, trained):
    # torch alone: silent
    assert torch.load(flip_a_bit(trained, tmp_path / "flipped.ckpt"), weights_only=True)["epoch"] == 0
    damaged = rf"{tmp_path / 'flipped.ckpt'} is damaged: the checksum of its part 'archive/data/0' does not match"
    flipped = tmp_path / "flipped.ckpt"
    with pytest.raises(CheckpointError, match=damaged):
        load_classifier(flipped)
    with pytest.raises(CheckpointError, match=damaged):
        SafeCheckpointIO().load_checkpoint(flipped)  # Lightning's own reads (ckpt_path=, trainer.test)
    with pytest.raises(ConfigError, match=damaged):
        train(make_cfg(tmp_path / "resume", *TRAINED_RUN, "trainer.max_epochs=2", f"ckpt_path={flipped}"))
    with pytest.raises(ConfigError, match=damaged):
        train(make_cfg(tmp_path / "evaluate", "dataset=synthetic", "logger=none", "train=false",
                       f"ckpt_path={flipped}"))
    assert not (tmp_path / "resume" / "checkpoints").exists()
    # A flip in the pickle itself is caught the same way, before unpickling.
    with pytest.raises(CheckpointError, match="its part 'archive/data.pkl' does not match"):
        load_classifier(flip_a_bit(trained, tmp_path / "pickle.ckpt", "archive/data.pkl"))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_loading_onto_cuda_without_cuda_says_so(trained):
    with pytest.raises(ValueError,
                       match=r"map_location='cuda' asks for a CUDA device, but this machine has none"
                             r".*map_location='cpu'"):
        load_classifier(trained, map_location="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_loading_onto_cuda(trained):
    net = load_classifier(trained, map_location="cuda")
    assert next(net.parameters()).is_cuda
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(net(x.cuda()).cpu(), load_classifier(trained)(x), rtol=1e-4, atol=1e-5)


class LargestFactory(TorchDispatchMode):
    """Records the largest tensor a factory call (torch.empty, zeros, randn, ...) actually made."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if isinstance(out, torch.Tensor) and func.overloadpacket.__name__ in ("empty", "empty_strided", "zeros"):
            self.largest = max(self.largest, out.numel() * out.element_size())
        return out


@pytest.mark.parametrize("loader", ["load_classifier", "load_from_checkpoint"])
def test_a_config_larger_than_its_weights_is_refused_before_its_layers_are_allocated(tmp_path, loader):
    net = {"_target_": "snn.models.SpikingClassifier", "input_shape": [1, 8, 8], "num_classes": 4, "T": 6,
           "hidden": [16]}
    module = SpikingClassifierModule(net=net, optimizer={"_target_": "torch.optim.Adam", "_partial_": True})
    checkpoint = {"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams)}
    load = load_classifier if loader == "load_classifier" else SpikingClassifierModule.load_from_checkpoint
    torch.save(checkpoint, tmp_path / "fits.ckpt")
    assert load(tmp_path / "fits.ckpt") is not None
    checkpoint["hyper_parameters"]["net"]["hidden"] = [20000, 20000]  # 2.35 GB of layers for 16 neurons' weights
    torch.save(checkpoint, tmp_path / "huge.ckpt")
    with LargestFactory() as seen, pytest.raises(ValueError, match=f"{tmp_path / 'huge.ckpt'} asks for more"):
        load(tmp_path / "huge.ckpt")
    assert 0 < seen.largest < 2**26  # the 20000 x 20000 weight (1.6 GB) was never allocated


# --- resuming the random generators on another number of GPUs -----------------------------------------


def fake_gpus(monkeypatch, count: int) -> list:
    """``count`` CUDA devices as far as set_rng_states can tell; returns the (state, index) it sets."""
    restored = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "set_rng_state", lambda state, index: restored.append((int(state[0]), index)))
    return restored


@pytest.mark.parametrize("saved, present, restored, missing", [
    (4, 2, [(0, 0), (1, 1)], "the CUDA generators of 2 of the 4 GPUs the checkpoint was written on "
                             "(this machine has 2)"),
    (1, 0, [], "the CUDA generators of 1 of the 1 GPUs the checkpoint was written on (this machine has none)"),
    (0, 2, [], "the CUDA generators (the checkpoint was written without CUDA)"),
    (2, 4, [(0, 0), (1, 1)], None),
])
def test_resume_restores_the_generators_this_machine_has_and_says_which_it_could_not(
        monkeypatch, saved, present, restored, missing):
    from snn.training.checkpointing.checkpoints import rng_states, set_rng_states

    states = rng_states()
    states.pop("cuda", None)
    if saved:
        states["cuda"] = [torch.full((8,), k, dtype=torch.uint8) for k in range(saved)]
    expected = torch.rand(3)
    done = fake_gpus(monkeypatch, present)
    assert set_rng_states(states) == ([missing] if missing else [])
    assert done == restored
    assert torch.equal(torch.rand(3), expected)  # the CPU generator is back where it was saved


def test_resume_on_fewer_gpus_warns_once_naming_what_was_not_restored(monkeypatch):
    from snn.training import RNGStateCheckpoint
    from snn.training.checkpointing.checkpoints import rng_states

    callback = RNGStateCheckpoint()
    states = rng_states()
    states["cuda"] = [torch.zeros(8, dtype=torch.uint8)] * 2
    callback.on_load_checkpoint(None, None, {"rng_states": states})
    fake_gpus(monkeypatch, 1)
    with pytest.warns(UserWarning, match=r"but not the CUDA generators of 1 of the 2 GPUs .*this machine has 1\): "
                                         r"those start from the run's seed"):
        callback.on_fit_start(None, None)
