"""Evaluating a checkpoint (``snn-train train=false ckpt_path=...``, :func:`evaluate`): the checkpoint's own model and
data set, unless the command line says otherwise, tested.

A checkpoint written by train.py carries the whole run config (``hyper_parameters["config"]``): the
data set it was trained on comes from there, checked like the model config (only our DataModules,
or classes the user trusts; no interpolations). The command line still decides: ``dataset=...`` or
``experiment=...`` picks a data set (its shapes are then checked against the model), and
``dataset.<key>=`` / ``model.<key>=`` change single values of the checkpoint's configs (a batch
size, a data folder, a backend).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from snn.errors import CheckpointError, ConfigError, DataError

from ..checkpointing.checkpoints import load_module
from ..checkpointing.instantiation import build_from_config
from ..checkpointing.safe_load import (
    ALLOWED_TARGETS,
    _public_classes,
    check_config_targets,
    load_checkpoint,
    trusted_names,
)
from .building import build_trainer, container
from .directory import claim_run_dir
from .log import report
from .signals import exit_on_sigterm
from .threads import apply_threads

# Config groups whose choice on the command line replaces the checkpoint's data set.
DATASET_GROUPS = ("dataset", "experiment")
# DataModules that moved: checkpoints written before name them by their old path.
MOVED_DATAMODULES = ("ClassificationDataModule", "MNISTDataModule", "FashionMNISTDataModule", "CIFAR10DataModule",
                     "SyntheticDataModule")


def allowed_datamodules() -> frozenset[str]:
    """The DataModule classes a checkpoint's data set config may build: ``snn.data``'s public ones."""
    import snn.data

    return _public_classes(snn.data, L.LightningDataModule)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def dataset_from_command_line(overrides: Sequence[str]) -> bool:
    """Whether ``overrides`` choose a data set group (``dataset=``, ``experiment=``)."""
    return any(_key(o) in DATASET_GROUPS for o in overrides if "=" in o)


def _set(node: dict[str, Any], path: str, value: Any, what: str, source: str) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        if not isinstance(node.get(key), dict):
            break
        node = node[key]
    else:
        if keys[-1] in node:
            node[keys[-1]] = copy.deepcopy(value)
            return
    raise ValueError(f"{what}.{path} is not a key of the checkpoint's {what} config ({source}); its keys: "
                     f"{', '.join(map(str, node))}.")


def apply_key_overrides(config: Mapping[str, Any], group: str, composed: Mapping[str, Any],
                        overrides: Sequence[str], source: str) -> dict[str, Any]:
    """A copy of ``config`` with every ``group.<key>=`` of ``overrides`` set to its (resolved) value in
    ``composed`` (the command line's ``group`` config)."""
    out = copy.deepcopy(dict(config))
    for override in overrides:
        key = _key(override)
        if "=" in override and key.startswith(f"{group}.") and not override.startswith("~"):
            path = key.removeprefix(f"{group}.")
            value: Any = composed
            for part in path.split("."):
                value = value[part]
            if OmegaConf.is_config(value):  # ``composed`` is resolved only where an override reads it
                value = OmegaConf.to_container(value, resolve=True)
            _set(out, path, value, group, source)
    return out


def checkpoint_dataset(checkpoint: Mapping[str, Any], path: str | Path,
                       trusted: Iterable[str] | str | None = None) -> dict[str, Any] | None:
    """The data set config the checkpoint was trained with (None when it carries none), checked: only
    our DataModules (or ``trusted`` classes) and no interpolations."""
    config = checkpoint.get("hyper_parameters", {}).get("config")
    dataset = config.get("dataset") if isinstance(config, Mapping) else None
    if not isinstance(dataset, Mapping):
        return None
    if "_target_" not in dataset:
        raise CheckpointError(f"{path} records a data set config without a _target_ (hyper_parameters['config']"
                              "['dataset']); choose the data set on the command line: dataset=<name>.")
    old, name = str(dataset["_target_"]).rpartition(".")[::2]
    if old == "snn.training" and name in MOVED_DATAMODULES:  # the image DataModules live in snn.data now
        dataset = {**dataset, "_target_": f"snn.data.{name}"}
    check_config_targets(dataset, "hyper_parameters['config']['dataset']", allowed_datamodules(), path,
                         "snn data modules", trusted_names(trusted))
    return dict(dataset)


def evaluation_configs(checkpoint: Mapping[str, Any], path: str | Path, dataset: Mapping[str, Any],
                       model: Mapping[str, Any], overrides: Sequence[str],
                       trusted: Iterable[str] | str | None = None) -> tuple[dict[str, Any], dict[str, Any], str]:
    """``(data set config, model config, where the data set came from)`` for evaluating ``checkpoint``.

    The model is always the checkpoint's (``hyper_parameters["net"]``), with the ``model.<key>=`` of
    ``overrides`` applied; the data set is the checkpoint's with the ``dataset.<key>=`` applied, or
    ``dataset`` (the composed config) when ``overrides`` choose one (``dataset=``, ``experiment=``)
    or the checkpoint carries none. ``dataset`` and ``model`` are the composed, resolved configs."""
    net = apply_key_overrides(checkpoint["hyper_parameters"]["net"], "model", model, overrides,
                              f"{path}: hyper_parameters['net']")
    check_config_targets(net, "hyper_parameters['net']", ALLOWED_TARGETS["net"], path, "snn.models classes",
                         trusted_names(trusted))
    saved = None if dataset_from_command_line(overrides) else checkpoint_dataset(checkpoint, path, trusted)
    if saved is None:
        return dict(dataset), net, "the command line"
    saved = apply_key_overrides(saved, "dataset", dataset, overrides, f"{path}: hyper_parameters['config']['dataset']")
    return saved, net, "the checkpoint's config"



def evaluate_checkpoint(ckpt_path: str, dataset: Mapping[str, Any], model: Mapping[str, Any], overrides: Sequence[str],
                        trainer: L.Trainer, trusted: Iterable[str] | str | None = None) -> float:
    """Tests the checkpoint ``ckpt_path`` (its model and, unless ``overrides`` choose one, its data
    set: :func:`evaluation_configs`; ``dataset`` is the composed, resolved config, ``model`` the composed
    one, resolved only where a ``model.<key>=`` override reads it) and returns its test accuracy.

    ``load_checkpoint`` checks the file (integrity, weights_only, only our classes and ``trusted``
    ones in its configs) before anything is built from it."""
    try:
        checkpoint = load_checkpoint(ckpt_path, trusted=trusted)  # read and verified once, used twice
        dataset, net, source = evaluation_configs(checkpoint, ckpt_path, dataset, model, overrides, trusted)
        datamodule = build_from_config(dataset, "dataset")
        module = load_module(ckpt_path, map_location="cpu", trusted=trusted, checkpoint=checkpoint, net=net)
        del checkpoint
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error
    net = module.net
    # A user's own DataModule need not declare input_shape / num_classes (the checkpoint's model config
    # carries the shapes); the check runs where it does.
    shape, classes = getattr(datamodule, "input_shape", None), getattr(datamodule, "num_classes", None)
    if (shape is not None and tuple(net.input_shape) != tuple(shape)) or (
            classes is not None and net.num_classes != classes):
        raise ConfigError(
            f"The checkpoint {ckpt_path} takes inputs {list(net.input_shape)} with {net.num_classes} classes, the "
            f"dataset config gives {shape if shape is None else list(shape)} with {classes}; leave dataset= "
            "out to evaluate on the checkpoint's own data set, or pick one of the same shapes."
        )
    name = getattr(datamodule, "name", type(datamodule).__name__)
    report(f"Evaluating {Path(ckpt_path).resolve()}: its model and the data set from {source} ({name})")
    with exit_on_sigterm(trainer):
        try:
            results = trainer.test(module, datamodule=datamodule)
        except (FileNotFoundError, DataError) as error:
            raise ConfigError(str(error)) from error
    return float(results[0]["test/acc"])


def command_line_overrides() -> list[str]:
    """The overrides of this Hydra run's command line ([] when called without Hydra)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def evaluate(cfg: DictConfig, overrides: Sequence[str] | None = None) -> float:
    """Tests the checkpoint ``cfg.ckpt_path`` (``train=false``) and returns its test accuracy.

    Its own model and data set, unless ``overrides`` (the command line's, read from Hydra when None)
    choose a data set or change single keys (:func:`evaluation_configs`). ``cfg.trust`` names the
    user's packages or classes the checkpoint may build.
    """
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir).resolve()
    if rank_zero_only.rank == 0:  # DDP's other processes share rank 0's directory
        # unresolved: a run directory given as a link is refused
        claim_run_dir(Path(cfg.paths.output_dir), Path(cfg.paths.data_dir).resolve())
    ckpt_path, trusted = cfg.get("ckpt_path"), cfg.get("trust")
    try:
        trusted_names(trusted)
        if not ckpt_path:
            raise ValueError("train=false evaluates a checkpoint: add ckpt_path=<path to a .ckpt file>.")
        if cfg.get("init_from"):
            raise ValueError("init_from= starts a training from a checkpoint's weights; with train=false "
                             "give the checkpoint to evaluate as ckpt_path= only.")
        trainer = build_trainer(cfg)
        apply_threads(cfg.get("threads"), trainer)  # cores // processes per host (docs/guides/backends.md, Threads)
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error
    # cfg.model unresolved: the model is the checkpoint's, and the default model's
    # ${dataset.input_shape} need not exist in a user's data set config.
    value = evaluate_checkpoint(ckpt_path, container(cfg.dataset), cfg.model,
                                command_line_overrides() if overrides is None else overrides, trainer, trusted)
    report(f"Run directory: {output_dir}")
    return value
