"""Fitting a run (``train=true``): resume or fine-tune, fit, test the best checkpoint, report."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig

from snn.errors import ConfigError, DataError, ScheduleError

from ..checkpointing.checkpoints import check_model_config, load_checkpoint
from ..checkpointing.safe_load import trusted_names
from .building import build, container
from .directory import claim_run_dir, print_run_outputs
from .log import report
from .preflight import check_config_sizes, check_monitored_metrics, check_trains_something
from .resume import check_epochs_left, fine_tune_from, resume_from
from .signals import exit_on_sigterm
from .threads import apply_threads


def fit(cfg: DictConfig) -> float:
    """Runs one training as configured by ``cfg`` and returns the best ``cfg.optimized_metric``.

    With ``cfg.ckpt_path`` it resumes that checkpoint (whose model config must match ``cfg.model``);
    with ``cfg.init_from`` it starts from that checkpoint's weights with a fresh optimizer and
    schedule. ``cfg.trust`` names the user's packages or classes a checkpoint may build.
    """
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir).resolve()
    if rank_zero_only.rank == 0:  # DDP's other processes share rank 0's directory
        # unresolved: a run directory given as a link is refused
        claim_run_dir(Path(cfg.paths.output_dir), Path(cfg.paths.data_dir).resolve())
    ckpt_path, init_from, trusted = cfg.get("ckpt_path"), cfg.get("init_from"), cfg.get("trust")
    try:
        trusted_names(trusted)
        if ckpt_path and init_from:
            raise ValueError(
                f"ckpt_path={ckpt_path} resumes a run (its optimizer, schedule and epoch count), init_from="
                f"{init_from} starts a new one from a checkpoint's weights: give one of them."
            )
        check_config_sizes(cfg, container(cfg.model))  # every size the config sets, before the first allocation
        module, datamodule, trainer = build(cfg)
        apply_threads(cfg.get("threads"), trainer)  # cores // processes per host (docs/guides/backends.md, Threads)
        check_trains_something(cfg.trainer)
        check_monitored_metrics(cfg, module)
        if ckpt_path:
            checkpoint = load_checkpoint(ckpt_path, trusted=trusted)
            check_model_config(checkpoint, module.hparams.net, ckpt_path)
            check_epochs_left(checkpoint, cfg.trainer, ckpt_path)
            del checkpoint
        if init_from:
            fine_tune_from(module, init_from)  # weights only: needs no trust
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error

    resume = resume_from(ckpt_path, output_dir)  # or the checkpoint a requeued SLURM job saved on SIGUSR1
    with exit_on_sigterm(trainer):
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        except (FileNotFoundError, DataError, ScheduleError) as error:  # the message says what to do
            raise ConfigError(str(error)) from error
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None else ""

    metric_name = cfg.optimized_metric
    if checkpoint is not None and checkpoint.monitor == metric_name and checkpoint.best_model_score is not None:
        value = float(checkpoint.best_model_score)
    elif metric_name in metrics:
        value = metrics[metric_name]
    else:
        raise ValueError(f"optimized_metric {metric_name!r} was not logged; logged metrics: {sorted(metrics)}.")

    if cfg.test:
        with exit_on_sigterm(trainer):
            trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None, weights_only=True)

    print_run_outputs(output_dir, trainer)
    if best_path:
        report(f"Best checkpoint ({metric_name} = {value:.4f}): {Path(best_path).resolve()}")
    return value
