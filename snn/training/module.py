"""The LightningModule: cross-entropy on the decoded logits, accuracy and firing rates per stage."""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.nn import functional as F
from torchmetrics import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from snn.data.limits import check_elements
from snn.errors import (
    ConfigError,
    ScheduleError,  # noqa: F401 (re-exported)
)
from snn.models import SpikeRecorder, check_model
from snn.neurons.module import NeuronModule

from .checkpointing.instantiation import build_from_config, weights_budget
from .checkpointing.safe_load import check_targets, load_checkpoint

STAGES = ("train", "val", "test")

# The names of what SpikingClassifierModule logs, defined here once: fit_metrics (what optimized_metric
# and a callback's monitor may name) and the callbacks use these.
STEP_LOSS = "loss"  # the current training batch's loss, for the progress bar only
TRAIN_EPOCH_LOSS = "train/loss_epoch"  # the training loss's epoch mean (train/loss is logged per step)
RATE_PENALTY = "train/rate_penalty"
# A scheduler's state that records progress, not settings: everything else must match the config's.
_PROGRESS = frozenset({"last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step", "_is_initial",
                       "verbose", "base_lrs"})



def loss_metric(stage: str) -> str:
    """The loss over ``stage``: per step for training (its epoch mean is ``TRAIN_EPOCH_LOSS``), the
    epoch mean for validation and test."""
    return f"{stage}/loss"


def acc_metric(stage: str) -> str:
    """The accuracy over ``stage``'s epoch."""
    return f"{stage}/acc"


def rate_metric(layer: str, stage: str) -> str:
    """A layer's mean firing rate: at every training step, or the epoch mean over val/test."""
    return f"spikes/{layer}/rate" if stage == "train" else f"spikes/{layer}/{stage}_rate"


class SpikingClassifierModule(L.LightningModule):
    """Trains a spiking classifier (any ``snn.models.SpikingModel``) on ``(x, y)`` batches.

    Args:
        net: the network, or its config (``{"_target_": "snn.models.SpikingClassifier", ...}``);
            given as a config it is stored in the checkpoint's hyperparameters, so
            ``SpikingClassifierModule.load_from_checkpoint(path)`` rebuilds the whole model.
        optimizer: ``params -> Optimizer`` (a ``_partial_: true`` config or a callable).
        scheduler: ``optimizer -> LRScheduler`` or None; stepped every ``scheduler_interval``.
        rate_target, rate_weight: adds ``rate_weight * mean_layers (rate - rate_target)^2`` to the
            training loss, where ``rate`` is a layer's mean spikes per neuron and step (0 disables).
        config: the whole run config (train.py passes the resolved Hydra config); not used for
            training, but kept in the checkpoint and logged as hyperparameters.
        neuron_params: options of the optimizer's parameter group of the learnable neuron constants
            (``model.neuron.learnable``), e.g. ``{"lr": 1e-2, "weight_decay": 0.0}``; what it does not
            set comes from the optimizer config, except weight decay, which is 0 unless given (it
            would pull the constants towards their start). The weights are the other group
            (``LearningRateMonitor`` logs ``lr-<optimizer>/weights`` and ``.../neuron_constants``).

    Logs the training loss of every step, ``train/loss`` (and its epoch mean, ``train/loss_epoch``),
    the epoch means ``{stage}/acc`` (stage: train, val, test) and ``{val,test}/loss``, the mean
    firing rate of every spiking layer at every training step, ``spikes/<layer>/rate``, and its
    epoch means over validation and test, ``spikes/<layer>/{val,test}_rate``. Epoch means are
    torchmetrics objects, so they are reduced across processes. The progress bar also shows the
    training loss of the current batch.

    Resuming (``trainer.fit(ckpt_path=...)``) restores the optimizer and the scheduler, then
    continues the schedule this module's ``scheduler`` config describes from the step reached: when
    the config's schedule differs from the restored one (``T_max`` follows ``trainer.max_epochs``,
    which was raised), the restored scheduler takes the config's settings and the learning rate
    becomes the config's schedule at the current step (a cosine stretched to the new horizon);
    otherwise the restored state continues untouched. An epoch never starts with every learning
    rate at 0 (``ScheduleError``).
    """

    def __init__(
        self,
        net: nn.Module | Mapping[str, Any],
        optimizer: Callable[..., torch.optim.Optimizer] | Mapping[str, Any],
        scheduler: Callable[..., Any] | Mapping[str, Any] | None = None,
        scheduler_interval: str = "epoch",
        rate_target: float = 0.05,
        rate_weight: float = 0.0,
        config: Mapping[str, Any] | None = None,
        neuron_params: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if scheduler_interval not in ("epoch", "step"):
            raise ValueError(f"scheduler_interval must be 'epoch' or 'step', got {scheduler_interval!r}.")
        if rate_weight < 0 or not 0.0 <= rate_target <= 1.0:
            raise ValueError(
                f"Need rate_weight >= 0 and rate_target in [0, 1] (spikes per neuron and step), "
                f"got rate_weight={rate_weight!r}, rate_target={rate_target!r}."
            )
        self.save_hyperparameters(ignore=["net"] if isinstance(net, nn.Module) else None, logger=False)
        self.net = build_from_config(net, "model")
        check_model(self.net)  # snn.models.SpikingModel: what training and monitoring rely on
        self.optimizer_factory = build_from_config(optimizer, "optimizer")
        self.scheduler_factory = build_from_config(scheduler, "scheduler") if scheduler else None
        self._check_optimizer()
        # Keep the graph only when the rate penalty needs gradients through the spikes.
        self.recorder = SpikeRecorder(self.net.spiking_layers(), detach=rate_weight == 0)
        num_classes = self.net.num_classes
        for stage in STAGES:
            setattr(self, f"{stage}_acc", MulticlassAccuracy(num_classes, average="micro"))
            setattr(self, f"{stage}_loss", MeanMetric())
        self.val_rates = nn.ModuleDict({name: MeanMetric() for name in self.recorder.names})
        self.test_rates = nn.ModuleDict({name: MeanMetric() for name in self.recorder.names})
        shape = (2, *self.net.input_shape)
        check_elements(shape, 4, f"The example input {list(shape)} (model.input_shape, whose first size is "
                       "dataset.T for sequence data)", "check model.T, dataset.T and the input shapes")
        self.example_input_array = torch.zeros(shape)

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: str | Path, map_location: Any = "cpu",
                             hparams_file: Any = None, strict: bool | None = None,
                             weights_only: bool | None = None, trusted: Iterable[str] | str | None = None,
                             **overrides: Any) -> SpikingClassifierModule:
        """The module of a checkpoint, read as data: :func:`~snn.training.checkpointing.safe_load.load_checkpoint`
        checks the file's integrity, unpickles it with ``weights_only=True`` and refuses any
        ``_target_`` outside our own classes *before* ``__init__`` instantiates the configs.
        Lightning's own version unpickles first and builds whatever the file names.
        A ``weights_only`` of False is not honoured; ``hparams_file`` is not supported (the checkpoint
        carries its configs); ``overrides`` replace hyperparameters (checked as well). ``trusted``
        names your own packages or classes a checkpoint may build too (``["mynet", "mypkg.optim.Lion"]``;
        see :func:`~snn.training.checkpointing.safe_load.trusted_names`): your choice, never the file's."""
        if hparams_file is not None:
            raise ValueError("hparams_file is not supported: the checkpoint carries the configs that built it.")
        checkpoint = load_checkpoint(checkpoint_path, map_location, trusted)
        return cls.from_checkpoint(checkpoint, checkpoint_path, map_location, strict, trusted, **overrides)

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any], checkpoint_path: str | Path, map_location: Any = "cpu",
                        strict: bool | None = None, trusted: Iterable[str] | str | None = None,
                        **overrides: Any) -> SpikingClassifierModule:
        """The module of a checkpoint dictionary already read by
        :func:`~snn.training.checkpointing.safe_load.load_checkpoint` (with the same ``map_location``
        and ``trusted``), so that a caller that needs the dictionary too reads the file once;
        ``checkpoint_path`` names the file in errors. The configs, with ``overrides``, are checked
        before anything is built (:meth:`load_from_checkpoint`)."""
        hyper_parameters = {**checkpoint["hyper_parameters"], **overrides}
        check_targets(hyper_parameters, checkpoint_path, trusted)
        accepted = inspect.signature(cls.__init__).parameters
        with weights_budget(checkpoint["state_dict"], str(checkpoint_path)):
            module = cls(**{k: v for k, v in hyper_parameters.items() if k in accepted})
        module.on_load_checkpoint(checkpoint)
        try:
            module.load_state_dict(checkpoint["state_dict"], strict=True if strict is None else strict)
        except RuntimeError as error:
            raise ValueError(
                f"The weights in {checkpoint_path} do not fit the model its config builds: {error}"
            ) from None
        return module.to(map_location if isinstance(map_location, str | torch.device) else "cpu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str) -> torch.Tensor:
        x, y = batch
        try:
            logits = self(x)  # [B, num_classes]
        except (RuntimeError, ValueError) as error:  # e.g. "mat1 and mat2 shapes cannot be multiplied": name both
            expected = tuple(self.net.input_shape)
            if tuple(x.shape[1:]) == expected:
                raise
            raise ConfigError(
                f"The {stage} data's samples have shape {list(x.shape[1:])}, but the model "
                f"{type(self.net).__name__} was built for input_shape {list(expected)}, and its forward failed "
                f"({error}). Make model.input_shape (or the dataset's shape settings) match.") from error
        loss = F.cross_entropy(logits, y)
        rates = self.recorder.rates()
        self.recorder.clear()
        acc, mean_loss = getattr(self, f"{stage}_acc"), getattr(self, f"{stage}_loss")
        acc(logits.detach(), y)
        mean_loss(loss.detach())
        self.log(acc_metric(stage), acc, on_step=False, on_epoch=True, prog_bar=True)
        if stage == "train":
            # Per step for the loss curve (every trainer.log_every_n_steps, or more often in short epochs:
            # monitoring.LoggingInterval); the epoch mean beside it.
            self.log(loss_metric(stage), loss.detach(), on_step=True, on_epoch=False)
            self.log(TRAIN_EPOCH_LOSS, mean_loss, on_step=False, on_epoch=True)
            self.log(STEP_LOSS, loss.detach(), on_step=True, on_epoch=False, prog_bar=True, logger=False)
            for name, rate in rates.items():
                self.log(rate_metric(name, stage), rate.detach(), on_step=True, on_epoch=False)
            if self.hparams.rate_weight > 0:
                penalty = torch.stack([(r - self.hparams.rate_target) ** 2 for r in rates.values()]).mean()
                self.log(RATE_PENALTY, penalty.detach(), on_step=True, on_epoch=False)
                loss = loss + self.hparams.rate_weight * penalty
        else:
            self.log(loss_metric(stage), mean_loss, on_step=False, on_epoch=True, prog_bar=True)
            metrics = getattr(self, f"{stage}_rates")
            for name, rate in rates.items():
                metrics[name](rate.detach(), weight=x.shape[0])
                self.log(rate_metric(name, stage), metrics[name], on_step=False, on_epoch=True)
        return loss

    def fit_metrics(self) -> list[str]:
        """The metrics :meth:`_step` logs while fitting: what ``optimized_metric`` and a checkpoint's
        ``monitor`` can name (test metrics come after fitting; callbacks' statistics go to the
        loggers only)."""
        layers = self.recorder.names
        names = [acc_metric("val"), loss_metric("val"), acc_metric("train"), loss_metric("train"), TRAIN_EPOCH_LOSS,
                 STEP_LOSS]
        names += [rate_metric(layer, stage) for stage in ("val", "train") for layer in layers]
        return names + ([RATE_PENALTY] if self.hparams.rate_weight > 0 else [])

    def epoch_metrics(self, stage: str) -> list[str]:
        """The metrics :meth:`_step` logs once per ``stage`` epoch (train, val or test): accuracy, loss
        and, for val and test, every layer's mean rate (what the run log's epoch lines show)."""
        if stage == "train":
            return [acc_metric(stage), TRAIN_EPOCH_LOSS]
        return [acc_metric(stage), loss_metric(stage), *(rate_metric(layer, stage) for layer in self.recorder.names)]

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def parameter_groups(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: every parameter, or, when the network has learnable
        neuron constants, ``weights`` (everything else) and ``neuron_constants`` (their raw
        parameters, see :class:`snn.neurons.module.NeuronModule`) with the ``neuron_params`` options."""
        constants = {id(p): p for module in self.net.modules() if isinstance(module, NeuronModule)
                     for p in module.constant_parameters().values()}
        if not constants:
            return [{"params": list(self.parameters())}]
        options = {"weight_decay": 0.0, **(self.hparams.get("neuron_params") or {})}
        weights = [p for p in self.parameters() if id(p) not in constants]
        return [{"params": weights, "name": "weights"},
                {"params": list(constants.values()), "name": "neuron_constants", **options}]

    def _check_optimizer(self) -> None:
        """Builds the optimizer and scheduler once and drops them, so that a bad value
        (``optimizer.lr=abc``, ``lr=-1``, a wrong argument) fails with the module, not when fitting starts."""
        neuron_params = self.hparams.get("neuron_params")
        if neuron_params is not None and not isinstance(neuron_params, Mapping):
            raise ValueError(f"neuron_params must be a mapping of optimizer options (e.g. {{lr: 0.01, "
                             f"weight_decay: 0.0}}) or null, got {neuron_params!r}.")
        for where, options in (("optimizer", getattr(self.optimizer_factory, "keywords", {})),
                               ("neuron_params", neuron_params or {})):
            lr = options.get("lr")
            if lr is not None and not isinstance(lr, torch.Tensor) and (
                    isinstance(lr, bool) or not isinstance(lr, int | float) or not math.isfinite(lr) or lr <= 0):
                raise ValueError(f"{where}.lr must be a positive number, got {lr!r}.")
        try:
            optimizer = self.optimizer_factory(params=self.parameter_groups())
        except (TypeError, ValueError, KeyError) as error:
            raise ValueError(f"Invalid optimizer config: {error}") from error
        unknown = sorted(set(neuron_params or {}) - set(optimizer.defaults))
        if unknown:  # torch keeps unknown group options without a word: a typo would change nothing
            raise ValueError(f"neuron_params sets {unknown}, which {type(optimizer).__name__} does not take; "
                             f"its options are {sorted(optimizer.defaults)}.")
        if self.scheduler_factory is not None:
            try:
                self.scheduler_factory(optimizer=optimizer)
            except (TypeError, ValueError, KeyError) as error:
                raise ValueError(f"Invalid scheduler config: {error}") from error

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._resuming = "optimizer_states" in checkpoint

    def on_train_start(self) -> None:
        """After Lightning restored the optimizer and scheduler of a resumed run: continue the
        config's schedule from the step reached (see the class docstring)."""
        if getattr(self, "_resuming", False) and self.scheduler_factory is not None:
            for config in self.trainer.lr_scheduler_configs:
                self._continue_schedule(config.scheduler)
        self._resuming = False

    def _continue_schedule(self, restored: Any) -> None:
        """Gives ``restored`` the settings of this config's scheduler, at the step it reached, when
        they differ: a fresh scheduler from the config, on a stand-in optimizer with the restored
        groups' initial learning rates, is stepped ``last_epoch`` times, and its state and learning
        rates replace the restored ones."""
        if not isinstance(restored, torch.optim.lr_scheduler.LRScheduler):
            return  # ReduceLROnPlateau follows the metric, not a horizon
        optimizer = restored.optimizer
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [torch.zeros(1)]}
                  for g in optimizer.param_groups]
        for group in groups:
            group["lr"] = group.get("initial_lr", group["lr"])
        stand_in = torch.optim.SGD(groups, lr=groups[0]["lr"])
        with warnings.catch_warnings():  # stepping a scheduler without optimizer.step() is what we mean here
            warnings.simplefilter("ignore", UserWarning)
            fresh = self.scheduler_factory(optimizer=stand_in)
            for _ in range(restored.last_epoch):
                fresh.step()
        old, new = restored.state_dict(), fresh.state_dict()
        settings = {k: (old.get(k), v) for k, v in new.items() if k not in _PROGRESS and old.get(k) != v}
        if not settings:
            return
        restored.load_state_dict(new)
        for group, replayed in zip(optimizer.param_groups, stand_in.param_groups, strict=True):
            group["lr"] = replayed["lr"]
        changes = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in settings.items())
        rates = ", ".join(f"{group['lr']:.3g}" for group in optimizer.param_groups)
        rank_zero_info(f"Resumed {type(restored).__name__} takes this run's settings ({changes}) from step "
                       f"{restored.last_epoch}: learning rate {rates}.")

    def on_train_epoch_start(self) -> None:
        rates = [g["lr"] for o in self.trainer.optimizers for g in o.param_groups]
        if rates and all(float(r) == 0.0 for r in rates):
            schedulers = [c.scheduler for c in self.trainer.lr_scheduler_configs]
            named = ", ".join(type(s).__name__ + (f" (T_max={s.T_max})" if hasattr(s, "T_max") else "")
                              for s in schedulers) or "none"
            raise ScheduleError(
                f"Epoch {self.current_epoch} would train with learning rate 0 everywhere (scheduler: {named}; "
                f"trainer.max_epochs={self.trainer.max_epochs}); a cosine reaches 0 at T_max. Give the schedule the "
                "run's length (scheduler.T_max=${trainer.max_epochs}, the default), or start a fresh schedule from "
                "the weights with init_from=<checkpoint>."
            )

    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer_factory(params=self.parameter_groups())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": self.hparams.scheduler_interval},
        }
