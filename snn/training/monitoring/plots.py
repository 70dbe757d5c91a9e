"""Pictures of the dynamics for one validation sample: a raster and voltage traces per layer.

- :func:`raster_figure`: per spiking layer, which neuron spiked at which step (neurons sorted by
  rate or by first spike), and underneath the fraction of the layer's neurons spiking at each
  step. Long runs are max-pooled over time bins (a column is black when the neuron spiked anywhere
  in it), so the whole sequence is shown and no spike disappears from the picture.
- :func:`trace_figure`: per spiking layer, the voltage *before* the reset (the value compared with
  the threshold) of a few neurons chosen across the range of firing rates, the threshold and the
  reset level, spikes marked where the voltage crosses, and each neuron's learnable constants in
  the legend (every legend right of its axes, over no trace); below it each other state variable
  on its own axis (AdEx: the adaptation current ``a``, then the synaptic current ``i``: their
  scales differ by an order of magnitude); then the LI readout voltages.
- ``SpikeRasterPlot``: the callback that draws both every few epochs into TensorBoard.

Figures are built with matplotlib's object API (:func:`new_figure`: a ``Figure`` on its own Agg
canvas): nothing here touches pyplot's global state or the process's backend, so a notebook or an
application that draws with pyplot keeps its own figures and backend. A ``Figure`` that is the
last expression of a notebook cell shows itself (Jupyter's inline backend draws it).

The traces come from :func:`snn.neurons.trajectory`, the layers' own step functions replayed on the
inputs that :class:`~snn.models.SpikeRecorder` recorded during one forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.seed import isolate_rng
from torch import nn

from snn.models import SpikeRecorder
from snn.neurons import LI, Trajectory, trajectory

from .writer import tensorboard, write_figure

SORTS = ("rate", "first_spike", "index")
STATE_NAMES = {"a": "adaptation current", "i": "synaptic current"}


def order_neurons(z: torch.Tensor, by: str) -> torch.Tensor:
    """Neuron indices of spikes ``z [T, N]`` in raster order (top row first): by ``"rate"``
    (highest first), ``"first_spike"`` (earliest first, silent neurons last) or ``"index"``."""
    if by == "rate":
        return z.sum(0).argsort(descending=True, stable=True)
    if by == "first_spike":
        fired = z > 0
        # argmax returns the first maximal index: the first spike step; never: T (after the end).
        first = torch.where(fired.any(0), fired.int().argmax(0), z.shape[0])
        return first.argsort(stable=True)
    if by == "index":
        return torch.arange(z.shape[1])
    raise ValueError(f"Unknown raster order {by!r}; choose one of {list(SORTS)}.")


def pick_neurons(z: torch.Tensor, count: int) -> list[int]:
    """``count`` neurons of spikes ``z [T, N]`` spread evenly over the range of firing rates, from
    the least to the most active (with three: the quietest, the median and the busiest)."""
    by_rate = z.sum(0).argsort(stable=True)
    positions = torch.linspace(0, z.shape[1] - 1, min(count, z.shape[1])).round().long()
    return list(dict.fromkeys(by_rate[positions].tolist()))


def max_pool_time(z: torch.Tensor, max_steps: int) -> tuple[torch.Tensor, int]:
    """Spikes ``[T, N]`` -> ``([ceil(T / bin), N], bin)``, each row the max over ``bin`` steps,
    with ``bin`` the smallest that leaves at most ``max_steps`` rows."""
    T = z.shape[0]
    size = math.ceil(T / max_steps)
    if size == 1:
        return z, 1
    padded = torch.cat([z, z.new_zeros(size * math.ceil(T / size) - T, z.shape[1])])
    return padded.unflatten(0, (-1, size)).amax(1), size  # [bins * size, N] -> [bins, N]


@torch.no_grad()
def record(net: nn.Module, x: torch.Tensor) -> dict[str, Any]:
    """One forward pass of ``net`` on ``x [1, ...]`` (eval mode, fixed seed for encoder noise):
    ``{"spikes": {layer: [T, 1, ...]}, "traces": {layer: Trajectory},
    "readout": [T, 1, K] | None}``.
    """
    layers = net.spiking_layers()
    watched = dict(layers)
    if isinstance(getattr(net, "readout", None), LI) and "readout" not in layers:
        watched["readout"] = net.readout  # its output is its voltage [T, B, K]
    recorder = SpikeRecorder(watched, inputs=True)
    was_training = net.training
    try:
        net.eval()
        with isolate_rng():
            torch.manual_seed(0)
            net(x)
    finally:
        net.train(was_training)
        outputs, inputs = dict(recorder.spikes), dict(recorder.inputs)
        recorder.remove()
    readout = outputs.get("readout") if "readout" in watched and "readout" not in layers else None
    traces = {name: trajectory(layer, inputs[name]) for name, layer in layers.items()}
    return {
        "spikes": {name: outputs[name] for name in layers},
        "traces": traces,
        "readout": readout,
    }


def new_figure(rows: int, height: float, width: float = 9, **subplots: Any) -> tuple[Any, Any]:
    """A figure ``width`` inches wide with ``rows`` axes in a column (``axes[row, 0]``), on an Agg
    canvas of its own: rendered without pyplot, so no global figure list and no backend switch."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height))
    FigureCanvasAgg(figure)
    return figure, figure.subplots(rows, 1, squeeze=False, **subplots)


def _neurons(z: torch.Tensor) -> torch.Tensor:
    """``[T, 1, ...]`` (one sample) -> ``[T, N]`` on the CPU."""
    return z[:, 0].flatten(1).float().cpu()


def raster_figure(
    spikes: Mapping[str, torch.Tensor],
    sort: str = "rate",
    max_neurons: int = 256,
    max_steps: int = 1000,
) -> Any:
    """Raster and population rate of every layer's spikes ``{name: [T, 1, ...]}`` (one sample)."""
    rows = [ratio for _ in spikes for ratio in (3, 1)]
    figure, axes = new_figure(len(rows), 2.4 * len(spikes), gridspec_kw={"height_ratios": rows})
    for k, (name, z) in enumerate(spikes.items()):
        z = _neurons(z)
        T, N = z.shape
        order = order_neurons(z, sort)
        shown = order[torch.linspace(0, N - 1, min(max_neurons, N)).round().long()]
        image, size = max_pool_time(z[:, shown], max_steps)  # [bins, shown]
        ax = axes[2 * k, 0]
        ax.imshow(
            image.T.numpy(),
            aspect="auto",
            interpolation="nearest",
            cmap="Greys",
            vmin=0,
            vmax=1,
            extent=(-0.5, image.shape[0] * size - 0.5, len(shown) - 0.5, -0.5),
        )
        always = int((z.sum(0) == T).sum())
        pooled = f"; {size} steps per column (max)" if size > 1 else ""
        ax.set(
            xlim=(-0.5, T - 0.5),
            ylabel=f"neuron\n(by {sort})",
            xticks=[],
            title=f"{name}: {N} neurons ({len(shown)} shown), {int(z.sum())} spikes; "
            f"{always} spike at every step{pooled}",
        )
        ax = axes[2 * k + 1, 0]
        ax.plot(torch.arange(T).numpy(), z.mean(1).numpy(), lw=0.8, color="black")
        ax.set(xlim=(-0.5, T - 0.5), ylim=(0, 1.05), ylabel="fraction\nspiking")
    axes[-1, 0].set_xlabel("time step")
    figure.tight_layout()
    return figure


def _per_neuron(layer: nn.Module, name: str, like: torch.Tensor) -> torch.Tensor | None:
    """The layer's constant ``name`` (v_th, v_reset) for every neuron of ``like [1, ...]``:
    ``[N]``."""
    value = getattr(layer, name, None)
    if not isinstance(value, torch.Tensor):
        return None
    return torch.broadcast_to(value.detach(), like.shape).flatten().float().cpu()


def legend_beside(ax: Any, rows_per_column: int = 12) -> None:
    """The legend of ``ax`` to the right of its axes, outside them: it never covers a trace (inside,
    wherever it sat, some run's traces ran under it). Long legends wrap into columns of
    ``rows_per_column`` entries; ``tight_layout`` then narrows the axes to make room."""
    entries = len(ax.get_legend_handles_labels()[0])
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=7,
              ncol=max(1, math.ceil(entries / rows_per_column)))


# Short names of the learnable constants in the trace legend.
SYMBOLS = {"tau_mem_inv": "τ_mem", "tau_syn_inv": "τ_syn", "tau_ada_inv": "τ_ada", "adaptation_current": "a_cur",
           "adaptation_spike": "a_spk"}


def _constants_label(layer: nn.Module, like: torch.Tensor, j: int) -> str:
    """``", τ_ada 120 ms, a_spk 0.051"``: neuron ``j``'s learnable constants (time constants in ms)."""
    parts = []
    for name in getattr(layer, "learnable", ()):
        value = float(_per_neuron(layer, name, like)[j])
        if name.startswith("tau_") and name.endswith("_inv"):
            symbol = SYMBOLS.get(name, name)
            parts.append(f"{symbol} {1e3 / value:.3g} ms" if value > 0 else f"{symbol} ∞")
        else:
            parts.append(f"{SYMBOLS.get(name, name)} {value:.3g}")
    return "".join(f", {part}" for part in parts)


def trace_figure(
    layers: Mapping[str, nn.Module],
    traces: Mapping[str, Trajectory],
    neurons: Mapping[str, Sequence[int]],
    readout: torch.Tensor | None = None,
    label: int | None = None,
) -> Any:
    """Voltage traces of ``neurons[name]`` (flat indices) of every traced layer, each of their other
    state variables on its own axis underneath (AdEx: ``a``, then ``i``), and the readout voltages
    ``[T, 1, K]`` (class ``label`` thick)."""
    extra = {name: sorted((f for f in t.states._fields if f not in ("v", "z")), key=lambda f: f != "a")
             for name, t in traces.items()}
    rows = sum(1 + len(extra[name]) for name in traces) + (readout is not None)
    figure, axes = new_figure(rows, 2.4 * rows, width=12, sharex=True)  # the legends sit right of the axes
    axes = iter(axes[:, 0])
    for name, traced in traces.items():
        layer = layers[name]
        z, v = _neurons(traced.outputs), _neurons(traced.v_pre)  # [T, N]
        v_th = _per_neuron(layer, "v_th", traced.v_pre[0])
        v_reset = _per_neuron(layer, "v_reset", traced.v_pre[0])
        ax, colors = next(axes), {}
        for j in neurons[name]:
            if not 0 <= j < v.shape[1]:
                raise ValueError(
                    f"Neuron {j} of layer {name!r} does not exist: it has {v.shape[1]} neurons."
                )
            legend = f"#{j}: rate {float(z[:, j].mean()):.2f}" + _constants_label(layer, traced.v_pre[0], j)
            line = ax.plot(v[:, j].numpy(), lw=1, label=legend)[0]
            colors[j] = line.get_color()
            t = z[:, j].nonzero().flatten()
            ax.plot(t.numpy(), v[t, j].numpy(), "v", ms=4, color=colors[j])  # at the crossing
        for values, style, what in ((v_th, "--", "threshold"), (v_reset, ":", "reset")):
            if values is None:
                continue
            levels = {float(values[j]) for j in neurons[name]}
            for level in levels:  # one line per distinct level (learnable constants differ)
                ax.axhline(level, ls=style, lw=0.8, color="gray", label=what)
        ax.set(
            ylabel="v before reset",
            title=f"{name} ({type(layer).__name__}): neurons across the range of rates, "
            "▼ = spike",
        )
        legend_beside(ax)
        for field in extra[name]:  # each on its own axis: a and i differ in scale
            ax = next(axes)
            values = _neurons(getattr(traced.states, field))
            for j in neurons[name]:
                ax.plot(values[:, j].numpy(), lw=1, color=colors[j], label=f"{field} #{j}")
            ax.set(ylabel=field, title=f"{name}: {STATE_NAMES.get(field, field)} {field}")
            legend_beside(ax)
    if readout is not None:
        ax = next(axes)
        v = _neurons(readout)  # [T, K]
        for k in range(v.shape[1]):
            ax.plot(v[:, k].numpy(), lw=2.5 if k == label else 0.8, label=str(k))
        ax.set(
            ylabel="v",
            title="LI readout" + (f" (true class {label} thick)" if label is not None else ""),
        )
        legend_beside(ax)
    ax.set_xlabel("time step")
    figure.tight_layout()
    return figure


class SpikeRasterPlot(L.Callback):
    """Draws validation sample ``sample_index`` (fixed) every ``every_n_epochs`` epochs (rank 0,
    TensorBoard): image ``spikes/raster`` (:func:`raster_figure`, rows ordered by ``sort``, up to
    ``max_neurons`` per layer, at most ``max_steps`` columns) and image ``neurons/voltage``
    (:func:`trace_figure`) of ``neurons`` -- a list of flat indices for every layer, or
    ``{layer: [indices]}`` -- or, by default, ``num_traces`` neurons across the range of rates.

    Encoder noise (Poisson) is drawn from a fixed seed without touching the training random stream.
    """

    def __init__(
        self,
        every_n_epochs: int = 2,
        sample_index: int = 0,
        num_traces: int = 3,
        neurons: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
        sort: str = "rate",
        max_neurons: int = 256,
        max_steps: int = 1000,
    ):
        super().__init__()
        counts = (
            ("every_n_epochs", every_n_epochs),
            ("num_traces", num_traces),
            ("max_neurons", max_neurons),
            ("max_steps", max_steps),
        )
        for name, value in counts:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"SpikeRasterPlot's {name} must be a positive int, got {value!r}.")
        if not isinstance(sample_index, int) or sample_index < 0:
            raise ValueError(
                f"SpikeRasterPlot's sample_index must be an int >= 0, got {sample_index!r}."
            )
        if sort not in SORTS:
            raise ValueError(f"SpikeRasterPlot's sort must be one of {list(SORTS)}, got {sort!r}.")
        self.every_n_epochs, self.sample_index, self.num_traces = (
            every_n_epochs,
            sample_index,
            num_traces,
        )
        self.neurons = neurons
        self.sort, self.max_neurons, self.max_steps = sort, max_neurons, max_steps

    def sample(self, trainer: L.Trainer) -> tuple[torch.Tensor, int]:
        """The validation sample as a batch of one ``[1, ...]`` and its label."""
        loader = trainer.val_dataloaders
        loader = loader[0] if isinstance(loader, list | tuple) else loader
        dataset = loader.dataset
        if self.sample_index >= len(dataset):
            raise ValueError(
                f"SpikeRasterPlot's sample_index {self.sample_index} is beyond the "
                f"{len(dataset)} validation samples."
            )
        x, y = loader.collate_fn([dataset[self.sample_index]])
        return x, int(y[0])

    def traced_neurons(self, spikes: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
        """The configured neurons per layer, or ``num_traces`` across the range of rates."""
        if self.neurons is None:
            return {name: pick_neurons(_neurons(z), self.num_traces) for name, z in spikes.items()}
        if isinstance(self.neurons, Mapping):
            unknown = sorted(set(self.neurons) - set(spikes))
            if unknown:
                raise ValueError(
                    f"SpikeRasterPlot's neurons name unknown layers {unknown}; "
                    f"the spiking layers are {list(spikes)}."
                )
            return {
                name: list(self.neurons.get(name) or pick_neurons(_neurons(z), self.num_traces))
                for name, z in spikes.items()
            }
        return {name: list(self.neurons) for name in spikes}

    def figures(self, net: nn.Module, x: torch.Tensor, label: int | None = None) -> dict[str, Any]:
        """``{"spikes/raster": figure, "neurons/voltage": figure}`` for ``x [1, ...]``."""
        rec = record(net, x)
        raster = raster_figure(rec["spikes"], self.sort, self.max_neurons, self.max_steps)
        traces = trace_figure(
            net.spiking_layers(),
            rec["traces"],
            self.traced_neurons(rec["spikes"]),
            rec["readout"],
            label,
        )
        return {"spikes/raster": raster, "neurons/voltage": traces}

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or trainer.current_epoch % self.every_n_epochs != 0:
            return
        writer = tensorboard(trainer)  # None off rank 0: only rank 0 plots
        if writer is None:
            return
        x, label = self.sample(trainer)
        for tag, figure in self.figures(pl_module.net, x.to(pl_module.device, pl_module.dtype), label).items():
            write_figure(writer, tag, figure, trainer.global_step)
