"""What TensorBoard shows a user of a run: the training loss per step (in runs of any length), every
scalar at the interval the README states, an HPARAMS tab of the values runs are compared by (not
the whole config), and run directories named after the experiment."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from snn.training.monitoring import COLUMNS, comparison_hparams, logging_interval
from snn.training.run import run as train
from snn.training.run.directory import register_run_id
from tests.helpers import compose_config, make_cfg

TINY = ["dataset=synthetic", "dataset.num_train=320", "dataset.val_size=64", "dataset.num_test=64",
        "dataset.batch_size=32", "model.T=4", "model.hidden=8", "model.conv=null", "trainer.accelerator=cpu",
        "test=false", "callbacks.spike_raster=null", "callbacks.progress_bar=null"]


def hparams_shown(run: Path) -> dict:
    events = EventAccumulator(str(run / "tensorboard")).Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.string_value or v.number_value for k, v in info.hparams.items()}


def test_training_loss_is_logged_per_step_and_per_epoch(tmp_path):
    train(make_cfg(tmp_path, *TINY, "trainer.max_epochs=1", "trainer.log_every_n_steps=2",
                   "callbacks.logging_interval.points_per_epoch=4"))
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    per_step = events.Scalars("train/loss")
    # One epoch of 8 batches, logged every 2 steps: 4 points (a one-epoch run is a curve, not a dot).
    assert [e.step for e in per_step] == [1, 3, 5, 7]
    assert len(events.Scalars("train/loss_epoch")) == 1 and len(events.Scalars("val/loss")) == 1


def test_the_logging_interval_adapts_to_short_epochs():
    assert logging_interval(20, 422) == 20  # MNIST: 422 steps per epoch, every 20th
    assert logging_interval(20, 100) == 10 and logging_interval(20, 19) == 1 and logging_interval(20, 8) == 1
    assert logging_interval(20, 400, accumulate=4) == 10  # 100 optimizer steps per epoch
    assert logging_interval(20, 8, points_per_epoch=4) == 2
    assert logging_interval(0, 8) == 0 and logging_interval(20, math.inf) == 20  # off; an iterable data set


def test_a_short_run_logs_its_loss_at_every_step_without_a_warning(tmp_path):
    """8 batches per epoch under the default trainer.log_every_n_steps (20): Lightning logged no
    per-step loss at all and warned; now every step is a point, and nothing warns."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(make_cfg(tmp_path, *TINY, "trainer.max_epochs=1"))
    assert not [w for w in caught if "log_every_n_steps" in str(w.message)]
    events = EventAccumulator(str(tmp_path / "tensorboard")).Reload()
    assert [e.step for e in events.Scalars("train/loss")] == list(range(8))


# How often the README's TensorBoard table says each scalar is written, by tag: at every step (of a
# run whose epochs are shorter than the logging interval), per epoch, or at the start and per epoch.
PER_STEP = ("train/loss", "spikes/hidden1/rate", "train/rate_penalty")
PER_EPOCH = ("train/acc", "train/loss_epoch", "val/acc", "val/loss", "spikes/hidden1/val_rate",
             "spikes/hidden1/train_rate", "spikes/hidden1/train_silent", "spikes/hidden1/val_silent",
             "spikes/hidden1/train_saturated", "spikes/hidden1/val_saturated", "lr-AdamW/weights",
             "lr-AdamW/neuron_constants")
FROM_THE_START = tuple(f"neuron_params/hidden1/tau_mem_ms/{s}" for s in ("mean", "std", "min", "max"))
AFTER_FITTING = ("test/acc", "test/loss", "spikes/hidden1/test_rate")


def test_every_scalar_is_logged_at_the_interval_the_readme_states(tmp_path):
    """Every scalar tag a run writes is one the README's table lists, written as often as it says:
    two epochs of 8 steps, with learnable constants, the rate penalty and the test set."""
    overrides = [o for o in TINY if o != "test=false"]
    train(make_cfg(tmp_path, *overrides, "trainer.max_epochs=2", "model.neuron.learnable=[tau_mem_inv]",
                   "regularizer.rate_weight=0.1"))
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    tags = set(events.Tags()["scalars"])
    assert tags == {*PER_STEP, *PER_EPOCH, *FROM_THE_START, *AFTER_FITTING, "epoch"}  # epoch: Lightning's counter
    steps = {tag: [e.step for e in events.Scalars(tag)] for tag in tags}
    for tag in PER_STEP:
        assert steps[tag] == list(range(16)), tag
    for tag in PER_EPOCH:
        assert len(steps[tag]) == 2, (tag, steps[tag])
    for tag in FROM_THE_START:
        assert steps[tag] == [0, 8, 16], tag
    for tag in AFTER_FITTING:
        assert len(steps[tag]) == 1, tag


def test_hparams_tab_holds_the_values_runs_are_compared_by(tmp_path):
    train(make_cfg(tmp_path, *TINY, "trainer.max_epochs=1", "model.neuron.learnable=[tau_mem_inv]"))
    shown = hparams_shown(tmp_path)
    assert shown == {
        "model": "SpikingClassifier", "model/neuron/kind": "adex", "model/hidden": 8, "model/T": 4,
        "model/dt": 0.001, "model/encoder/kind": "constant", "model/decoder": "max",
        "model/neuron/integrator": "euler", "model/neuron/method": "super", "model/neuron/alpha": 100.0,
        "model/neuron/tau_mem_inv": 100.0, "model/neuron/tau_ada_inv": 2.0,
        "model/neuron/learnable": "['tau_mem_inv']", "dataset": "SyntheticDataModule", "dataset/batch_size": 32,
        "optimizer": "AdamW", "optimizer/lr": 0.002, "optimizer/weight_decay": 0.0001,
        "scheduler": "CosineAnnealingLR", "trainer/max_epochs": 1, "seed": 42, "regularizer/rate_weight": 0.0,
    }
    assert not any(key.startswith(("callbacks", "paths", "logger")) for key in shown)
    # The whole config is still recorded in the logger's hparams.yaml.
    recorded = yaml.safe_load((tmp_path / "tensorboard" / "hparams.yaml").read_text())
    assert recorded["callbacks/hparams/_target_"] == "snn.training.ConfigHyperparameters" and len(recorded) > 100


def test_hparams_columns_of_a_sequence_model_and_command_line_keys():
    config = {"model": {"_target_": "snn.models.SpikingSequenceClassifier", "hidden": [100], "neuron": {"kind": "lif"}},
              "dataset": {"_target_": "snn.data.StoreRecallDataModule", "T": 1000, "task": {"frames": 10}},
              "seed": 1}
    shown = comparison_hparams(config, COLUMNS, extra=["dataset.task.frames", "model.missing"])
    assert shown == {"model": "SpikingSequenceClassifier", "model/neuron/kind": "lif", "model/hidden": "[100]",
                     "dataset/T": 1000, "dataset": "StoreRecallDataModule", "seed": 1, "dataset/task/frames": 10}


@pytest.mark.parametrize(("overrides", "name"), [
    (["experiment=fashion_mnist_adex"], "fashion_mnist_adex"),
    (["experiment=store_recall_lif"], "store_recall_lif"),
    ([], "adex-mnist"),
    (["model=lif", "dataset=synthetic"], "lif-synthetic"),
])
def test_run_directories_carry_the_experiment_name(overrides, name):
    register_run_id()  # the run_id and run_name resolvers (train.py registers them)

    cfg = compose_config(*overrides, hydra=True)
    run_dir = Path(cfg.hydra.run.dir)
    assert run_dir.parts[:2] == ("outputs", name)
    date, time, run_id = run_dir.name.split("_")
    assert len(date) == 10 and len(time) == 8 and len(run_id) == 6
    sweep = Path(cfg.hydra.sweep.dir)
    assert sweep.parts[:2] == ("multirun", name)
