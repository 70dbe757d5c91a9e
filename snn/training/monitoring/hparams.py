"""The run's hyperparameters: the whole resolved config for the loggers' records (``hparams.yaml``),
and the ~20 values a person compares runs by, plus whatever the command line changed, as the
columns of TensorBoard's HPARAMS tab."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
from lightning.pytorch.utilities import rank_zero_only

from ..module import acc_metric
from .writer import tensorboard


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"T": 8}}`` -> ``{"model/T": 8}``; lists and None become strings (what HPARAMS
    shows)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, f"{name}/"))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


# The HPARAMS columns: config paths, shown as model/neuron/alpha; a _target_ is shown by its class
# name under its group's name (model: SpikingClassifier). Paths a config lacks are left out.
COLUMNS = (
    "model._target_", "model.neuron.kind", "model.hidden", "model.T", "dataset.T", "model.dt", "model.encoder.kind",
    "model.decoder", "model.neuron.integrator", "model.neuron.method", "model.neuron.alpha",
    "model.neuron.tau_mem_inv", "model.neuron.tau_ada_inv", "model.neuron.learnable", "dataset._target_",
    "dataset.batch_size", "optimizer._target_", "optimizer.lr", "optimizer.weight_decay", "scheduler._target_",
    "trainer.max_epochs", "seed", "regularizer.rate_weight",
)


def _select(config: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = config
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return False, None
        node = node[key]
    return True, node


def command_line_keys() -> list[str]:
    """The config keys this Hydra run set on the command line (``model.T=8``, ``+a.b=1``; not
    ``hydra.*`` or group choices), [] outside a Hydra run."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    keys = [o.split("=", 1)[0].lstrip("+~") for o in HydraConfig.get().overrides.task if "=" in o]
    return [k for k in keys if not k.startswith("hydra.")]


def comparison_hparams(config: Mapping[str, Any], columns: Sequence[str] = COLUMNS,
                       extra: Sequence[str] = ()) -> dict[str, Any]:
    """The HPARAMS columns of ``config`` (a resolved run config): ``columns`` and ``extra`` paths that
    hold a single value, named as in :func:`flatten_config`, ``_target_`` as its group's class name."""
    out: dict[str, Any] = {}
    for path in dict.fromkeys([*columns, *extra]):
        found, value = _select(config, path)
        if not found or isinstance(value, Mapping):
            continue  # a group choice (model=lif) shows through its _target_ column
        if path.endswith("._target_") and isinstance(value, str):
            out[path.removesuffix("._target_").replace(".", "/")] = value.rsplit(".", 1)[-1]
        else:
            out.update(flatten_config({path.replace(".", "/"): value}))
    return out


class ConfigHyperparameters(L.Callback):
    """Logs the run's hyperparameters when fitting starts (rank 0).

    The config is the LightningModule's ``hparams.config`` (what train.py passes: the resolved Hydra
    config), else its hyperparameters. Every logger records all of it (``hparams.yaml``); TensorBoard's
    HPARAMS tab gets the ``columns`` (default :data:`COLUMNS`: model and neuron kind, sizes, T,
    surrogate, optimizer, schedule, data, epochs, seed...) and every key set on the command line
    (what a sweep varies), against ``metric``, whose value it reads from that scalar's latest point.
    """

    def __init__(self, metric: str = acc_metric("val"), columns: Sequence[str] | None = None):
        super().__init__()
        self.metric = metric
        self.columns = tuple(COLUMNS if columns is None else columns)

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        config = pl_module.hparams.get("config") or dict(pl_module.hparams)
        for logger in trainer.loggers:
            logger.log_hyperparams(flatten_config(config))
        writer = tensorboard(trainer)
        if writer is not None:
            from torch.utils.tensorboard.summary import hparams

            shown = comparison_hparams(config, self.columns, command_line_keys())
            # metric_dict's values are not written (TensorBoard reads the metric's own scalars).
            for summary in hparams(shown, {self.metric: math.nan}):
                writer.file_writer.add_summary(summary)
