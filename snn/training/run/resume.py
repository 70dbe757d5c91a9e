"""Resuming a run (from a checkpoint the user names, or from the one a requeued SLURM job left) and
fine-tuning one's weights (``init_from=``: a fresh optimizer, schedule and epoch count)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info
from omegaconf import DictConfig

from snn.errors import CheckpointError

from ..checkpointing.checkpoints import config_differences
from ..checkpointing.safe_load import read_checkpoint
from ..module import SpikingClassifierModule


def requeued_slurm_job(output_dir: Path) -> bool:
    """A SLURM job requeued by Lightning's auto-requeue (on SIGUSR1) restarts in its own run directory
    and resumes from the ``hpc_ckpt_N.ckpt`` its previous attempt saved there."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    return restarts.isdigit() and int(restarts) > 0 and any(output_dir.glob("hpc_ckpt_*.ckpt"))


def resume_from(ckpt_path: str | None, output_dir: Path) -> str | None:
    """What ``trainer.fit(ckpt_path=...)`` resumes from: ``"hpc"`` (Lightning's latest
    ``hpc_ckpt_N.ckpt``) for a requeued SLURM job, else ``ckpt_path``."""
    if requeued_slurm_job(output_dir):
        rank_zero_info(f"Requeued SLURM job: continuing in {output_dir} from its latest hpc_ckpt_N.ckpt.")
        return "hpc"
    return ckpt_path


def check_epochs_left(checkpoint: dict, trainer_cfg: DictConfig, path: str) -> None:
    """Refuses to resume a checkpoint that already reached ``trainer.max_epochs`` or ``max_steps``
    (Lightning would return at once, without a single metric)."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs = fit_loop.get("epoch_progress", {}).get("current", {})
    finished = epochs.get("processed")  # an end-of-epoch checkpoint is written before the epoch counts as completed
    in_epoch = isinstance(finished, int) and epochs.get("started", 0) > finished
    if in_epoch and fit_loop.get("epoch_loop.batch_progress", {}).get("is_last_batch"):
        finished += 1  # stopped after the epoch's last batch: Lightning resumes with the next epoch
    max_epochs, max_steps = trainer_cfg.get("max_epochs"), trainer_cfg.get("max_steps")
    if isinstance(finished, int) and finished > 0 and max_epochs is not None and 0 <= max_epochs <= finished:
        raise ValueError(
            f"The checkpoint {path} already finished epoch {finished - 1} ({finished} epochs), and "
            f"trainer.max_epochs={max_epochs} leaves nothing to train: raise trainer.max_epochs (above {finished}); "
            "the learning-rate schedule is then stretched to the new length from where it stopped. To train its "
            f"weights with a fresh optimizer and schedule instead: init_from={path} (without ckpt_path)."
        )
    step = checkpoint.get("global_step")
    if isinstance(step, int) and max_steps is not None and 0 <= max_steps <= step:
        raise ValueError(
            f"The checkpoint {path} already took {step} optimizer steps, and trainer.max_steps={max_steps} "
            f"leaves nothing to train: raise trainer.max_steps (above {step})."
        )


def fine_tune_from(module: SpikingClassifierModule, path: str) -> None:
    """Loads the network weights of the checkpoint ``path`` into ``module`` (``init_from=``): the
    optimizer, the schedule and the epoch count start afresh. A ValueError when they do not fit,
    with the model config differences.

    Needs no trust (``trust=[...]``): the model is the one this run built from the user's own config,
    and only tensors are taken from the file, read as data (:func:`~.safe_load.read_checkpoint`:
    checksums, ``weights_only`` unpickling). Nothing the file's configs name is built; they are only
    compared with this run's model config when the weights do not fit. What builds a checkpoint's
    configs (evaluating with ``train=false``, ``load_classifier``, ``load_from_checkpoint``) needs the
    user's trust for classes outside snn and torch.optim."""
    checkpoint = read_checkpoint(path)
    weights = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(weights, Mapping):
        raise CheckpointError(f"init_from={path} is not a Lightning checkpoint (no state_dict).")
    state = {k.removeprefix("net."): v for k, v in weights.items() if isinstance(k, str) and k.startswith("net.")}
    try:
        module.net.load_state_dict(state)
    except RuntimeError as error:
        saved = (checkpoint.get("hyper_parameters") or {}).get("net") or {}
        differences = config_differences(saved, module.hparams.net) if isinstance(saved, Mapping) else []
        reason = " ".join(str(error).split())
        reason = reason if len(reason) < 300 else reason[:300] + "..."
        raise ValueError(
            f"init_from={path}: its weights do not fit this run's model ({reason}). "
            f"Model config differences (checkpoint -> this run): {'; '.join(differences[:8]) or 'none'}."
        ) from None
    rank_zero_info(f"Fine-tuning from the weights of {Path(path).resolve()} (after {checkpoint.get('epoch', 0) + 1} "
                   "epochs there); optimizer, learning-rate schedule and epochs start afresh.")
