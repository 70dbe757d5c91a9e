"""Where the monitoring callbacks write: the trainer's TensorBoard SummaryWriter, on rank 0."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger


def tensorboard(trainer: L.Trainer) -> Any | None:
    """The SummaryWriter of the trainer's TensorBoard logger (None without one, or off rank 0)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            return logger.experiment
    return None


def write_figure(writer: Any, tag: str, figure: Any, step: int) -> None:
    """Adds a matplotlib figure as an image. The views' figures are not pyplot's (see
    :mod:`~snn.training.monitoring.plots`), so there is nothing to close: they go when the last
    reference does."""
    writer.add_figure(tag, figure, step, close=False)
