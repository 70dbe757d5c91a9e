"""Stops a hopeless trial early: after each validation the trial's ``optimized_metric`` goes to its
Optuna study, whose pruner compares it with the other trials' at the same epoch."""

from __future__ import annotations

import math

import lightning as L
from lightning.pytorch.utilities import rank_zero_info

from .studies import PRUNED_AT, open_trial


class OptunaPruning(L.Callback):
    """Reports ``monitor`` after every validation as trial ``trial``'s intermediate value at its
    epoch, and stops the fit (``trainer.should_stop``, so the run ends as a normal run: checkpoints,
    test, HPARAMS) when the study's pruner says so; the sweeper then tells the study the trial was
    pruned (user attribute ``pruned_at_epoch``).

    The search file adds it with Hydra's values of the running trial (``conf/hparams_search/``)::

        callbacks:
          optuna_pruning:
            _target_: snn.sweep.OptunaPruning
            monitor: ${optimized_metric}
            trial: ${hydra:job.num}             # the sweeper numbers jobs by trial
            study_name: ${hydra:sweeper.study_name}
            storage: ${hydra:sweeper.storage}
            pruner: ${hydra:sweeper.pruner}

    Rank 0 reports and asks; under DDP every process stops together (the answer is broadcast). A
    monitored value that is NaN or missing is not reported (the pruner decides from the others);
    with several validations per epoch the first of each epoch is reported.
    """

    def __init__(self, monitor: str, trial: int | None, study_name: str | None = None, storage: str | None = None,
                 pruner=None):
        super().__init__()
        if trial is None:  # ${hydra:job.num} outside a multirun
            raise ValueError(
                "this run is not a trial of an Optuna sweep, which this callback reports to: run the search with "
                "-m (snn-train -m hparams_search=...), or drop the callback with callbacks.optuna_pruning=null."
            )
        self.monitor = monitor
        self.trial_number = int(trial)
        self.study_name = study_name
        self.storage = storage
        self.pruner = pruner
        self._trial = None
        self._reported_epoch = -1  # one report per epoch: Optuna keeps the first value of a step

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._trial = open_trial(self.trial_number, self.study_name, self.storage, self.pruner)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch == self._reported_epoch:
            return
        self._reported_epoch = trainer.current_epoch
        prune = False
        if trainer.is_global_zero and self._trial is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is not None and math.isfinite(float(value)):
                self._trial.report(float(value), step=trainer.current_epoch)
                prune = self._trial.should_prune()
        prune = trainer.strategy.broadcast(prune)
        if prune:
            trainer.should_stop = True
            if trainer.is_global_zero:
                self._trial.set_user_attr(PRUNED_AT, trainer.current_epoch)
                rank_zero_info(f"Optuna trial {self.trial_number}: pruned after epoch {trainer.current_epoch} "
                               f"({self.monitor} = {float(trainer.callback_metrics[self.monitor]):.4f}).")
