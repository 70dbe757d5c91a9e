"""What happens when a run goes wrong: a non-finite loss stops it before the weights are spoiled, and
Ctrl-C leaves a checkpoint to resume from."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


def _last_good_checkpoint(trainer: L.Trainer) -> str:
    """The checkpoint file written most recently by any ModelCheckpoint, or ''."""
    paths = [Path(p) for c in trainer.checkpoint_callbacks for p in (c.last_model_path, c.best_model_path) if p]
    paths = [p for p in paths if p.is_file()]
    return str(max(paths, key=lambda p: p.stat().st_mtime).resolve()) if paths else ""


class NonFiniteLossGuard(L.Callback):
    """Stops training when the loss of a training step is NaN or inf, before its backward pass.

    Raises ``NonFiniteLossError`` naming the epoch and step and the last checkpoint written; as the
    optimizer never sees the bad step, the weights and every checkpoint stay as they were. In
    multi-process runs the ranks agree on the decision (one small all-reduce per step), so all stop.
    """

    def __init__(self):
        super().__init__()
        self.batch_idx = -1

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        self.batch_idx = batch_idx

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        last = _last_good_checkpoint(trainer)
        kept = f"The last good checkpoint is kept: {last}" if last else "No checkpoint had been written yet."
        value = loss.detach().float().cpu().item() if loss.numel() == 1 and bad else "non-finite on another process"
        raise NonFiniteLossError(
            f"Training loss became {value} at epoch {trainer.current_epoch}, global step {trainer.global_step} "
            f"(batch {self.batch_idx} of the epoch); training stopped "
            f"before the optimizer step. {kept}. Lower optimizer.lr, set trainer.gradient_clip_val, or check the data."
        )


class InterruptCheckpoint(L.Callback):
    """On Ctrl-C (KeyboardInterrupt, SIGINT), saves ``<dirpath>/interrupted.ckpt`` before Lightning exits.

    Resume with ``python train.py ckpt_path=<dirpath>/interrupted.ckpt`` (same config). A checkpoint
    taken mid-epoch resumes mid-epoch: it repeats the interrupted run closely but not bit for bit
    (the data order of the interrupted epoch starts over); end-of-epoch checkpoints resume exactly.
    """

    def __init__(self, dirpath: str | Path, filename: str = "interrupted.ckpt"):
        super().__init__()
        self.path = Path(dirpath) / filename

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, KeyboardInterrupt) or trainer.state.fn != "fit":
            return
        trainer.save_checkpoint(self.path)
        rank_zero_info(
            f"Interrupted at epoch {trainer.current_epoch}, step {trainer.global_step}: saved {self.path.resolve()}; "
            f"resume with: python train.py <same overrides> ckpt_path={self.path.resolve()}"
        )
