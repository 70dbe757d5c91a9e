"""How often per-step metrics reach the loggers: every ``trainer.log_every_n_steps`` steps, and more
often when epochs are short, so that every run draws a training-loss curve.

Lightning writes a step's metrics (``train/loss``, ``spikes/<layer>/rate``) when the count of
optimizer steps is a multiple of ``log_every_n_steps``. With a fixed interval of 20, a run of fewer
than 20 steps per epoch logged at most a point or two per epoch (none in a one-epoch run of 19 steps),
and Lightning warned about it. ``LoggingInterval`` shortens the interval to
``max(1, steps per epoch // points_per_epoch)`` when that is shorter.
"""

from __future__ import annotations

import math

import lightning as L


def logging_interval(configured: int, batches: float, accumulate: int = 1, points_per_epoch: int = 10) -> int:
    """The logging interval in optimizer steps: ``configured``, or less when an epoch of ``batches``
    batches (``accumulate`` per optimizer step) has fewer than ``points_per_epoch * configured``
    steps: ``max(1, steps // points_per_epoch)``. 0 (logging off) and epochs of unknown length (an
    iterable data set) keep ``configured``."""
    if configured <= 0 or not math.isfinite(batches):
        return configured
    steps = math.ceil(batches / max(1, accumulate))
    return max(1, min(configured, steps // points_per_epoch))


class LoggingInterval(L.Callback):
    """Adapts ``trainer.log_every_n_steps`` to the length of a training epoch
    (:func:`~snn.training.monitoring.logging_interval.logging_interval`):
    at least ``points_per_epoch`` per-step points per epoch, at most one every ``log_every_n_steps``
    steps (the Trainer's argument). Restores the Trainer's value when fitting ends."""

    def __init__(self, points_per_epoch: int = 10):
        super().__init__()
        if isinstance(points_per_epoch, bool) or not isinstance(points_per_epoch, int) or points_per_epoch < 1:
            raise ValueError(f"LoggingInterval's points_per_epoch must be a positive int, got {points_per_epoch!r}.")
        self.points_per_epoch = points_per_epoch
        self.configured: int | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.configured = trainer.log_every_n_steps
        if self.configured > 0:
            # Until the epoch's length is known (on_train_start): Lightning compares the interval with the
            # number of training batches when it sets up the data, and warns when it is longer.
            trainer.log_every_n_steps = 1

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        trainer.log_every_n_steps = logging_interval(self.configured, trainer.num_training_batches,
                                                     trainer.accumulate_grad_batches, self.points_per_epoch)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.configured is not None:
            trainer.log_every_n_steps = self.configured
