"""Evaluating a checkpoint (train=false ckpt_path=...) builds what the checkpoint was trained with:
its model and its data set, from the configs it carries, unless the command line picks a data set
(whose shapes are then checked) or changes single values."""

from __future__ import annotations

from pathlib import Path

import pytest

from snn.errors import ConfigError
from snn.training import load_checkpoint
from snn.training.run import run as train
from tests.helpers import logged_test_acc, make_cfg

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
QUICK = ["trainer.accelerator=cpu", "logger=csv", "test=true", "callbacks.spike_raster=null",
         "callbacks.progress_bar=null", "trainer.max_epochs=1"]


def evaluate(tmp_path: Path, ckpt: Path, *overrides: str) -> tuple[float, list]:
    """Evaluates ``ckpt`` as ``train.py train=false ckpt_path=<ckpt> <overrides>`` would."""
    command_line = ["train=false", f"ckpt_path={ckpt}", "trainer.accelerator=cpu", "logger=none", *overrides]
    return train(make_cfg(tmp_path, *command_line), overrides=command_line)


@pytest.fixture
def synthetic(trained_run) -> Path:
    """The session's trained checkpoint (tests/conftest.py): synthetic [1, 8, 8] inputs, 4 classes,
    unlike the defaults (MNIST's [1, 28, 28], 10 classes)."""
    return trained_run.last


def test_evaluation_uses_the_checkpoints_data_set_and_model(tmp_path, trained_run, capsys):
    accuracy = evaluate(tmp_path, trained_run.best)
    out = capsys.readouterr().out
    assert "its model and the data set from the checkpoint's config (synthetic" in out
    assert f"Run directory: {tmp_path.resolve()}" in out
    assert accuracy == trained_run.test_acc  # what the run's own test of this checkpoint logged


def test_evaluation_reads_and_verifies_the_checkpoint_once(tmp_path, synthetic, monkeypatch):
    """The configs and the module come from one read of the file (integrity check and unpickling)."""
    from snn.training.checkpointing import safe_load

    reads = []
    read = safe_load.read_checkpoint
    monkeypatch.setattr(safe_load, "read_checkpoint", lambda path, *args: reads.append(path) or read(path, *args))
    once = evaluate(tmp_path / "once", synthetic)
    assert reads == [Path(synthetic)]
    monkeypatch.undo()
    assert evaluate(tmp_path / "again", synthetic) == once


def test_a_data_set_chosen_on_the_command_line_is_used_and_checked(tmp_path, synthetic, capsys):
    # The same shapes from the command line: used (a different noise level, so a different accuracy).
    evaluate(tmp_path / "same", synthetic, "dataset=synthetic", "dataset.noise=0.9", "dataset.num_test=48")
    assert "data set from the command line" in capsys.readouterr().out
    # Other shapes: refused, naming both and the way back to the checkpoint's own data set.
    with pytest.raises(ConfigError, match=r"takes inputs \[1, 8, 8\] with 4 classes, the dataset config gives "
                                          r"\[2, 6, 6\] with 3; leave dataset= out"):
        evaluate(tmp_path / "other", synthetic, "dataset=synthetic", "dataset.input_shape=[2,6,6]",
                 "dataset.num_classes=3")


def test_single_values_override_the_checkpoints_configs(tmp_path, synthetic, capsys):
    evaluate(tmp_path / "a", synthetic, "dataset.batch_size=16", "model.neuron.backend=eager")
    assert "from the checkpoint's config" in capsys.readouterr().out
    with pytest.raises(ConfigError, match=r"dataset.val_fraction is not a key of the checkpoint's dataset config"):
        evaluate(tmp_path / "b", synthetic, "+dataset.val_fraction=0.5")


def test_a_store_recall_checkpoint_evaluates_its_recurrent_model_on_its_task(tmp_path, capsys):
    task = ["experiment=store_recall_adex", "dataset.task.frame_ms=10", "dataset.task.frames=4", "dataset.T=40",
            "model.decoder_steps=10", "model.hidden=[8]", "dataset.num_train=64", "dataset.num_val=32",
            "dataset.num_test=32"]
    train(make_cfg(tmp_path / "run", *task, *QUICK))
    (ckpt,) = (tmp_path / "run" / "checkpoints").glob("epoch_*.ckpt")
    assert load_checkpoint(ckpt)["hyper_parameters"]["net"]["_target_"] == "snn.models.SpikingSequenceClassifier"
    accuracy = evaluate(tmp_path / "evaluated", ckpt)
    assert "data set from the checkpoint's config (STORE-RECALL)" in capsys.readouterr().out
    assert accuracy == logged_test_acc(tmp_path / "run")  # the fit's own test of this checkpoint


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_a_fashion_mnist_checkpoint_is_evaluated_on_fashion_mnist(tmp_path, capsys):
    run = ["dataset=fashion_mnist", "model.T=2", "model.hidden=8", "model.conv=null", "trainer.limit_train_batches=2",
           "trainer.limit_val_batches=1", *QUICK]
    train(make_cfg(tmp_path / "run", *run))
    evaluate(tmp_path / "evaluated", tmp_path / "run" / "checkpoints" / "last.ckpt", "trainer.limit_test_batches=2")
    assert "data set from the checkpoint's config (Fashion-MNIST" in capsys.readouterr().out


def test_a_checkpoint_naming_a_data_module_by_its_old_path_evaluates_on_it(tmp_path, synthetic):
    """The image DataModules moved from snn.training to snn.data; older checkpoints name the old path."""
    from snn.training import SafeCheckpointIO

    checkpoint = load_checkpoint(synthetic)
    assert checkpoint["hyper_parameters"]["config"]["dataset"]["_target_"] == "snn.data.SyntheticDataModule"
    checkpoint["hyper_parameters"]["config"]["dataset"]["_target_"] = "snn.training.SyntheticDataModule"
    SafeCheckpointIO().save_checkpoint(checkpoint, tmp_path / "old.ckpt")
    assert evaluate(tmp_path / "run", tmp_path / "old.ckpt") == evaluate(tmp_path / "new", synthetic)
