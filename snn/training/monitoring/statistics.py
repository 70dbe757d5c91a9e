"""TensorBoard views of a spiking network in training: each view is a callback, on or off in conf/callbacks/.

- ``SpikeStatistics``: per spiking layer and epoch, the histogram of per-neuron firing rates and the
  fractions of silent and saturated neurons (and the training-epoch rate). Spike counts are
  torchmetrics states, summed across processes before anything is derived from them.
- ``SpikeRasterPlot``: a raster of every spiking layer and voltage traces of a few spiking and LI
  readout neurons for one fixed validation sample, as images, every ``every_n_epochs`` (rank 0).
- ``NeuronParameterHistograms``: histograms of learnable neuron constants (tau_mem_inv, ...).
- ``ConfigHyperparameters``: the resolved run config as hyperparameters, with the optimized metric,
  so runs compare in TensorBoard's HPARAMS tab.

Rates are spikes per neuron and time step (0..1); multiply by 1/dt for Hz.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn
from torchmetrics import Metric

from snn.models import SpikeRecorder
from snn.neurons import LI

STAGES = ("train", "val")


def tensorboard(trainer: L.Trainer) -> Any | None:
    """The SummaryWriter of the trainer's TensorBoard logger (None without one, or off rank 0)."""
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            return logger.experiment
    return None


class NeuronSpikeCounts(Metric):
    """Spikes per neuron and the number of time steps seen, summed over batches and processes.

    ``update(z)`` takes spikes ``[T, B, ...]``; ``compute()`` gives per-neuron rates ``[N]``.
    Integer states make the cross-process sum exact.
    """

    full_state_update = False

    def __init__(self, num_neurons: int):
        super().__init__()
        self.add_state("spikes", torch.zeros(num_neurons, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("steps", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, z: torch.Tensor) -> None:
        if z.dim() < 3 or z[0, 0].numel() != self.spikes.numel():
            raise ValueError(f"Expected spikes [T, B, ...] of {self.spikes.numel()} neurons, got {list(z.shape)}.")
        # [T, B, ...] -> [T*B, N] -> [N]; float sums of 0/1 are exact far beyond one batch.
        self.spikes += z.detach().flatten(2).flatten(0, 1).sum(0).round().long()
        self.steps += z.shape[0] * z.shape[1]

    def compute(self) -> torch.Tensor:
        return self.spikes.double() / self.steps.clamp(min=1)


class SpikeStatistics(L.Callback):
    """Per spiking layer, every epoch of each stage in ``stages``:

    - ``spikes/<layer>/<stage>_silent``: fraction of neurons that never spiked in the epoch;
    - ``spikes/<layer>/<stage>_saturated``: fraction that spiked in at least ``saturation`` of all
      time steps (0.5: every other step, 500 Hz at dt = 1 ms);
    - ``spikes/<layer>/train_rate``: mean rate over the training epoch (the LightningModule logs
      ``val_rate`` and ``test_rate`` itself);
    - histogram ``spikes/<layer>/<stage>_neuron_rates`` (TensorBoard only): one entry per neuron.
    """

    def __init__(self, stages: Iterable[str] = STAGES, saturation: float = 0.5):
        super().__init__()
        self.stages = tuple(stages)
        unknown = sorted(set(self.stages) - set(STAGES))
        if unknown or not self.stages:
            raise ValueError(f"SpikeStatistics stages must be a non-empty subset of {list(STAGES)}, got {list(self.stages)}.")
        if not 0.0 < saturation <= 1.0:
            raise ValueError(f"saturation (a fraction of time steps) must be in (0, 1], got {saturation!r}.")
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
                counts[name] = NeuronSpikeCounts(z[0, 0].numel()).to(pl_module.device)
            counts[name].update(z)
        self.recorder.clear()

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage not in self.stages or trainer.sanity_checking or not self.counts[stage]:
            return
        writer = tensorboard(trainer)
        scalars = {}
        for name, metric in self.counts[stage].items():
            rates = metric.compute()  # [N], summed over processes (every rank takes part)
            metric.reset()
            scalars[f"spikes/{name}/{stage}_silent"] = (rates == 0).double().mean().item()
            scalars[f"spikes/{name}/{stage}_saturated"] = (rates >= self.saturation).double().mean().item()
            if stage == "train":
                scalars[f"spikes/{name}/train_rate"] = rates.mean().item()
            if writer is not None:
                writer.add_histogram(f"spikes/{name}/{stage}_neuron_rates", rates.float().cpu(), trainer.global_step)
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

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self._start(trainer, "val")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(pl_module, "val")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._report(trainer, pl_module, "train")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._report(trainer, pl_module, "val")


def voltage_trace(layer: nn.Module, current: torch.Tensor) -> torch.Tensor:
    """Membrane voltage after every step ``[T, ...]`` of ``layer`` driven by ``current [T, ...]``.

    Runs the layer's own step function (the one copy of its equations) from rest, so the trace is
    the one the layer's time loop went through.
    """
    p = layer.neuron_parameters(current)
    state = layer.rest_state(current[0])
    voltages = []
    for x_t in current.unbind(0):
        _, state = type(layer).step(x_t, state, p, layer.dt)
        voltages.append(state.v)
    return torch.stack(voltages)


def _figure_to_writer(writer: Any, tag: str, figure: Any, step: int) -> None:
    import matplotlib.pyplot as plt

    writer.add_figure(tag, figure, step, close=False)
    plt.close(figure)


class SpikeRasterPlot(L.Callback):
    """For validation sample ``sample_index`` (fixed), every ``every_n_epochs`` epochs (rank 0, TensorBoard):

    - image ``spikes/raster``: which neuron of each spiking layer spiked at which step (up to
      ``max_neurons`` neurons per layer, evenly spaced);
    - image ``neurons/voltage``: membrane voltages of the ``num_traces`` most active neurons of each
      spiking layer (threshold dashed, spikes marked) and of every LI readout neuron (the true
      class drawn thick).

    Encoder noise (Poisson) is drawn from a fixed seed without touching the training random stream.
    """

    def __init__(self, every_n_epochs: int = 5, sample_index: int = 0, num_traces: int = 4, max_neurons: int = 256):
        super().__init__()
        for name, value in (("every_n_epochs", every_n_epochs), ("num_traces", num_traces), ("max_neurons", max_neurons)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SpikeRasterPlot's {name} must be a positive int, got {value!r}.")
        if not isinstance(sample_index, int) or sample_index < 0:
            raise ValueError(f"SpikeRasterPlot's sample_index must be an int >= 0, got {sample_index!r}.")
        self.every_n_epochs, self.sample_index = every_n_epochs, sample_index
        self.num_traces, self.max_neurons = num_traces, max_neurons

    def sample(self, trainer: L.Trainer) -> tuple[torch.Tensor, int]:
        """The validation sample as a batch of one ``[1, ...]`` and its label."""
        loader = trainer.val_dataloaders
        loader = loader[0] if isinstance(loader, list | tuple) else loader
        dataset = loader.dataset
        if self.sample_index >= len(dataset):
            raise ValueError(f"SpikeRasterPlot's sample_index {self.sample_index} is beyond the {len(dataset)} validation samples.")
        x, y = loader.collate_fn([dataset[self.sample_index]])
        return x, int(y[0])

    @torch.no_grad()
    def record(self, net: nn.Module, x: torch.Tensor) -> dict[str, Any]:
        """Spikes, input currents and readout voltages of ``net`` on ``x [1, ...]`` (eval mode, fixed seed)."""
        currents, spikes, readout = {}, {}, {}
        handles = []
        for name, layer in net.spiking_layers().items():
            handles.append(layer.register_forward_pre_hook(lambda m, args, name=name: currents.__setitem__(name, args[0])))
            handles.append(layer.register_forward_hook(lambda m, args, out, name=name: spikes.__setitem__(name, out[0])))
        if isinstance(getattr(net, "readout", None), LI):
            handles.append(net.readout.register_forward_hook(lambda m, args, out: readout.__setitem__("v", out[0])))
        was_training = net.training
        try:
            net.eval()
            with isolate_rng():
                torch.manual_seed(0)
                net(x)
        finally:
            net.train(was_training)
            for handle in handles:
                handle.remove()
        return {"currents": currents, "spikes": spikes, "readout": readout.get("v")}

    def figures(self, net: nn.Module, x: torch.Tensor, label: int) -> dict[str, Any]:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        rec = self.record(net, x)
        layers = net.spiking_layers()
        T = next(iter(rec["spikes"].values())).shape[0]

        raster, axes = plt.subplots(len(layers), 1, figsize=(8, 2.2 * len(layers)), squeeze=False, sharex=True)
        for ax, name in zip(axes[:, 0], layers, strict=True):
            z = rec["spikes"][name][:, 0].flatten(1).cpu()  # [T, 1, ...] -> [T, N]
            shown = torch.linspace(0, z.shape[1] - 1, min(self.max_neurons, z.shape[1])).round().long().unique()
            t, n = z[:, shown].nonzero(as_tuple=True)
            ax.scatter(t.numpy(), shown[n].numpy(), s=2, marker="|", color="black")
            ax.set(xlim=(-0.5, T - 0.5), ylabel=f"{name}\nneuron", title=f"{name}: {int(z.sum())} spikes, {z.shape[1]} neurons ({len(shown)} shown)")
        axes[-1, 0].set_xlabel("time step")
        raster.tight_layout()

        rows = len(layers) + (rec["readout"] is not None)
        traces, axes = plt.subplots(rows, 1, figsize=(8, 2.2 * rows), squeeze=False, sharex=True)
        for ax, (name, layer) in zip(axes[:, 0], layers.items(), strict=False):
            z = rec["spikes"][name][:, 0].flatten(1)  # [T, 1, ...] -> [T, N]
            active = z.sum(0).argsort(descending=True, stable=True)[: self.num_traces]
            v = voltage_trace(layer, rec["currents"][name][:, :1]).flatten(2)[:, 0]  # [T, 1, ...] -> [T, N]
            for j in active.tolist():
                line = ax.plot(v[:, j].cpu().numpy(), lw=1, label=f"#{j}")[0]
                spike_t = z[:, j].nonzero().flatten().cpu().numpy()
                ax.plot(spike_t, [float(v[:, j].max())] * len(spike_t), "v", ms=4, color=line.get_color())
            v_th = getattr(layer, "v_th", None)
            if v_th is not None and v_th.numel() == 1:
                ax.axhline(float(v_th), ls="--", lw=0.8, color="gray")
            ax.set(ylabel="v", title=f"{name} ({type(layer).__name__}): most active neurons")
            ax.legend(loc="upper right", fontsize=7, ncol=self.num_traces)
        if rec["readout"] is not None:
            ax = axes[-1, 0]
            v = rec["readout"][:, 0].cpu()  # [T, 1, K] -> [T, K]
            for k in range(v.shape[1]):
                ax.plot(v[:, k].numpy(), lw=2.5 if k == label else 0.8, label=str(k))
            ax.set(ylabel="v", title=f"LI readout (true class {label} thick)")
            ax.legend(loc="upper right", fontsize=7, ncol=min(v.shape[1], 10))
        axes[-1, 0].set_xlabel("time step")
        traces.tight_layout()
        return {"spikes/raster": raster, "neurons/voltage": traces}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs != 0:
            return
        writer = tensorboard(trainer)  # None off rank 0: only rank 0 plots
        if writer is None:
            return
        x, label = self.sample(trainer)
        for tag, figure in self.figures(pl_module.net, x.to(pl_module.device), label).items():
            _figure_to_writer(writer, tag, figure, trainer.global_step)


class NeuronParameterHistograms(L.Callback):
    """Histograms ``neuron_params/<layer>/<name>`` of every learnable neuron constant, every
    ``every_n_epochs`` training epochs (rank 0, TensorBoard). Silent when nothing is learnable."""

    def __init__(self, every_n_epochs: int = 1):
        super().__init__()
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"NeuronParameterHistograms' every_n_epochs must be a positive int, got {every_n_epochs!r}.")
        self.every_n_epochs = every_n_epochs

    @staticmethod
    def learnable(net: nn.Module) -> dict[str, torch.Tensor]:
        layers = dict(net.spiking_layers())
        if isinstance(getattr(net, "readout", None), nn.Module):
            layers["readout"] = net.readout
        return {f"{name}/{p_name}": p for name, layer in layers.items() for p_name, p in layer.named_parameters(recurse=False)}

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.learnable(pl_module.net):
            rank_zero_info("NeuronParameterHistograms: no learnable neuron parameters (model.neuron.learnable=[...]); nothing to plot.")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writer = tensorboard(trainer)
        if writer is None or trainer.current_epoch % self.every_n_epochs != 0:
            return
        for tag, p in self.learnable(pl_module.net).items():
            writer.add_histogram(f"neuron_params/{tag}", p.detach().float().cpu(), trainer.global_step)


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model": {"T": 8}}`` -> ``{"model/T": 8}``; lists and None become strings (what HPARAMS shows)."""
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


class ConfigHyperparameters(L.Callback):
    """Logs the run config as hyperparameters when fitting starts (rank 0).

    The config is the LightningModule's ``hparams.config`` (what train.py passes: the resolved Hydra
    config), else its hyperparameters. Every logger records it (``hparams.yaml``); TensorBoard also
    gets the HPARAMS summary naming ``metric``, whose value it reads from that scalar's latest point.
    """

    def __init__(self, metric: str = "val/acc"):
        super().__init__()
        self.metric = metric

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        config = pl_module.hparams.get("config") or dict(pl_module.hparams)
        flat = flatten_config(config)
        for logger in trainer.loggers:
            logger.log_hyperparams(flat)
        writer = tensorboard(trainer)
        if writer is not None:
            from torch.utils.tensorboard.summary import hparams

            # metric_dict's values are not written (TensorBoard reads the metric's own scalars).
            for summary in hparams(flat, {self.metric: math.nan}):
                writer.file_writer.add_summary(summary)
