"""Evaluating a checkpoint (``train.py train=false ckpt_path=...``): its model, rebuilt from the
config it carries, tested on the configured data."""

from __future__ import annotations

from pathlib import Path

import lightning as L

from .checkpoints import load_module
from .config_errors import ConfigError


def evaluate_checkpoint(ckpt_path: str, datamodule: L.LightningDataModule, trainer: L.Trainer) -> float:
    """Tests the checkpoint's model (rebuilt from the config the checkpoint carries) on ``datamodule``.

    ``load_module`` checks the file (integrity, weights_only, only our classes in its configs) before
    the module's ``__init__`` instantiates anything from it."""
    try:
        module = load_module(ckpt_path, map_location="cpu")
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error
    net = module.net
    if tuple(net.input_shape) != tuple(datamodule.input_shape) or net.num_classes != datamodule.num_classes:
        raise ConfigError(
            f"The checkpoint {ckpt_path} takes inputs {list(net.input_shape)} with {net.num_classes} classes, the "
            f"dataset config gives {list(datamodule.input_shape)} with {datamodule.num_classes}; pick its dataset "
            "(the checkpoint's config: torch.load(path)['hyper_parameters']['config']['dataset'])."
        )
    print(f"Evaluating {Path(ckpt_path).resolve()} (model from the checkpoint's config) on {datamodule.name}")
    results = trainer.test(module, datamodule=datamodule)
    return float(results[0]["test/acc"])
