"""The run's record in words: one line per epoch with its logged metrics, and one with the test
results, into the run's log (``<run dir>/train.log`` and the console, through Python's logging), so
that the log alone says how a run went after its terminal is closed.

::

    Epoch 3/10 (step 1266): train/acc 0.8712, train/loss_epoch 0.4123; val/acc 0.889, val/loss 0.3912,
    spikes/hidden1/val_rate 0.04123; lr 0.00181
    Test (epoch_007.ckpt): test/acc 0.8851, test/loss 0.3987, spikes/hidden1/test_rate 0.04071

The numbers are those the loggers receive (TensorBoard's, rounded to 4 significant digits): the
LightningModule's epoch metrics, read from ``trainer.callback_metrics`` after the epoch (its
validation included), and the learning rates at the start of the epoch, as LearningRateMonitor
logs them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

log = logging.getLogger(__name__)


def epoch_metric_names(pl_module: L.LightningModule, stage: str, available: Sequence[str]) -> list[str]:
    """The metrics ``pl_module`` logs once per ``stage`` epoch: its ``epoch_metrics(stage)`` when it
    names them (``SpikingClassifierModule``), else those of ``available`` under ``<stage>/``."""
    named = getattr(pl_module, "epoch_metrics", None)
    names = named(stage) if callable(named) else [n for n in available if n.startswith(f"{stage}/")]
    return [n for n in names if n in available]


def format_metrics(metrics: Mapping[str, float]) -> str:
    """``"val/acc 0.889, val/loss 0.3912"``: 4 significant digits."""
    return ", ".join(f"{name} {value:.4g}" for name, value in metrics.items())


def learning_rates(trainer: L.Trainer) -> str:
    """``"lr 0.002"``, or ``"lr weights 0.002, neuron_constants 0.01"`` for named parameter groups."""
    groups = [g for optimizer in trainer.optimizers for g in optimizer.param_groups]
    if not groups:
        return ""
    if len(groups) == 1:
        return f"lr {float(groups[0]['lr']):.4g}"
    return "lr " + ", ".join(f"{g.get('name', k)} {float(g['lr']):.4g}" for k, g in enumerate(groups))


class EpochLog(L.Callback):
    """Logs (rank 0, INFO, logger ``snn.training.monitoring.epoch_log``) after every training epoch
    ``Epoch <n>/<max> (step <global step>): <train metrics>; <val metrics>; lr <rates>`` -- the
    validation part when a validation ran in that epoch -- and after testing ``Test (<checkpoint>):
    <test metrics>``."""

    def __init__(self) -> None:
        super().__init__()
        self.rates = ""
        self.validated_epoch: int | None = None

    def _metrics(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> dict[str, float]:
        available = trainer.callback_metrics
        return {name: float(available[name]) for name in epoch_metric_names(pl_module, stage, list(available))}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.rates = learning_rates(trainer)  # what LearningRateMonitor logs for this epoch

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.validated_epoch = trainer.current_epoch

    @rank_zero_only
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        parts = [format_metrics(self._metrics(trainer, pl_module, "train"))]
        if self.validated_epoch == trainer.current_epoch:
            parts.append(format_metrics(self._metrics(trainer, pl_module, "val")))
        parts.append(self.rates)
        of = f"/{trainer.max_epochs}" if trainer.max_epochs not in (None, -1) else ""
        log.info(f"Epoch {trainer.current_epoch + 1}{of} (step {trainer.global_step}): "
                 + "; ".join(p for p in parts if p))

    @rank_zero_only
    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checkpoint: Any = trainer.ckpt_path
        source = f" ({Path(checkpoint).name})" if checkpoint else " (the weights as trained)"
        log.info(f"Test{source}: " + format_metrics(self._metrics(trainer, pl_module, "test")))
