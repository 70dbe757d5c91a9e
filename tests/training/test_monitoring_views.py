"""The pictures of SpikeRasterPlot, rendered for a feed-forward, a conv and a recurrent model:
what is drawn is the models' own run (pre-reset voltage, threshold, spikes, order, pooling)."""

import matplotlib
import matplotlib.pyplot as plt
import pytest
import torch
from torch import nn

from snn.models import SpikingClassifier, SpikingConvClassifier, check_model
from snn.neurons import LI, LIFAdExRecurrent
from snn.training import SpikeRasterPlot
from snn.training.monitoring import max_pool_time, order_neurons, pick_neurons, record


class TinyRecurrent(nn.Module):
    """A sequence model ``[B, T, features] -> [B, classes]`` satisfying snn.models.SpikingModel."""

    def __init__(self, T: int, features: int = 4, hidden: int = 6, classes: int = 2):
        super().__init__()
        self.input_shape, self.num_classes, self.T, self.dt, self.decoder = (
            (T, features),
            classes,
            T,
            0.001,
            "max",
        )
        self.spiking = nn.ModuleDict({"rec": LIFAdExRecurrent(features, hidden)})
        self.output = nn.Linear(hidden, classes)
        self.readout = LI()

    def spiking_layers(self):
        return dict(self.spiking)

    def forward(self, x):
        z, _ = self.spiking["rec"](x.transpose(0, 1))  # [B, T, F] -> [T, B, hidden]
        v, _ = self.readout(self.output(z))
        return v.amax(0)


def model_and_input(kind: str):
    torch.manual_seed(0)
    loud = {"kind": "constant", "scale": 8.0}
    if kind == "feed_forward":
        return SpikingClassifier((12,), 3, T=12, hidden=10, encoder=loud), torch.rand(1, 12)
    if kind == "conv":
        net = SpikingConvClassifier(
            (1, 6, 6), 3, T=10, conv={"channels": [2]}, hidden=6, encoder=loud
        )
        net.linear.weight.data.abs_().mul_(4)  # excitatory: the hidden layer spikes too
        return net, torch.rand(1, 1, 6, 6)
    return TinyRecurrent(T=1500), torch.rand(1, 1500, 4) * 3


def lines(ax, prefix):
    return [line for line in ax.get_lines() if line.get_label().startswith(prefix)]


@pytest.mark.exactness
@pytest.mark.usefixtures("one_blas_thread")
@pytest.mark.parametrize("kind", ["feed_forward", "conv", "recurrent"])
def test_voltage_view_draws_the_pre_reset_voltage_threshold_and_crossings(kind):
    net, x = model_and_input(kind)
    check_model(net)
    plot = SpikeRasterPlot(num_traces=3)
    rec = record(net, x)
    figure = plot.figures(net, x, label=1)["neurons/voltage"]
    axes = figure.axes
    layers = net.spiking_layers()
    row = 0
    for name, layer in layers.items():
        traced = rec["traces"][name]
        assert torch.equal(traced.outputs, rec["spikes"][name])  # the trace is the run it watched
        z, v = traced.outputs[:, 0].flatten(1), traced.v_pre[:, 0].flatten(1)  # [T, N]
        ax = axes[row]
        drawn = lines(ax, "#")
        assert len(drawn) == 3
        rates = []
        for line in drawn:
            j = int(line.get_label()[1:].split(":")[0])
            rates.append(float(z[:, j].mean()))
            assert line.get_ydata().tolist() == v[:, j].tolist()
        assert (
            rates == sorted(rates) and rates[0] == z.mean(0).min() and rates[-1] == z.mean(0).max()
        )
        threshold = lines(ax, "threshold")
        assert [t.get_ydata()[0] for t in threshold] == [float(layer.v_th)]
        assert [t.get_ydata()[0] for t in lines(ax, "reset")] == [float(layer.v_reset)]
        markers = [line for line in ax.get_lines() if line.get_marker() == "v"]
        crossings = [y for m in markers for y in m.get_ydata()]
        assert crossings and min(crossings) > float(layer.v_th)  # spikes marked where v crossed
        # AdEx: the adaptation current, then the synaptic current of the same neurons, each on its own
        # axis below (their scales differ: a flat-looking a beside i hid the adaptation).
        for offset, field in ((1, "a"), (2, "i")):
            states = axes[row + offset]
            assert {line.get_label().split(" ")[0] for line in states.get_lines()} == {field}
            assert states.get_ylabel() == field
            values = getattr(traced.states, field)[:, 0].flatten(1)  # [T, N]
            for line in states.get_lines():
                j = int(line.get_label().split("#")[1])
                assert line.get_ydata().tolist() == values[:, j].float().tolist()
        row += 3
    readout = axes[row].get_lines()
    assert (
        len(readout) == net.num_classes and readout[1].get_linewidth() > readout[0].get_linewidth()
    )  # class 1


@pytest.mark.parametrize("kind", ["feed_forward", "conv", "recurrent"])
def test_raster_view_is_sorted_and_shows_the_population_rate(kind):
    net, x = model_and_input(kind)
    rec = record(net, x)
    figure = SpikeRasterPlot(sort="rate", max_steps=500).figures(net, x)["spikes/raster"]
    for k, spikes in enumerate(rec["spikes"].values()):
        z = spikes[:, 0].flatten(1)  # [T, N]
        T = z.shape[0]
        raster, population = figure.axes[2 * k], figure.axes[2 * k + 1]
        image = torch.as_tensor(raster.get_images()[0].get_array())  # [rows, columns]
        assert image.shape[0] == min(256, z.shape[1])
        if z.shape[1] <= 256:
            row_counts = image.sum(1)
            assert torch.all(row_counts[:-1] >= row_counts[1:]) or T > 500  # busiest on top
        pooled, size = max_pool_time(z, 500)
        assert image.shape[1] == pooled.shape[0] and size == (3 if T == 1500 else 1)
        assert torch.equal(image, pooled[:, order_neurons(z, "rate")].T)
        assert raster.get_xlim() == (-0.5, T - 0.5)  # the whole run
        rate = population.get_lines()[0].get_ydata()
        assert len(rate) == T and rate.tolist() == z.mean(1).tolist()


def test_raster_order_by_rate_and_by_first_spike():
    z = torch.zeros(6, 4)
    z[4:, 0] = 1  # 2 spikes from step 4
    z[1:, 1] = 1  # 5 spikes from step 1
    z[3, 3] = 1  # 1 spike at step 3; neuron 2 is silent
    assert order_neurons(z, "rate").tolist() == [1, 0, 3, 2]
    assert order_neurons(z, "first_spike").tolist() == [1, 3, 0, 2]
    assert order_neurons(z, "index").tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="first_spike"):
        order_neurons(z, "latency")


def test_traced_neurons_span_the_rates():
    z = torch.zeros(10, 5)
    for j, count in enumerate([3, 10, 0, 6, 1]):
        z[:count, j] = 1
    assert pick_neurons(z, 3) == [2, 0, 1]  # silent, median (3 of 10), saturated
    assert pick_neurons(z, 9) == [2, 4, 0, 3, 1]  # no more than there are


def test_long_runs_are_max_pooled_without_losing_a_spike():
    z = torch.zeros(3001, 2)
    z[1234, 0] = 1
    pooled, size = max_pool_time(z, 1000)
    assert size == 4 and pooled.shape == (751, 2)
    assert pooled.nonzero().tolist() == [[1234 // 4, 0]]


def test_configured_neurons_are_traced_and_checked():
    net, x = model_and_input("feed_forward")
    figure = SpikeRasterPlot(neurons={"hidden1": [4, 7]}).figures(net, x)["neurons/voltage"]
    assert [line.get_label().split(":")[0] for line in lines(figure.axes[0], "#")] == ["#4", "#7"]
    figure = SpikeRasterPlot(neurons=[2]).figures(net, x)["neurons/voltage"]
    assert [line.get_label().split(":")[0] for line in lines(figure.axes[0], "#")] == ["#2"]
    with pytest.raises(ValueError, match=r"unknown layers \['hidden9'\]"):
        SpikeRasterPlot(neurons={"hidden9": [0]}).figures(net, x)
    with pytest.raises(ValueError, match="Neuron 10 of layer 'hidden1' does not exist: it has 10"):
        SpikeRasterPlot(neurons=[10]).figures(net, x)
    with pytest.raises(ValueError, match="sort must be one of"):
        SpikeRasterPlot(sort="latency")


def test_views_leave_pyplot_and_the_backend_alone(tmp_path):
    """Every view renders on its own canvas, also into TensorBoard: the process's backend stays the
    one the user chose (notebook 02's figures after a view vanished when it switched to Agg) and no
    figure is left in pyplot's list."""
    from torch.utils.tensorboard import SummaryWriter

    from snn.training.monitoring.writer import write_figure

    previous = matplotlib.get_backend()
    matplotlib.use("svg")  # a backend the views would not choose themselves
    try:
        figures_before = plt.get_fignums()
        with SummaryWriter(str(tmp_path)) as writer:
            for kind in ("feed_forward", "conv", "recurrent"):
                net, x = model_and_input(kind)
                for tag, figure in SpikeRasterPlot(num_traces=2).figures(net, x, label=0).items():
                    assert figure.canvas.get_renderer() is not None  # rendered without pyplot
                    write_figure(writer, f"{kind}/{tag}", figure, 0)
        assert matplotlib.get_backend() == "svg"
        assert plt.get_fignums() == figures_before
    finally:
        matplotlib.use(previous)


def test_learnable_constants_are_named_in_the_trace_legend():
    """The traced neurons' own learned values: their spread is what learning them is for."""
    torch.manual_seed(0)
    net = SpikingClassifier((12,), 3, T=12, hidden=10, encoder={"kind": "constant", "scale": 8.0},
                            neuron={"kind": "adex", "learnable": ["tau_ada_inv", "adaptation_spike"]})
    layer = net.spiking_layers()["hidden1"]
    layer.tau_ada_inv = torch.linspace(1.0, 10.0, 10)  # tau_ada 1000 ms ... 100 ms
    x = torch.rand(1, 12)
    figure = SpikeRasterPlot(neurons=[0, 9]).figures(net, x)["neurons/voltage"]
    labels = [line.get_label() for line in lines(figure.axes[0], "#")]
    assert labels[0].startswith("#0: rate") and "τ_ada 1e+03 ms, a_spk 0.02" in labels[0]
    assert "τ_ada 100 ms, a_spk 0.02" in labels[1]


@pytest.mark.parametrize("kind", ["feed_forward", "conv", "recurrent", "many_classes"])
def test_voltage_view_legends_sit_beside_the_axes_and_cover_no_trace(kind):
    """On the rendered figure, every legend lies outside every axes (so over no trace) and inside
    the figure (not cut off), with learnable constants in its labels and 35 readout classes."""
    if kind == "many_classes":
        torch.manual_seed(0)
        net = SpikingClassifier((12,), 35, T=12, hidden=10, encoder={"kind": "constant", "scale": 8.0},
                                neuron={"kind": "adex", "learnable": ["tau_ada_inv", "adaptation_spike"]})
        x = torch.rand(1, 12)
    else:
        net, x = model_and_input(kind)
    figure = SpikeRasterPlot(num_traces=3).figures(net, x, label=1)["neurons/voltage"]
    renderer = figure.canvas.get_renderer()
    figure.canvas.draw()
    page = figure.bbox
    legends = [ax.get_legend() for ax in figure.axes]
    assert all(legend is not None for legend in legends)  # every axis explains its lines
    for legend in legends:
        box = legend.get_window_extent(renderer)
        assert page.x0 <= box.x0 and box.x1 <= page.x1 and page.y0 <= box.y0 and box.y1 <= page.y1
        for ax in figure.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), (legend.get_texts()[0].get_text(), ax.get_title())
