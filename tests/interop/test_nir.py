"""NIR export/import (snn.interop.nir): round trips through HDF5 files, norse's and snntorch's
importers, and the refusals (AdEx, layers without a NIR node)."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

nir = pytest.importorskip("nir")

import snn  # noqa: E402
from snn.interop import SpikingSequential  # noqa: E402
from snn.models import DECODERS, SpikingClassifier, SpikingConvClassifier  # noqa: E402
from snn.neurons import LI, LIF, LIFAdEx, LIFParameters, LIFRecurrent, LIParameters  # noqa: E402


def file_round_trip(graph, tmp_path):
    path = tmp_path / "net.nir"
    nir.write(path, graph)
    return snn.import_nir(nir.read(path))


def lif(dt=0.001, **params):
    return LIF(LIFParameters(**{"v_th": 0.3, **params}), dt=dt)


def test_import_snn_does_not_need_nir():
    code = ("import sys, snn, snn.neurons, snn.models, snn.interop; "
            "assert 'nir' not in sys.modules, 'nir imported'; snn.export_nir; "
            "assert 'nir' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.exactness
def test_sequential_round_trip_through_a_file_is_exact(tmp_path):
    torch.manual_seed(0)
    per_neuron = LIFParameters(v_th=torch.linspace(0.2, 0.5, 8), v_reset=-0.1, v_leak=0.05,
                               tau_mem_inv=torch.linspace(50.0, 150.0, 8), method="triangle",
                               alpha=3.0)
    net = SpikingSequential(
        nn.Linear(4, 8), LIF(per_neuron, learnable=["tau_syn_inv"], shape=(8,)),
        nn.Linear(8, 6, bias=False), LIFRecurrent(6, 5, LIFParameters(v_th=0.2)),
        nn.Linear(5, 2), LI(LIParameters(tau_syn_inv=300.0, tau_mem_inv=80.0)),
    )
    x = torch.rand(25, 3, 4) * 5  # [T, B, 4]
    graph = snn.export_nir(net, x[0])
    assert isinstance(graph.nodes["1"], nir.CubaLIF) and isinstance(graph.nodes["5"], nir.CubaLI)
    assert isinstance(graph.nodes["3"], nir.NIRGraph)  # the recurrent layer is a sub-graph
    imported = file_round_trip(graph, tmp_path)
    with torch.no_grad():
        assert torch.equal(imported(x), net(x))
        spikes = imported[:2](x)
    assert 0 < spikes.mean() < 1  # the comparison above saw spikes
    assert imported[1].surrogate == {"method": "triangle", "alpha": 3.0}
    assert torch.equal(imported[3].input_weights, net[3].input_weights)  # the Linear before it


def test_export_writes_the_units_norse_and_snntorch_read():
    dt = 0.002
    graph = snn.export_nir(SpikingSequential(nn.Linear(3, 2), LIF(LIFParameters(), dt=dt)),
                           torch.zeros(1, 3))
    node = graph.nodes["1"]
    assert node.tau_syn == pytest.approx([1 / 200.0] * 2) and node.tau_mem == pytest.approx([0.01] * 2)
    assert node.w_in == pytest.approx(node.tau_syn / dt) and (node.r == 1).all()
    assert graph.metadata["dt"] == dt


@pytest.mark.parametrize("model", ["dense", "conv"])
def test_classifier_round_trip_gives_the_same_logits(model, tmp_path):
    torch.manual_seed(1)
    neuron = {"kind": "lif", "v_th": 0.2}
    if model == "dense":
        net = SpikingClassifier((1, 6, 6), 3, T=10, conv=None, hidden=[12, 8], neuron=neuron)
    else:
        conv = {"channels": [4, 5], "kernel_size": 3, "norm": "none", "pool": "avg"}
        net = SpikingConvClassifier((1, 6, 6), 3, T=10, conv=conv, hidden=8, neuron=neuron,
                                    decoder="mean")
    net.eval()
    x = torch.rand(4, 1, 6, 6) * 3
    graph = snn.export_nir(net)
    assert graph.metadata["T"] == 10 and graph.metadata["decoder"] == net.decoder
    imported = file_round_trip(graph, tmp_path)
    with torch.no_grad():  # the graph runs on the encoded input; the decoder is applied after it
        logits = DECODERS[net.decoder](imported(net.encoder(x)))
        # Not bit for bit: the classifier runs its first layer once per image ([B, ...]), the graph
        # once per step ([T B, ...]), and BLAS may round the two shapes of product differently.
        torch.testing.assert_close(logits, net(x))


def test_batch_norm_is_folded_into_the_conv():
    torch.manual_seed(2)
    conv, norm = nn.Conv2d(2, 3, 3, padding="same"), nn.BatchNorm2d(3)
    norm.running_mean.uniform_(-0.5, 0.5), norm.running_var.uniform_(0.5, 2.0)
    norm.weight.data.uniform_(0.5, 2.0), norm.bias.data.uniform_(-0.5, 0.5)
    net = SpikingSequential(conv, norm, lif()).eval()
    x = torch.rand(1, 2, 2, 5, 5)
    imported = snn.import_nir(snn.export_nir(net, x[0]))
    assert [type(m) for m in imported] == [nn.Conv2d, LIF]
    with torch.no_grad():
        torch.testing.assert_close(imported[0](x[0]), norm(conv(x[0])))
    with pytest.raises(ValueError, match="model.eval()"):
        snn.export_nir(net.train(), x[0])


@pytest.mark.exactness
def test_sum_pooling_and_flatten_round_trip():
    net = SpikingSequential(nn.AvgPool2d(2, divisor_override=1), nn.Flatten(), nn.Linear(8, 2), LI())
    x = torch.rand(3, 2, 2, 4, 4)  # [T, B, C, H, W]
    graph = snn.export_nir(net, x[0])
    assert isinstance(graph.nodes["0"], nir.SumPool2d) and graph.nodes["1"].start_dim == -3
    # dims of one sample [2, 2, 2] as NIR reads them, counted from the end so that importers
    # which apply them to [B, 2, 2, 2] (norse, snntorch) keep the batch
    assert list(graph.nodes["1"].output_type["output"]) == [8]
    assert nn.Flatten(graph.nodes["1"].start_dim, graph.nodes["1"].end_dim)(x[0, :, :, :2, :2]).shape == (2, 8)
    with torch.no_grad():
        assert torch.equal(snn.import_nir(graph)(x), net(x))


def test_import_scales_the_input_by_r_w_in_dt_over_tau_syn():
    graph = snn.export_nir(SpikingSequential(lif()), torch.zeros(1, 4))
    graph.nodes["0"].w_in = graph.nodes["0"].w_in * 3.0  # three times the input current
    imported = snn.import_nir(graph)
    x = torch.rand(20, 2, 4)
    with torch.no_grad():
        assert torch.equal(imported(x), lif()(3.0 * x)[0])


def test_adex_is_refused_with_the_layer_name():
    net = SpikingClassifier((1, 4, 4), 2, T=4, conv=None, hidden=5, neuron={"kind": "adex"})
    with pytest.raises(ValueError, match=r"'spiking.hidden1' \(LIFAdEx\).*no adaptive neuron"):
        snn.export_nir(net)
    with pytest.raises(ValueError, match=r"'1' \(LIFAdEx\)"):
        snn.export_nir(SpikingSequential(nn.Linear(2, 2), LIFAdEx()), torch.zeros(1, 2))


def test_layers_without_a_nir_node_are_refused():
    with pytest.raises(ValueError, match=r"'1' \(ReLU\).*conv=null"):
        snn.export_nir(nn.Sequential(nn.Linear(2, 2), nn.ReLU()), torch.zeros(1, 2))
    net = SpikingClassifier((1, 8, 8), 2, T=4, conv={"channels": [2]}, neuron={"kind": "lif"})
    with pytest.raises(ValueError, match=r"'conv.0.2' \(ReLU\)"):
        snn.export_nir(net.eval())
    with pytest.raises(ValueError, match="sample_input"):
        snn.export_nir(nn.Sequential(nn.Linear(2, 2)))


def test_time_step_checks():
    net = SpikingSequential(nn.Linear(2, 2), lif())
    with pytest.raises(ValueError, match="differs from the neuron layers' dt"):
        snn.export_nir(net, torch.zeros(1, 2), dt=0.01)
    graph = snn.export_nir(net, torch.zeros(1, 2))
    graph.metadata = {}
    with pytest.raises(ValueError, match="dt=<seconds>"):
        snn.import_nir(graph)


def lif_network(dt):
    torch.manual_seed(3)
    p = LIFParameters(v_th=0.3, tau_syn_inv=200.0, tau_mem_inv=100.0)
    return SpikingSequential(nn.Linear(4, 8), LIF(p, dt=dt), nn.Linear(8, 6), LIF(p, dt=dt))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # nirtorch.load, under norse's from_nir
def test_norse_reads_our_graph_with_the_same_spikes():
    pytest.importorskip("norse")
    from norse.torch import from_nir

    net, x = lif_network(dt=0.001), torch.rand(40, 3, 4) * 5
    graph = snn.export_nir(net, x[0])
    module = from_nir(graph, dt=graph.metadata["dt"])  # norse takes dt (seconds) as an argument
    state, spikes = None, []
    with torch.no_grad():
        for x_t in x:
            z, state = module(x_t, state)
            spikes.append(z)
        ours = net(x)
    assert ours.sum() > 0 and torch.equal(torch.stack(spikes), ours)


class UserNetwork(nn.Module):
    """A user's own composition of our layers (not a Sequential): features, recurrence, head."""

    def __init__(self, head=None, pool=True, dt=0.001):
        super().__init__()
        p = LIFParameters(v_th=0.2)
        conv = nn.Conv2d(1, 3, 3, padding=1, stride=1 if pool else 2)
        self.features = SpikingSequential(conv, LIF(p, dt=dt), nn.AvgPool2d(2) if pool else
                                          nn.Identity(), nn.Flatten())
        self.project = nn.Linear(12, 8, bias=False)
        self.drop = nn.Dropout(0.2)
        self.recurrent = LIFRecurrent(8, 6, p, dt=dt, input_weights=torch.rand(6, 8) * 2)
        self.out = nn.Linear(6, 3)
        self.head = head if head is not None else LI(dt=dt)

    def forward(self, x):  # x [T, B, 1, 4, 4]
        z = self.features(x)
        z, _ = self.recurrent(self.drop(self.project(z)))
        v, _ = self.head(self.out(z))
        return v


def test_a_users_own_module_exports_by_tracing(tmp_path):
    torch.manual_seed(7)
    net = UserNetwork().eval()
    x = torch.rand(30, 3, 1, 4, 4) * 4
    graph = snn.export_nir(net, x[0])
    kinds = [type(graph.nodes[k]).__name__ for k in snn.interop.nir_import._chain(graph)]
    assert kinds == ["Conv2d", "CubaLIF", "AvgPool2d", "Flatten", "Linear", "Linear", "NIRGraph",
                     "Affine", "CubaLI"]  # (the recurrent layer's input weights are a Linear)
    imported = file_round_trip(graph, tmp_path)
    with torch.no_grad():
        assert torch.equal(imported(x), net(x))
        assert net.features(x).sum() > 0 and net.recurrent(net.project(net.features(x)))[0].sum() > 0
    # avg_pool="sum" folds within a chain of layers; this pool's next weights are another layer's
    with pytest.raises(ValueError, match=r"average pool 'features.2' has no Linear or Conv2d"):
        snn.export_nir(net, x[0], avg_pool="sum")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # nirtorch.load, under norse's from_nir
def test_norse_runs_a_users_module_at_batch_3():
    pytest.importorskip("norse")
    from norse.torch import from_nir

    torch.manual_seed(8)
    net = UserNetwork(head=LIF(LIFParameters(v_th=0.1)), pool=False).eval()  # norse: no AvgPool2d
    x = torch.rand(30, 3, 1, 4, 4) * 4
    graph = snn.export_nir(net, x[0])
    with torch.no_grad():
        ours = net(x)
    module = from_nir(graph, dt=graph.metadata["dt"])
    state, spikes = None, []
    with torch.no_grad():
        for x_t in x:
            z, state = module(x_t, state)
            spikes.append(z)
    assert ours.sum() > 0 and torch.equal(torch.stack(spikes), ours)


class Add(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.lif = nn.Linear(4, 3), nn.Linear(4, 3), LIF()

    def forward(self, x):
        return self.lif(self.a(x) + self.b(x))[0]


def test_traced_additions_become_two_edges_into_a_node():
    graph = snn.export_nir(Add(), torch.zeros(2, 4))
    assert sorted(a for a, b in graph.edges if b == "lif") == ["a", "b"]


class Bad(nn.Module):
    def __init__(self, layer, functional=None):
        super().__init__()
        self.fc, self.layer, self.functional = nn.Linear(4, 4), layer, functional

    def forward(self, x):
        x = self.fc(x)
        x = self.functional(x) if self.functional else x
        return self.layer(x)


def test_traced_modules_refuse_what_has_no_nir_node():
    with pytest.raises(ValueError, match=r"'layer' \(ReLU\)"):
        snn.export_nir(Bad(nn.ReLU()), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"'layer' \(LIFAdEx\).*no adaptive neuron"):
        snn.export_nir(Bad(LIFAdEx()), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"nirtorch's tracer says.*additions only"):
        snn.export_nir(Bad(LIF(), functional=torch.relu), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"'layer': Flatten.*time or batch dimension"):
        snn.export_nir(Bad(nn.Flatten()), torch.zeros(2, 4), dt=1e-3)
    with pytest.raises(ValueError, match="needs sample_input"):
        snn.export_nir(Bad(LIF()))


def test_the_nir_guide_example_runs(tmp_path, monkeypatch):
    """docs/guides/nir.md's example (its visible code cell; the docs build runs the page too)."""
    import re

    from tests.helpers import ROOT

    text = (ROOT / "docs" / "guides" / "nir.md").read_text()
    cells = re.findall(r"```\{code-cell\} ipython3\n(.*?)```", text, re.S)
    code = next(cell for cell in cells if "remove-cell" not in cell)
    monkeypatch.chdir(tmp_path)  # it writes net.nir
    exec(compile(code, "docs/guides/nir.md", "exec"), {})
    assert (tmp_path / "net.nir").exists()
