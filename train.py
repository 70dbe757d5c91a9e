"""Train a spiking classifier: ``python train.py model=adex dataset=mnist [key=value ...]``.

Fits, tests the best checkpoint and returns the validation metric ``optimized_metric`` (for
sweepers: ``python train.py -m model=adex,lif seed=1,2``). Config: ``conf/config.yaml``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from snn.training import SpikingClassifierModule, build_from_config


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
    )
    datamodule = build_from_config(cfg.dataset, "dataset")
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return module, datamodule, trainer


def train(cfg: DictConfig) -> float:
    """Runs one training as configured by ``cfg`` and returns the best ``cfg.optimized_metric``."""
    L.seed_everything(cfg.seed, workers=True)
    module, datamodule, trainer = build(cfg)

    trainer.fit(module, datamodule=datamodule)
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
        trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None)

    output_dir = Path(cfg.paths.output_dir).resolve()
    print(f"Run directory: {output_dir}  (config in .hydra/config.yaml when started from the command line)")
    for logger in trainer.loggers:
        if getattr(logger, "log_dir", None) is None:  # fast_dev_run's DummyLogger writes nothing
            continue
        hint = f"  (open with: tensorboard --logdir {output_dir})" if isinstance(logger, TensorBoardLogger) else ""
        print(f"{type(logger).__name__} logs: {Path(logger.log_dir).resolve()}{hint}")
    if best_path:
        print(f"Best checkpoint ({metric_name} = {value:.4f}): {Path(best_path).resolve()}")
    return value


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    return train(cfg)


if __name__ == "__main__":
    main()
