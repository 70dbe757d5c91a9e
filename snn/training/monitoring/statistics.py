"""Numbers per epoch: firing-rate statistics of every spiking layer, learnable neuron constants.

Spike counts are torchmetrics states, summed across processes before anything is derived from
them. Rates are spikes per neuron and time step (0..1); multiply by 1/dt for Hz.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import Metric

from snn.models import SpikeRecorder
from snn.neurons.module import NeuronModule

from .writer import tensorboard

MONITORED_STAGES = ("train", "val")


class NeuronSpikeCounts(Metric):
    """Spikes per neuron, and per neuron the samples on which it saturated, over batches and
    processes.

    ``update(z)`` takes spikes ``[T, B, ...]``. A neuron *saturates* on a sample when it spikes in
    at least ``saturation`` of the sample's T steps. ``compute()`` gives per-neuron rates ``[N]``,
    ``saturated()`` the per-neuron fraction of samples on which it saturated ``[N]``. Integer
    states make the cross-process sums exact.
    """

    full_state_update = False

    def __init__(self, num_neurons: int, saturation: float = 0.9):
        super().__init__()
        self.saturation = float(saturation)
        self.add_state("spikes", torch.zeros(num_neurons, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state(
            "saturations", torch.zeros(num_neurons, dtype=torch.int64), dist_reduce_fx="sum"
        )
        self.add_state("steps", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("samples", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, z: torch.Tensor) -> None:
        if z.dim() < 3 or z[0, 0].numel() != self.spikes.numel():
            raise ValueError(
                f"Expected spikes [T, B, ...] of {self.spikes.numel()} neurons, "
                f"got {list(z.shape)}."
            )
        # [T, B, ...] -> [B, N] spikes per sample and neuron; float sums of 0/1 are exact here.
        per_sample = z.detach().flatten(2).sum(0).round().long()
        self.spikes += per_sample.sum(0)
        # At least saturation * T spikes (the tolerance keeps 0.7 * 10 = 7.000000000000001 at 7).
        needed = max(1, math.ceil(self.saturation * z.shape[0] - 1e-9))
        self.saturations += (per_sample >= needed).sum(0)
        self.steps += z.shape[0] * z.shape[1]
        self.samples += z.shape[1]

    def compute(self) -> torch.Tensor:
        return self.spikes.double() / self.steps.clamp(min=1)

    def saturated(self) -> torch.Tensor:
        return self.saturations.double() / self.samples.clamp(min=1)


class SpikeStatistics(L.Callback):
    """Per spiking layer, every epoch of each stage in ``stages``:

    - ``spikes/<layer>/<stage>_silent``: fraction of neurons that never spiked in the epoch;
    - ``spikes/<layer>/<stage>_saturated``: fraction of neurons that saturate on a sample --
      spike in at least ``saturation`` of its time steps (default 0.9: in effect at every step, an
      on/off unit rather than a rate or timing code) -- averaged over the epoch's samples;
    - ``spikes/<layer>/train_rate``: mean rate over the training epoch (the LightningModule logs
      ``val_rate`` and ``test_rate`` itself);
    - histogram ``spikes/<layer>/<stage>_neuron_rates`` (TensorBoard only): one entry per neuron.
    """

    def __init__(self, stages: Iterable[str] = MONITORED_STAGES, saturation: float = 0.9):
        super().__init__()
        self.stages = tuple(stages)
        unknown = sorted(set(self.stages) - set(MONITORED_STAGES))
        if unknown or not self.stages:
            raise ValueError(
                f"SpikeStatistics stages must be a non-empty subset of {list(MONITORED_STAGES)}, "
                f"got {list(self.stages)}."
            )
        if not 0.0 < saturation <= 1.0:
            raise ValueError(
                "saturation (a fraction of a sample's time steps) must be in (0, 1], "
                f"got {saturation!r}."
            )
        self.saturation = float(saturation)
        self.recorder: SpikeRecorder | None = None
        self.counts: dict[str, dict[str, NeuronSpikeCounts]] = {stage: {} for stage in self.stages}

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # Under DDP every rank must run the same collectives in the same order. At the end of a
        # training epoch a progress bar computes (and so reduces) the epoch metrics on rank 0
        # alone, while the other ranks reduce them later: a callback that reduces its own counts
        # in between must run before the progress bar, or the ranks' collectives cross.
        callbacks = trainer.callbacks
        bars = [i for i, c in enumerate(callbacks) if isinstance(c, ProgressBar)]
        if trainer.world_size > 1 and bars and bars[0] < callbacks.index(self):
            raise ValueError(
                "SpikeStatistics must come before the progress bar in the callback list under DDP "
                "(in conf/callbacks, list spike_statistics above progress_bar)."
            )
        if self.recorder is None:
            self.recorder = SpikeRecorder(pl_module.net.spiking_layers())
            self.recorder.enabled = False  # only during the batches of a monitored stage

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.recorder is not None:
            self.recorder.remove()
            self.recorder = None

    def _start(self, trainer: L.Trainer, stage: str) -> None:
        if stage in self.stages and not trainer.sanity_checking:
            self.recorder.enabled = True

    def _collect(self, pl_module: L.LightningModule, stage: str) -> None:
        if not self.recorder.enabled:
            return
        self.recorder.enabled = False
        counts = self.counts[stage]
        for name, z in self.recorder.spikes.items():
            if name not in counts:
                metric = NeuronSpikeCounts(z[0, 0].numel(), self.saturation)
                counts[name] = metric.to(pl_module.device)
            counts[name].update(z)
        self.recorder.clear()

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage not in self.stages or trainer.sanity_checking or not self.counts[stage]:
            return
        writer = tensorboard(trainer)
        scalars = {}
        for name, metric in self.counts[stage].items():
            rates = metric.compute()  # [N], summed over processes (every rank takes part)
            saturated = metric.saturated()
            metric.reset()
            scalars[f"spikes/{name}/{stage}_silent"] = (rates == 0).double().mean().item()
            scalars[f"spikes/{name}/{stage}_saturated"] = saturated.mean().item()
            if stage == "train":
                scalars[f"spikes/{name}/train_rate"] = rates.mean().item()
            if writer is not None:
                tag = f"spikes/{name}/{stage}_neuron_rates"
                writer.add_histogram(tag, rates.float().cpu(), trainer.global_step)
        # Already global (from the summed counts), so the loggers get them directly on rank 0, like
        # Lightning's LearningRateMonitor does. Through pl_module.log they would be reduced lazily
        # when first read -- by the progress bar, on rank 0 alone: a collective the other ranks
        # never join (a hang, or a gloo size mismatch).
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._start(trainer, "train")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._collect(pl_module, "train")

    def on_validation_batch_start(
        self, trainer, pl_module, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._start(trainer, "val")

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ) -> None:
        self._collect(pl_module, "val")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._report(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._report(trainer, pl_module, "val")


def learned_constants(net: nn.Module) -> dict[str, torch.Tensor]:
    """``{"<layer>/<constant>": current values}`` of every learnable neuron constant of ``net`` (no
    weights): layers by their ``spiking_layers()`` name (and ``readout``), any other neuron module
    by its module path."""
    names = {id(layer): name for name, layer in net.spiking_layers().items()}
    if isinstance(getattr(net, "readout", None), NeuronModule):
        names.setdefault(id(net.readout), "readout")
    return {
        f"{names.get(id(module), path)}/{constant}": value
        for path, module in net.named_modules()
        if isinstance(module, NeuronModule)
        for constant, value in module.constants(learnable_only=True).items()
    }


def in_natural_units(name: str, values: torch.Tensor) -> tuple[str, torch.Tensor]:
    """A constant as a researcher reads it: an inverse time constant ``tau_<x>_inv`` (1/s) as the
    time constant ``tau_<x>_ms`` in milliseconds (``1000 / value``; ∞ where the rate is 0); any other
    constant (a voltage, an adaptation strength) unchanged, under its own name."""
    if name.startswith("tau_") and name.endswith("_inv"):
        return f"{name.removesuffix('_inv')}_ms", 1e3 / values.double()
    return name, values.double()


def constant_summary(values: torch.Tensor) -> dict[str, float]:
    """``mean``, ``std`` (over the neurons, population: 0 for one value), ``min`` and ``max``."""
    flat = values.detach().double().flatten()
    return {"mean": flat.mean().item(), "std": flat.std(correction=0).item(),
            "min": flat.min().item(), "max": flat.max().item()}


class NeuronParameterHistograms(L.Callback):
    """The learnable neuron constants (the weights are not neuron constants and are not shown), in
    their natural units (:func:`in_natural_units`: time constants in ms), when training starts (the
    values it starts from, at its first step) and every ``every_n_epochs`` training epochs (rank 0):

    - histogram ``neuron_params/<layer>/<constant>`` (TensorBoard): one entry per neuron;
    - scalars ``neuron_params/<layer>/<constant>/{mean,std,min,max}`` over the layer's neurons (every
      logger): the curves that show whether and when a constant moved.

    ``<constant>`` is ``tau_mem_ms`` for ``tau_mem_inv`` and so on, the field name otherwise.
    Silent when nothing is learnable."""

    def __init__(self, every_n_epochs: int = 1):
        super().__init__()
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(
                "NeuronParameterHistograms' every_n_epochs must be a positive int, "
                f"got {every_n_epochs!r}."
            )
        self.every_n_epochs = every_n_epochs

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not learned_constants(pl_module.net):
            rank_zero_info(
                "NeuronParameterHistograms: no learnable neuron parameters "
                "(model.neuron.learnable=[...]); nothing to plot."
            )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._write(trainer, pl_module)  # the starting values (step 0, or the step a resumed run is at)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch % self.every_n_epochs == 0:
            self._write(trainer, pl_module)

    def _write(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        writer = tensorboard(trainer)
        scalars = {}
        for tag, values in learned_constants(pl_module.net).items():
            layer, _, constant = tag.rpartition("/")
            name, values = in_natural_units(constant, values.detach().cpu())
            if writer is not None:
                writer.add_histogram(f"neuron_params/{layer}/{name}", values.float(), trainer.global_step)
            for statistic, value in constant_summary(values).items():
                scalars[f"neuron_params/{layer}/{name}/{statistic}"] = value
        if scalars:
            for logger in trainer.loggers:
                logger.log_metrics(scalars, step=trainer.global_step)
