"""NIR graphs between snn and norse 1.1 / snntorch 1.0, in both directions, at batch > 1.

Our graphs in their importers (norse's ``from_nir``, snntorch's ``import_from_nir``) and their
exporters' graphs (norse's ``to_nir``, snntorch's ``export_to_nir``) in ``snn.import_nir``: spikes
equal on the same input. Where an importer does something else (norse leaves the ``CubaLI`` readout
out, snntorch refuses it and runs recurrent sub-graphs with other dynamics), the test pins exactly
that, as docs/guides/nir.md states it.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")
norse_torch = pytest.importorskip("norse.torch")
snntorch = pytest.importorskip("snntorch")

import snn  # noqa: E402
from snn.interop import SpikingSequential  # noqa: E402
from snn.models import DECODERS, SpikingClassifier, SpikingConvClassifier  # noqa: E402
from snn.neurons import LI, LIF, LIFParameters, LIFRecurrent  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # nirtorch.load (norse)


def stepwise(module, x):
    """Run a per-step module of norse or snntorch (``(out, state) = m(x_t, state)``) over ``x``."""
    state, out = None, []
    with torch.no_grad():
        for x_t in x:
            y, state = module(x_t, state)
            out.append(y)
    return torch.stack(out)


def trained_classifier(kind: str, dt: float = 1e-3):
    """A classifier after a few optimizer steps (weights no longer at their initial values)."""
    torch.manual_seed(4)
    neuron = {"kind": "lif", "v_th": 0.2}
    conv = {"channels": [4], "kernel_size": 3, "norm": "batch", "pool": "avg"}
    if kind == "dense":
        net = SpikingClassifier((1, 8, 8), 3, T=12, conv=None, hidden=[16, 12], neuron=neuron, dt=dt)
    elif kind == "conv":  # a conventional conv encoder without activation has NIR nodes
        net = SpikingClassifier((1, 8, 8), 3, T=12, conv={**conv, "activation": "none"},
                                hidden=[12], neuron=neuron, dt=dt)
    else:
        net = SpikingConvClassifier((1, 8, 8), 3, T=12, conv=conv, hidden=12, neuron=neuron, dt=dt)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 3, (8,))
    for _ in range(3):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net.eval()


def readout_input(net, x):
    """What the readout of our classifier receives: ``[T, B, classes]`` currents, and its voltages."""
    imported = snn.import_nir(snn.export_nir(net))
    with torch.no_grad():
        encoded = net.encoder(x)
        return imported[:-1](encoded), imported(encoded), encoded


# ---------------------------------------------------------------------------------------------
# Our graphs in norse's importer
# ---------------------------------------------------------------------------------------------

CLASSIFIERS = ["dense", "conv", "spiking-conv"]


def test_norse_reads_sum_pools_but_no_average_pools():
    from norse.torch.utils.import_nir import _import_norse_module

    two = np.array([2, 2])
    assert _import_norse_module(nir.AvgPool2d(two, two, np.array([0, 0]))) is None
    assert isinstance(_import_norse_module(nir.SumPool2d(two, two, np.array([0, 0]))), nn.LPPool2d)


def test_sum_pools_fold_the_average_into_the_next_weights_exactly():
    net = trained_classifier("spiking-conv")
    x = torch.rand(3, 1, 8, 8)
    graph = snn.export_nir(net, avg_pool="sum")
    assert any(isinstance(n, nir.SumPool2d) for n in graph.nodes.values())
    assert not any(isinstance(n, nir.AvgPool2d) for n in graph.nodes.values())
    with torch.no_grad():  # 2x2 pools: the 1/4 is a power of two, so the product is exact
        logits = DECODERS[net.decoder](snn.import_nir(graph)(net.encoder(x)))
        assert torch.equal(logits, net(x))
    conv = nn.Conv2d(1, 2, 3, padding=1)
    with pytest.raises(ValueError, match=r"average pool '2' is followed by '3'"):
        snn.export_nir(SpikingSequential(conv, LIF(), nn.AvgPool2d(2), LIF()),
                       torch.zeros(1, 1, 4, 4), avg_pool="sum")
    with pytest.raises(ValueError, match=r"average pool '2' has no Linear or Conv2d after it"):
        snn.export_nir(SpikingSequential(conv, LIF(), nn.AvgPool2d(2)), torch.zeros(1, 1, 4, 4),
                       avg_pool="sum")


@pytest.mark.parametrize("kind", CLASSIFIERS)
def test_norse_runs_our_classifier_at_batch_5_and_leaves_the_readout_out(kind):
    from norse.torch import from_nir

    net, x = trained_classifier(kind), torch.rand(5, 1, 8, 8) * 2
    graph = snn.export_nir(net, avg_pool="sum")  # norse 1.1 reads SumPool2d, not AvgPool2d
    module = from_nir(graph, dt=graph.metadata["dt"])
    current, voltages, encoded = readout_input(net, x)
    assert "readout" in graph.nodes and not hasattr(module, "readout")  # norse 1.1 maps no CubaLI
    out = stepwise(module, encoded)  # [T, 5, 3]: the readout's input current, not its voltage
    assert current.abs().sum() > 0
    # norse applies each Linear per step, we apply it to all steps at once: BLAS may round the two
    # products differently in the last bit
    torch.testing.assert_close(out, current, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # the readout run on norse's output gives our logits
        logits = DECODERS[net.decoder](net.readout(out)[0])
        torch.testing.assert_close(logits, net(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(net.readout(out)[0], voltages, rtol=1e-5, atol=1e-6)


def recurrent_network(dt=1e-3):
    torch.manual_seed(3)
    p = LIFParameters(v_th=0.3)
    recurrent = LIFRecurrent(6, 5, p, dt=dt, input_weights=torch.rand(5, 6) * 4,
                             recurrent_weights=torch.randn(5, 5) * 4)
    readout = nn.Linear(5, 3)
    readout.weight.data.mul_(4)
    return SpikingSequential(nn.Linear(4, 8), LIF(p, dt=dt), nn.Linear(8, 6, bias=False),
                             recurrent, readout, LIF(p, dt=dt))


def test_norse_runs_our_recurrent_network_with_the_same_spikes():
    from norse.torch import from_nir

    net, x = recurrent_network(), torch.rand(40, 3, 4) * 5
    graph = snn.export_nir(net, x[0])
    assert isinstance(graph.nodes["3"], nir.NIRGraph)
    with torch.no_grad():
        ours = net(x)
    hidden = net[:4](x)
    assert hidden.sum() > 20 and ours.sum() > 0  # the recurrent layer and the output spike
    assert torch.equal(stepwise(from_nir(graph, dt=1e-3), x), ours)


# ---------------------------------------------------------------------------------------------
# Our graphs in snntorch's importer (it fixes dt = 1e-4 s and wants r = tau_mem / dt)
# ---------------------------------------------------------------------------------------------

def snntorch_import(graph):
    from snntorch.import_nir import import_from_nir

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return import_from_nir(graph)


@pytest.mark.parametrize("kind", CLASSIFIERS)
def test_snntorch_runs_our_classifier_at_batch_5_without_the_readout(kind, capsys):
    net, x = trained_classifier(kind, dt=1e-4), torch.rand(5, 1, 8, 8) * 2
    with pytest.raises(ValueError, match="CubaLI"):  # snntorch 1.0 has no CubaLI mapping
        snntorch_import(snn.export_nir(net, r="tau_mem/dt"))
    with pytest.raises(AssertionError, match="r not supported"):  # and reads only r = tau_mem/dt
        snntorch_import(snn.export_nir(net, readout=False))
    graph = snn.export_nir(net, r="tau_mem/dt", readout=False)
    module = snntorch_import(graph)
    current, voltages, encoded = readout_input(net, x)
    out = stepwise(module, encoded)
    torch.testing.assert_close(out, current, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(net.readout(out)[0], voltages, rtol=1e-5, atol=1e-6)
    capsys.readouterr()  # snntorch prints its rescaling


def test_r_tau_mem_over_dt_is_the_same_network():
    net = recurrent_network(dt=1e-4)
    x = torch.rand(30, 2, 4) * 40
    graph = snn.export_nir(net, x[0], r="tau_mem/dt")
    lif = graph.nodes["1"]
    k = lif.tau_mem / 1e-4
    assert lif.r == pytest.approx(k) and lif.v_threshold == pytest.approx(0.3 * k)
    with torch.no_grad():  # back in our units (the input scale r * w_in * dt / tau_syn): same spikes
        torch.testing.assert_close(snn.import_nir(graph)(x), net(x))


def test_snntorch_runs_our_recurrent_network_with_the_same_spikes(capsys):
    """A fresh module per sequence: snntorch's imported neurons keep their state inside
    (``init_hidden``) whatever state the module is called with."""
    net, x = recurrent_network(dt=1e-4), torch.rand(40, 3, 4) * 200
    out = stepwise(snntorch_import(snn.export_nir(net, x[0], r="tau_mem/dt")), x)
    with torch.no_grad():
        ours = net(x)
        net[3].recurrent_weights.zero_()
        without_recurrence = net(x)
    assert ours.sum() > 0 and not torch.equal(ours, without_recurrence)  # the recurrence counts
    assert out.shape == (40, 3, 3) and torch.equal(out, ours)
    capsys.readouterr()


# ---------------------------------------------------------------------------------------------
# norse's graphs in our importer
# ---------------------------------------------------------------------------------------------

def norse_network(cell, readout=None):
    torch.manual_seed(5)
    p = getattr(norse_torch, cell.__name__.replace("Cell", "Parameters"))(v_th=torch.tensor(0.3))
    layers = [nn.Linear(4, 6), cell(p), nn.Linear(6, 3), readout() if readout else cell(p)]
    layers[2].weight.data.mul_(3)
    return norse_torch.SequentialState(*layers)


@pytest.mark.parametrize("cell", ["LIFCell", "LIFBoxCell"])
def test_norse_graphs_import_with_norse_spikes(cell, tmp_path):
    """norse's to_nir writes tau = dt / tau_inv (5e-6 s for tau_syn_inv = 200 at dt = 1e-3) and
    no dt; with convention='norse' the import fires exactly as norse does."""
    net = norse_network(getattr(norse_torch, cell))
    x = torch.rand(50, 4, 4) * 6
    graph = norse_torch.to_nir(net, x[0])
    node = graph.nodes["1"]
    assert isinstance(node, nir.CubaLIF if cell == "LIFCell" else nir.LIF)
    expected = stepwise(net, x)
    with pytest.raises(ValueError, match="convention='norse'"):  # read as seconds: refused
        snn.import_nir(graph, dt=1e-3)
    with pytest.raises(ValueError, match="dt=<seconds>"):  # no dt in its metadata
        snn.import_nir(graph, convention="norse")
    imported = snn.import_nir(graph, dt=1e-3, convention="norse")
    with torch.no_grad():
        spikes = imported(x)
        hidden = imported[:2](x)
    assert hidden.sum() > 20 and spikes.sum() > 0
    assert torch.equal(spikes, expected)
    # from a file too (its Input records norse's sample batch, which NIR's type check refuses;
    # nir.write cannot gzip norse's scalar parameters)
    nir.write(tmp_path / "norse.nir", graph, compression=None)
    with torch.no_grad():
        assert torch.equal(snn.import_nir(tmp_path / "norse.nir", dt=1e-3, convention="norse")(x), expected)


def test_norse_box_readout_imports_as_li_without_synapse():
    net = norse_network(norse_torch.LIFBoxCell, readout=norse_torch.LIBoxCell)
    x = torch.rand(50, 4, 4) * 6
    graph = norse_torch.to_nir(net, x[0])
    assert isinstance(graph.nodes["3"], nir.LI)
    imported = snn.import_nir(graph, dt=1e-3, convention="norse")
    with torch.no_grad():
        voltages = imported(x)
    assert isinstance(imported[-1], LI)
    torch.testing.assert_close(voltages, stepwise(net, x), rtol=1e-5, atol=1e-6)  # BLAS shapes


# ---------------------------------------------------------------------------------------------
# snntorch's graphs in our importer (snntorch writes for dt = 1e-4 s)
# ---------------------------------------------------------------------------------------------

def snntorch_network(kind):
    """An snntorch layer as its NIR graph describes it: reset to zero without delay (snntorch's
    defaults, reset by subtraction one step late, are not in the graph)."""
    torch.manual_seed(6)
    n = 5
    full = lambda v: torch.full((n,), v)  # noqa: E731 (snntorch exports per-neuron tensors)
    reset = {"reset_mechanism": "zero", "reset_delay": False, "init_hidden": True}
    layer = {
        "Leaky": lambda: snntorch.Leaky(beta=full(0.9), threshold=full(0.5), **reset),
        "Synaptic": lambda: snntorch.Synaptic(alpha=full(0.8), beta=full(0.9), threshold=full(0.5),
                                              **reset),
        "RLeaky": lambda: snntorch.RLeaky(beta=0.9, threshold=0.5, linear_features=n, **reset),
        "RSynaptic": lambda: snntorch.RSynaptic(alpha=0.8, beta=0.9, threshold=0.5,
                                                linear_features=n, **reset),
    }[kind]()
    return layer, nn.Sequential(nn.Linear(4, n), layer)


def snntorch_graph(seq):
    from snntorch.export_nir import export_to_nir

    layer = seq[1]
    if isinstance(layer, snntorch.RSynaptic):  # its forward with reset_delay=False fails (it reads
        layer.reset_delay = True                # the spike argument, None): export with the delay,
    graph = export_to_nir(seq, torch.zeros(4))  # which the graph does not record anyway
    layer.reset_delay = False
    return graph  # (snntorch 1.0 exports from an unbatched sample)


def stepwise_snntorch(seq, x):
    layer = seq[1]
    if isinstance(layer, snntorch.RSynaptic):  # what RSynaptic computes, with snntorch's Synaptic
        neuron = snntorch.Synaptic(alpha=layer.alpha, beta=layer.beta, threshold=layer.threshold,
                                   reset_mechanism="zero", reset_delay=False)
        spk, syn, mem, out = torch.zeros(x.shape[1], 5), None, None, []
        with torch.no_grad():
            for x_t in x:
                spk, syn, mem = neuron(seq[0](x_t) + layer.recurrent(spk), syn, mem)
                out.append(spk)
        return torch.stack(out)
    for m in seq.modules():
        if hasattr(m, "reset_mem"):
            m.reset_mem()
    with torch.no_grad():
        return torch.stack([seq(x_t) for x_t in x])


@pytest.mark.parametrize("kind", ["Leaky", "Synaptic", "RLeaky", "RSynaptic"])
def test_snntorch_graphs_import_with_snntorch_spikes(kind, capsys):
    _, seq = snntorch_network(kind)
    graph = snntorch_graph(seq)
    x = torch.rand(40, 3, 4) * 2
    expected = stepwise_snntorch(seq, x)
    assert expected.sum() > 20
    with pytest.raises(ValueError, match="1e-4"):
        snn.import_nir(graph)
    imported = snn.import_nir(graph, dt=1e-4)
    assert isinstance(imported[-1], LIFRecurrent if kind.startswith("R") else LIF)
    with torch.no_grad():
        assert torch.equal(imported(x), expected)
    capsys.readouterr()
