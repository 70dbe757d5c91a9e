"""The Optuna sweep end to end (hydra/sweeper=snn_optuna with conf/hparams_search/fashion_mnist_optuna.yaml,
the README's command): tiny trials on synthetic data, pruned by the Lightning callback, recorded in
one sweep directory, resumed from the study's storage, and replayed from the sampler's seed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SEARCHED = {"model.neuron.alpha", "optimizer.lr", "model.T", "model.hidden",
            "model.neuron.tau_mem_inv", "model.neuron.tau_syn_inv"}
STATE = optuna.trial.TrialState


def sweep(tmp_path: Path, storage: str, *overrides: str) -> Path:
    """Runs the search as the README does (from ``tmp_path``) and returns its one sweep directory."""
    before = set(tmp_path.glob("multirun/*/*"))
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=fashion_mnist_optuna",
        "~experiment", "dataset=synthetic", "dataset.num_train=96", "dataset.val_size=32", "model=lif",
        "model.conv=null", "trainer=cpu", "trainer.max_epochs=2", "test=false", "callbacks.spike_raster=null",
        "callbacks.progress_bar=null", f"paths.data_dir={tmp_path / 'data'}", f"hydra.sweeper.storage={storage}",
        *overrides,
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "alembic" not in done.stdout + done.stderr  # Optuna's storage migrations: snn.training.quiet
    (new,) = set(tmp_path.glob("multirun/*/*")) - before  # one directory per sweep
    return new


def session_hparams(log_dir: Path) -> dict:
    """The hyperparameters TensorBoard's HPARAMS tab shows for the run logged in ``log_dir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    events = EventAccumulator(str(log_dir))
    events.Reload()
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    info = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    return {k: v.number_value for k, v in info.hparams.items()}


@pytest.mark.slow
def test_pruned_resumed_and_replayed_sweeps(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    # Every value is below 1.01: the pruner stops each trial after its first epoch of two.
    first = sweep(tmp_path, storage, "hydra.sweeper.n_trials=2",
                  "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
                  "~hydra.sweeper.pruner.n_startup_trials", "hydra.sweeper.pruner.n_warmup_steps=0",
                  "+hydra.sweeper.pruner.lower=1.01")
    study = optuna.load_study(study_name="fashion_mnist_optuna", storage=storage)
    pruned = study.trials
    assert [t.state for t in pruned] == [STATE.PRUNED, STATE.PRUNED]
    assert all(list(t.intermediate_values) == [0] and set(t.params) == SEARCHED for t in pruned)
    assert pruned[0].params != pruned[1].params

    assert (first / "multirun.yaml").is_file()
    record = yaml.safe_load((first / "optimization_results.yaml").read_text())
    assert [(t["number"], t["state"]) for t in record["trials"]] == [(0, "PRUNED"), (1, "PRUNED")]
    assert "best_value" not in record  # no trial completed
    for trial in pruned:
        run = first / str(trial.number)  # job number = trial number
        assert record["trials"][trial.number]["run_dir"] == str(run)
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["epoch_000.ckpt", "last.ckpt"]
        shown = session_hparams(run / "tensorboard")  # every trial in HPARAMS with its sampled values
        assert shown["model/neuron/alpha"] == pytest.approx(trial.params["model.neuron.alpha"])
        assert shown["optimizer/lr"] == pytest.approx(trial.params["optimizer.lr"])

    # Resumed from the storage without a pruner: trial 2 trains both epochs and completes.
    second = sweep(tmp_path, storage, "hydra.sweeper.n_trials=1", "hydra.sweeper.pruner=null")
    study = optuna.load_study(study_name="fashion_mnist_optuna", storage=storage)
    resumed = study.trials[2]
    assert resumed.state == STATE.COMPLETE and list(resumed.intermediate_values) == [0, 1]
    assert resumed.params not in (pruned[0].params, pruned[1].params)  # reseeded: not the first session's again
    record = yaml.safe_load((second / "optimization_results.yaml").read_text())
    assert record["best_trial"] == 2 and record["best_value"] == pytest.approx(resumed.value)
    assert record["best_params"] == resumed.params and (second / "2" / ".hydra").is_dir()
    assert 0.0 < resumed.value <= 1.0 and resumed.value == pytest.approx(max(resumed.intermediate_values.values()))

    # The seed replays: a new study proposes the first study's first trial.
    replay = f"sqlite:///{tmp_path / 'replay.db'}"
    sweep(tmp_path, replay, "hydra.sweeper.n_trials=1", "hydra.sweeper.pruner=null")
    (again,) = optuna.load_study(study_name="fashion_mnist_optuna", storage=replay).trials
    assert again.params == pruned[0].params


@pytest.mark.slow
def test_failed_trials_are_recorded_and_too_many_stop_the_sweep(tmp_path):
    """A trial refused by its config (train.py exits with the message) is FAIL; the sweep goes on
    while failures stay within max_failure_rate of n_trials, and stops with a message past it."""
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    command = [
        sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=fashion_mnist_optuna", "~experiment",
        "dataset=synthetic", "model.conv=null", "trainer=cpu", f"paths.data_dir={tmp_path / 'data'}",
        "hydra.sweeper.params={model.T: 'choice(-1, -2)'}", "hydra.sweeper.n_trials=2",
        "hydra.sweeper.max_failure_rate=0.5", f"hydra.sweeper.storage={storage}",
    ]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 1
    assert "Trial(s) [0] ended the process: Config error: Invalid model config: The number of time" in done.stdout
    assert done.stderr.splitlines()[-1].startswith(  # one message, no traceback
        "Sweep stopped: 2 of 2 trials failed, more than max_failure_rate=0.5 of n_trials=2 allows")
    assert "Traceback" not in done.stderr
    trials = optuna.load_study(study_name="fashion_mnist_optuna", storage=storage).trials
    assert [t.state for t in trials] == [STATE.FAIL, STATE.FAIL]  # the first failure did not stop it
    (sweep_dir,) = tmp_path.glob("multirun/*/*")
    record = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert [t["state"] for t in record["trials"]] == ["FAIL", "FAIL"]
