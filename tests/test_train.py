"""train.py end to end: fast dev runs of every model, learning, logging, checkpoints, real data."""

import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from snn.training import SpikingClassifierModule
from snn.training.run import run as train
from tests.helpers import ROOT, fit_and_recheck, make_cfg, with_callback

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def scalars(run_dir: Path) -> dict[str, list[float]]:
    """Every scalar the TensorBoard logger wrote, by tag."""
    events = EventAccumulator(str(run_dir / "tensorboard")).Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_missing_dataset_stops_the_run_with_one_clear_message(tmp_path):
    cfg = make_cfg(tmp_path, "dataset=mnist", "dataset.download=false", "debug=fdr")
    with pytest.raises(ValueError) as error:  # train.py's ConfigError: printed without a traceback
        train(cfg)
    assert type(error.value).__name__ == "ConfigError"
    message = str(error.value)
    assert message.startswith("MNIST not found") and str((tmp_path / "data").resolve()) in message
    assert "t10k-images-idx3-ubyte" in message and "dataset=fashion_mnist" in message


@pytest.mark.parametrize("setting", ["max_epochs=0", "max_steps=0", "limit_train_batches=0", "limit_train_batches=0.0"])
def test_a_trainer_that_would_train_nothing_is_refused_before_fitting(tmp_path, setting):
    cfg = make_cfg(tmp_path, "dataset=synthetic", "model.conv=null", "trainer=cpu", f"trainer.{setting}")
    with pytest.raises(ValueError) as error:
        train(cfg)
    assert type(error.value).__name__ == "ConfigError"
    assert f"trainer.{setting} trains nothing" in str(error.value) and "train=false ckpt_path=" in str(error.value)
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("model", ["adex", "lif", "adex_conv"])
def test_fast_dev_run_of_every_model(tmp_path, monkeypatch, model):
    """The accuracy a run reports is its model's on the validation batch (fit_and_recheck)."""
    fit_and_recheck(make_cfg(tmp_path, f"model={model}", "dataset=synthetic", "debug=fdr", "model.T=8"), monkeypatch)


class FitMetrics(L.Callback):
    def on_fit_end(self, trainer, pl_module):
        # LearningRateMonitor adds lr-AdamW: a learning rate, not a metric to optimise.
        self.logged = {m for m in trainer.callback_metrics if not m.startswith("lr-")}
        self.declared = set(pl_module.fit_metrics())


@pytest.mark.parametrize("rate_weight", [0.0, 0.1])
def test_fit_metrics_are_the_metrics_logged_while_fitting(tmp_path, monkeypatch, rate_weight):
    # What optimized_metric is checked against before training starts.
    metrics = FitMetrics()
    with_callback(monkeypatch, metrics)
    train(make_cfg(tmp_path, "dataset=synthetic", "debug=fdr", "model.T=4", "model.hidden=[8,8]",
                   f"regularizer.rate_weight={rate_weight}"))
    assert metrics.logged == metrics.declared and "spikes/hidden2/val_rate" in metrics.logged


def test_trains_in_float64(tmp_path, monkeypatch):
    """trainer.precision=64-true: fused kernels, batch norm, model summary and raster plot run in float64,
    and the accuracy the run reports is its float64 model's (fit_and_recheck)."""
    fit_and_recheck(make_cfg(tmp_path, "dataset=synthetic", "model.T=6", "model.conv.channels=[4]", "model.hidden=16",
                             "model.neuron.backend=cpp", "trainer.precision=64-true", "trainer.max_epochs=1",
                             "trainer.accelerator=cpu", "callbacks.spike_raster.every_n_epochs=1"), monkeypatch)
    weights = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    assert {w.dtype for w in weights.values() if w.is_floating_point()} == {torch.float64}
    assert "test/acc" in scalars(tmp_path)


def test_learns_a_separable_task_logs_everything_and_checkpoints_rebuild_the_model(tmp_path):
    # decoder=mean as in the Fashion-MNIST recipe: it learns this task in 36 steps (max needs more).
    cfg = make_cfg(tmp_path, "model=adex", "dataset=synthetic", "model.T=12", "model.conv.channels=[8]",
                   "model.hidden=32", "model.decoder=mean", "trainer.max_epochs=6", "trainer.accelerator=cpu",
                   "trainer.log_every_n_steps=1")
    val_acc = train(cfg)
    assert val_acc > 0.9  # 4 classes: chance is 0.25

    logged = scalars(tmp_path)
    for tag in ("train/loss", "train/loss_epoch", "train/acc", "val/loss", "val/acc", "test/loss", "test/acc",
                "spikes/hidden1/rate", "spikes/hidden1/val_rate", "spikes/hidden1/test_rate", "lr-AdamW"):
        assert tag in logged, (tag, sorted(logged))
    train_loss = logged["train/loss_epoch"]
    assert len(train_loss) == 6 and train_loss[-1] < 0.85 * train_loss[0]
    assert len(logged["train/loss"]) == 6 * 6  # per step: 6 batches of 64 in each of 6 epochs
    assert max(logged["val/acc"]) == pytest.approx(val_acc)
    assert logged["test/acc"][-1] > 0.9
    assert all(0.0 <= r <= 1.0 for r in logged["spikes/hidden1/rate"]) and max(logged["spikes/hidden1/rate"]) > 0

    best = next((tmp_path / "checkpoints").glob("epoch_*.ckpt"))
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    # The checkpoint alone rebuilds the model (its config is in the hyperparameters).
    restored = SpikingClassifierModule.load_from_checkpoint(best, map_location="cpu").eval()
    assert restored.hparams.net["_target_"] == "snn.models.SpikingClassifier"
    reference = SpikingClassifierModule(**restored.hparams).eval()
    reference.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
    x = torch.rand(5, 1, 8, 8)
    torch.testing.assert_close(restored(x), reference(x))


def test_rate_regulariser_pulls_firing_rates_to_the_target(tmp_path):
    def val_rate(weight: float, run: str) -> float:
        overrides = ["model=adex", "dataset=synthetic", "model.T=10", "model.conv=null", "model.hidden=32",
                     "trainer.max_epochs=4", "trainer.accelerator=cpu", "logger=csv", "callbacks.model_checkpoint=null",
                     "test=false", "regularizer.rate_target=0.0", f"regularizer.rate_weight={weight}",
                     "optimizer.lr=5e-3", "model.encoder.scale=3.0"]
        train(make_cfg(tmp_path / run, *overrides))
        lines = (tmp_path / run / "csv" / "metrics.csv").read_text().splitlines()
        header = lines[0].split(",")
        column = header.index("spikes/hidden1/val_rate")
        return [float(row.split(",")[column]) for row in lines[1:] if row.split(",")[column]][-1]

    free, penalised = val_rate(0.0, "free"), val_rate(100.0, "penalised")
    assert free > 0.02 and penalised < 0.5 * free


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_short_real_run_on_fashion_mnist_beats_chance(tmp_path):
    cfg = make_cfg(tmp_path, "experiment=fashion_mnist_adex", "trainer.max_epochs=1", "trainer.limit_train_batches=40",
                   "trainer.limit_val_batches=10", "trainer.accelerator=cpu", "test=false", "logger=none")
    assert cfg.dataset.search_dirs == [str(FASHION_DIR)]
    assert train(cfg) > 0.5  # 10 classes: chance is 0.1


@pytest.mark.slow
def test_ddp_on_two_cpu_processes(tmp_path):
    command = [sys.executable, "train.py", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2",
               "trainer.sync_batchnorm=false",  # SyncBatchNorm needs GPUs
               "dataset=synthetic", "model.T=6", "model.hidden=16", "trainer.max_epochs=1", "logger=csv",
               f"hydra.run.dir={tmp_path}", f"paths.data_dir={tmp_path}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Best checkpoint" in result.stdout
    metrics = (tmp_path / "csv" / "metrics.csv").read_text()
    assert "val/acc" in metrics and "spikes/hidden1/val_rate" in metrics
