"""Train a spiking classifier: ``python train.py model=adex dataset=mnist [key=value ...]``.

Fits, tests the best checkpoint and returns the validation metric ``optimized_metric`` (for
sweepers: ``python train.py -m model=adex,lif seed=1,2``). Config: ``conf/config.yaml``.
Resume: ``ckpt_path=<run>/checkpoints/last.ckpt``; fine-tune: ``init_from=<ckpt>``; evaluate a checkpoint:
``train=false ckpt_path=...``; let checkpoints build your own classes: ``trust=[mypackage]``.
Hydra glue only: run directories, pre-flight checks, resuming and signals live in ``snn/training``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, OmegaConf

from snn.data import DataError
from snn.training import (
    CheckpointWriteError,
    NonFiniteCheckpointError,
    NonFiniteError,
    SafeCheckpointIO,
    SpikingClassifierModule,
    build_from_config,
    check_model_config,
    load_checkpoint,
    quiet_third_party,
)
from snn.training.config_errors import ConfigError, explain_composition_error
from snn.training.evaluation import evaluate_checkpoint
from snn.training.module import ScheduleError
from snn.training.preflight import check_monitored_metrics, check_trains_something, sync_batchnorm_works
from snn.training.resume import check_epochs_left, fine_tune_from, resume_from
from snn.training.run_directory import (
    claim_fixed_run_dir,
    claim_run_dir,
    discard_refused_run,
    print_run_outputs,
    register_run_id,
)
from snn.training.run_log import exit_with, log_to_run_log, report
from snn.training.safe_load import trusted_names
from snn.training.signals import exit_on_sigterm
from snn.training.threads import apply_threads

CONF_DIR = Path(__file__).parent / "conf"
register_run_id()
quiet_third_party()  # before Hydra starts: its sweeper opens an Optuna study first
# Whether Hydra's run directory is the default one, unique to this process (no hydra.run.dir given).
_DEFAULT_RUN_DIR = False


def _container(node) -> dict | None:
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def build(cfg: DictConfig) -> tuple[SpikingClassifierModule, L.LightningDataModule, L.Trainer]:
    """The LightningModule, DataModule and Trainer described by ``cfg`` (nothing is read or run).

    The model comes first: its checks (T, neuron kind and parameters, surrogate, decoder...) fail
    before anything else is set up.
    """
    module = SpikingClassifierModule(
        net=_container(cfg.model),
        optimizer=_container(cfg.optimizer),
        scheduler=_container(cfg.scheduler),
        scheduler_interval=cfg.scheduler_interval,
        **cfg.regularizer,
        config=_container(cfg),
        neuron_params=_container(cfg.get("neuron_params")),
    )
    datamodule = build_from_config(cfg.dataset, "dataset")
    return module, datamodule, build_trainer(cfg)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The Trainer of ``cfg``, with its loggers and callbacks."""
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    overrides = {}
    if cfg.trainer.get("sync_batchnorm") and not sync_batchnorm_works(cfg.trainer.get("accelerator", "auto")):
        overrides["sync_batchnorm"] = False
        rank_zero_info("trainer.sync_batchnorm is off: SyncBatchNorm runs on GPUs only, so here each process "
                       "normalises with its own batch statistics.")
    # Checkpoints are written atomically and read as data only (weights_only), whatever the config says.
    plugins = [*(instantiate(cfg.trainer.get("plugins")) or []), SafeCheckpointIO()]
    return instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins, **overrides)


def command_line_overrides() -> list[str]:
    """The overrides of this Hydra run's command line ([] when train() is called without Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def train(cfg: DictConfig, overrides: list[str] | None = None) -> float:
    """Runs one training as configured by ``cfg`` and returns the best ``cfg.optimized_metric``.

    With ``cfg.ckpt_path`` it resumes that checkpoint (whose model config must match ``cfg.model``);
    with ``cfg.init_from`` it starts from that checkpoint's weights with a fresh optimizer and
    schedule; with ``cfg.train`` false it only tests the checkpoint (its own model and data set, unless
    ``overrides``, the command line's, read from Hydra when None, choose a data set) and returns its
    test accuracy. ``cfg.trust`` names the user's packages or classes a checkpoint may build.
    """
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir).resolve()
    if rank_zero_only.rank == 0:  # DDP's other processes share rank 0's directory
        claim_run_dir(output_dir, Path(cfg.paths.data_dir).resolve())
    ckpt_path, fit = cfg.get("ckpt_path"), cfg.get("train", True)
    init_from, trusted = cfg.get("init_from"), cfg.get("trust")
    try:
        trusted_names(trusted)
        if not fit:
            if not ckpt_path:
                raise ValueError("train=false evaluates a checkpoint: add ckpt_path=<path to a .ckpt file>.")
            if init_from:
                raise ValueError("init_from= starts a training from a checkpoint's weights; with train=false "
                                 "give the checkpoint to evaluate as ckpt_path= only.")
            trainer = build_trainer(cfg)
            apply_threads(cfg.get("threads"), trainer)  # cores // processes on this host (README, "Threads")
        else:
            if ckpt_path and init_from:
                raise ValueError(
                    f"ckpt_path={ckpt_path} resumes a run (its optimizer, schedule and epoch count), init_from="
                    f"{init_from} starts a new one from a checkpoint's weights: give one of them."
                )
            module, datamodule, trainer = build(cfg)
            apply_threads(cfg.get("threads"), trainer)
            check_trains_something(cfg.trainer)
            check_monitored_metrics(cfg, module)
            if ckpt_path:
                checkpoint = load_checkpoint(ckpt_path, trusted=trusted)
                check_model_config(checkpoint, module.hparams.net, ckpt_path)
                check_epochs_left(checkpoint, cfg.trainer, ckpt_path)
                del checkpoint
            if init_from:
                fine_tune_from(module, init_from, trusted)
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error
    if not fit:
        # cfg.model unresolved: the model is the checkpoint's, and the default model's
        # ${dataset.input_shape} need not exist in a user's data set config.
        value = evaluate_checkpoint(ckpt_path, _container(cfg.dataset), cfg.model,
                                    command_line_overrides() if overrides is None else overrides, trainer, trusted)
        report(f"Run directory: {output_dir}")
        return value

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


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    log_to_run_log()  # Lightning's lines too into <run>/train.log
    try:
        return train(cfg)
    except ConfigError as error:
        discard_refused_run(cfg, _DEFAULT_RUN_DIR)  # a run refused before training leaves no directory
        exit_with(f"Config error: {error}")
    except NonFiniteError as error:  # the message names the step and the last good checkpoint
        exit_with(f"Training stopped: {error}")
    except (CheckpointWriteError, NonFiniteCheckpointError) as error:  # one sentence: file and cause
        exit_with(f"Checkpoint not written: {error}")


if __name__ == "__main__":
    # Check plain single runs before Hydra starts (sweeps and --config-path runs are Hydra's to check).
    args = sys.argv[1:]
    _DEFAULT_RUN_DIR = not any(a.startswith(("hydra.run.dir=", "hydra/", "-")) for a in args)
    if not any(a.startswith("-") for a in args):
        problem = explain_composition_error(CONF_DIR, args)
        if problem:
            sys.exit(f"Config error: {problem}")
        try:
            claim_fixed_run_dir(CONF_DIR, args)
        except ConfigError as error:
            sys.exit(f"Config error: {error}")
    main()
