"""Resuming and fine-tuning: what happens to the learning-rate schedule. Resuming with a raised
trainer.max_epochs continues the config's cosine, stretched to the new horizon, from the epoch the
checkpoint reached (never an epoch at learning rate 0); init_from= starts a fresh optimizer and
schedule from a checkpoint's weights."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from snn.errors import ConfigError
from snn.training import load_checkpoint
from snn.training.module import SpikingClassifierModule
from snn.training.run import run as train
from tests.helpers import make_cfg

TINY = ["dataset=synthetic", "dataset.num_train=192", "dataset.val_size=64", "dataset.num_test=64",
        "dataset.batch_size=64", "model.T=4", "model.hidden=8", "model.conv=null", "trainer.accelerator=cpu",
        "logger=csv", "test=false", "callbacks.spike_raster=null", "callbacks.progress_bar=null",
        "optimizer.lr=0.002"]
LR = 0.002


def logged_lr(run: Path) -> list[float]:
    """The learning rate LearningRateMonitor logged for each epoch of a run."""
    rows = csv.DictReader((run / "csv" / "metrics.csv").open())
    return [float(row["lr-AdamW"]) for row in rows if row.get("lr-AdamW")]


def cosine(epoch: int, horizon: int) -> float:
    return LR * 0.5 * (1 + math.cos(math.pi * epoch / horizon))


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("two_epochs")
    train(make_cfg(run, *TINY, "trainer.max_epochs=2"))
    assert logged_lr(run) == pytest.approx([cosine(0, 2), cosine(1, 2)])  # 0.002, 0.001
    return run / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("epochs", [3, 4])
def test_resuming_with_more_epochs_stretches_the_cosine_from_the_epoch_reached(tmp_path, two_epochs, epochs):
    train(make_cfg(tmp_path, *TINY, f"trainer.max_epochs={epochs}", f"ckpt_path={two_epochs}"))
    # Epochs 2.. follow the cosine over the new horizon: 4 epochs -> 0.001, 0.000293; 3 -> 0.0005.
    assert logged_lr(tmp_path) == pytest.approx([cosine(e, epochs) for e in range(2, epochs)], rel=1e-6)
    assert all(lr > 0 for lr in logged_lr(tmp_path))
    scheduler = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["lr_schedulers"][0]
    assert scheduler["T_max"] == epochs and scheduler["last_epoch"] == epochs


def test_without_the_stretch_the_resumed_epoch_would_train_at_lr_0_and_is_stopped(tmp_path, two_epochs,
                                                                                   monkeypatch):
    """What the stretch prevents: the restored scheduler (T_max = 2) puts epoch 2 at lr 0, and the
    guard refuses to train it instead of silently doing nothing."""
    monkeypatch.setattr(SpikingClassifierModule, "_continue_schedule", lambda self, scheduler: None)
    with pytest.raises(ConfigError, match=r"Epoch 2 would train with learning rate 0 everywhere \(scheduler: "
                                          r"CosineAnnealingLR \(T_max=2\); trainer.max_epochs=3\).*init_from="):
        train(make_cfg(tmp_path, *TINY, "trainer.max_epochs=3", f"ckpt_path={two_epochs}"))


def test_an_explicit_short_cosine_is_stopped_at_the_first_epoch_at_lr_0(tmp_path):
    with pytest.raises(ConfigError, match=r"Epoch 1 would train with learning rate 0 everywhere"):
        train(make_cfg(tmp_path, *TINY, "trainer.max_epochs=2", "scheduler.T_max=1"))


def test_a_finished_checkpoint_says_raising_max_epochs_stretches_the_schedule(tmp_path, two_epochs):
    with pytest.raises(ConfigError, match=r"already finished epoch 1 \(2 epochs\).*raise trainer.max_epochs "
                                          r"\(above 2\).*stretched.*init_from="):
        train(make_cfg(tmp_path, *TINY, "trainer.max_epochs=2", f"ckpt_path={two_epochs}"))


def test_init_from_fine_tunes_the_weights_with_a_fresh_optimizer_and_schedule(tmp_path, two_epochs):
    train(make_cfg(tmp_path, *TINY, "trainer.max_epochs=2", f"init_from={two_epochs}", "optimizer.lr=0.001",
                   "callbacks.model_checkpoint=null"))
    # A fresh cosine over 2 epochs from the new lr; the epoch count starts at 0.
    assert logged_lr(tmp_path) == pytest.approx([0.001, 0.0005])
    tuned = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert tuned["epoch"] == 1 and tuned["global_step"] == 4
    # It started from the checkpoint's weights: a fresh model differs from them far more after 4 steps.
    start = load_checkpoint(two_epochs)["state_dict"]
    moved = max((tuned["state_dict"][k] - start[k]).abs().max() for k in start if k.startswith("net."))
    assert 0 < moved < 0.05


def test_init_from_refuses_weights_of_another_model_and_a_combined_resume(tmp_path, two_epochs):
    with pytest.raises(ConfigError, match=r"init_from=.*do not fit this run.s model.*differences "
                                          r"\(checkpoint -> this run\): hidden: 8 -> 16"):
        train(make_cfg(tmp_path / "a", *TINY, "model.hidden=16", f"init_from={two_epochs}"))
    with pytest.raises(ConfigError, match=r"resumes a run.*starts a new one.*give one of them"):
        train(make_cfg(tmp_path / "b", *TINY, f"ckpt_path={two_epochs}", f"init_from={two_epochs}"))
