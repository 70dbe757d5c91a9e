"""The Optuna sweep (conf/hparams_search/fashion_mnist_optuna.yaml): two tiny trials on synthetic
data, their results in the study's SQLite file, optimization_results.yaml and TensorBoard's HPARAMS."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")
pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
SEARCHED = {"model.neuron.alpha", "optimizer.lr", "model.T", "model.hidden",
            "model.neuron.tau_mem_inv", "model.neuron.tau_syn_inv"}


def session_hparams(log_dir: Path) -> dict:
    """The hyperparameters TensorBoard's HPARAMS tab shows for the run logged in ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(log_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.number_value for k, v in info.hparams.items()}


def test_every_searched_key_exists_in_the_composed_config():
    """A misspelt key would make every trial fail (or silently add an unused key with ``+``)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hparams_search=fashion_mnist_optuna"],
                      return_hydra_config=True)
    sweeper = cfg.hydra.sweeper
    assert set(sweeper.params) == SEARCHED
    assert all(OmegaConf.select(cfg, key) is not None for key in SEARCHED)
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "val/acc"
    assert cfg.dataset._target_ == "snn.data.FashionMNISTDataModule"  # the experiment's data


@pytest.mark.slow
def test_two_trial_optuna_sweep_on_synthetic_data(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    command = [
        sys.executable, "train.py", "-m", "hparams_search=fashion_mnist_optuna",
        "~experiment", "dataset=synthetic", "dataset.num_train=192", "dataset.val_size=64",
        "model=lif", "model.conv=null", "trainer=cpu", "trainer.max_epochs=1", "test=false",
        "callbacks.spike_raster=null", "callbacks.progress_bar=null",
        "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage={storage}",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "alembic" not in done.stdout + done.stderr  # Optuna's storage migrations: snn.training.quiet

    study = optuna.load_study(study_name="fashion_mnist_optuna", storage=storage)
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(trials) == 2 and set(trials[0].params) == SEARCHED
    assert trials[0].params != trials[1].params

    results = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert set(results["best_params"]) == SEARCHED
    assert results["best_value"] == pytest.approx(max(t.value for t in trials))

    for trial in trials:  # each trial's run directory logs its sampled values for HPARAMS
        shown = session_hparams(tmp_path / "sweep" / str(trial.number) / "tensorboard")
        assert shown["model/neuron/alpha"] == pytest.approx(trial.params["model.neuron.alpha"])
        assert shown["optimizer/lr"] == pytest.approx(trial.params["optimizer.lr"])
