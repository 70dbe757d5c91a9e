r"""NIR (Neuromorphic Intermediate Representation) export and import: ``pip install -e ".[nir]"``.

``export_nir(model)`` writes the network as a ``nir.NIRGraph``; ``import_nir(graph)`` builds a
:class:`~snn.interop.sequential.SpikingSequential` of our layers that runs ``[T, B, ...]``.
``nir.write(path, graph)`` / ``nir.read(path)`` store a graph as HDF5.

What the graph holds
--------------------
A NIR graph describes one time step of the network; time is implicit. So the graph starts after the
input encoder (its input is what the encoder gives at one step: the image times ``scale`` for
constant-current coding) and ends at the readout voltages (the decoder, max or mean over time, is not
a NIR node). ``graph.metadata`` records ``dt`` and, for our classifiers, ``T``, the encoder and the
decoder, so the rest can be rebuilt. Layers map one to one:

==========================  =============================================================
ours                        NIR
==========================  =============================================================
``nn.Linear``               ``Affine`` (``Linear`` without bias)
``nn.Conv2d``               ``Conv2d``; a following eval-mode ``BatchNorm2d`` is folded in
``nn.Flatten`` (implicit)   ``Flatten`` with dims of one sample (no batch): ``start_dim=0``
``nn.AvgPool2d``            ``AvgPool2d`` (``SumPool2d`` when ``divisor_override=1``)
``LIF``                     ``CubaLIF``
``LI``                      ``CubaLI``
``LIFRecurrent``            ``Linear`` (input weights), then a sub-graph ``input -> CubaLIF ->
                            output`` with the recurrent edge ``CubaLIF -> Linear -> CubaLIF``
``nn.Dropout``              nothing (identity at inference)
==========================  =============================================================

Units and discretisation
------------------------
NIR's ``CubaLIF`` is :math:`\tau_{syn}\dot I = -I + w_{in} S`,
:math:`\tau_{mem}\dot v = v_{leak} - v + R I`. Its documentation speaks of milliseconds, but the
importers that consume it (norse 1.1 ``from_nir(graph, dt=...)``, snntorch 1.0
``import_from_nir``, which fixes ``dt = 1e-4``) read time constants in **seconds** and integrate
with explicit Euler at step ``dt``, the input :math:`S` being the value that arrives at one step:

.. math::
    I_t = I_{t-1} + \tfrac{\Delta t}{\tau_{syn}} (-I_{t-1} + w_{in} x_t), \qquad
    v_t = v_{t-1} + \tfrac{\Delta t}{\tau_{mem}} (v_{leak} - v_{t-1} + R I_t).

We write that reading: ``tau_syn = 1 / tau_syn_inv`` and ``tau_mem = 1 / tau_mem_inv`` in seconds,
``r = 1`` and ``w_in = tau_syn / dt``. With these values the Euler equations above are our
:func:`~snn.neurons.lif.lif_feed_forward_step` exactly (:math:`I_t` is our :math:`i_j`, the
current after the input jump), so norse's importer given the same ``dt`` reproduces our spikes
(for ``v_leak = v_reset = 0``: norse 1.1 resets to 0 whatever ``v_reset`` says and lets its
synapse leak towards ``v_leak`` too).
On import the general case is honoured: the input is scaled by ``r * w_in * dt / tau_syn`` (a
``Scale`` layer, left out when it is 1), which is exact because the synapse is linear.
snntorch's importer accepts only ``r = tau_mem / 1e-4`` and ``v_leak = 0``, resets to zero and
reads no ``CubaLI``: tests/interop/test_nir.py pins what it does with our graphs.

Surrogate gradients are not part of NIR: their name and steepness go into each node's metadata
(``method``, ``alpha``) and come back on import. Learnable neuron constants come back as fixed ones.

What cannot be exported
-----------------------
AdEx (:class:`~snn.neurons.adex.LIFAdEx`): NIR has no adaptive neuron. A sub-graph cannot stand in
for it either: the exponential upswing :math:`\Delta_T \exp((v - v_{th}) / \Delta_T)` and the
sub-threshold coupling :math:`a_{current}(v - v_{leak})` both need the membrane voltage of a spiking
neuron as a signal, and NIR's spiking nodes output only spikes (and no node computes ``exp``).
Only the spike-triggered jump of :math:`a` could be built (a ``CubaLI`` driven by the spikes), which
would not be the same neuron; export refuses rather than drop terms silently. ReLU and max pooling
(the conventional conv encoder of ``SpikingClassifier``) and GroupNorm have no NIR node either.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from snn.models import SpikingClassifier, SpikingConvClassifier
from snn.neurons import (
    LI,
    LIF,
    LICell,
    LIFAdExCell,
    LIFAdExRecurrentCell,
    LIFCell,
    LIFParameters,
    LIFRecurrent,
    LIFRecurrentCell,
    LIParameters,
)

from .sequential import Scale, SpikingSequential

__all__ = ["export_nir", "import_nir"]

SUPPORTED = ("nn.Linear, nn.Conv2d (+ BatchNorm2d), nn.Flatten, nn.AvgPool2d, nn.Dropout, "
             "nn.Identity, LIF, LI, LIFRecurrent")
# Layer types with a NIR node (BatchNorm2d only right after a Conv2d, folded into it).
EXPORTABLE = (nn.Dropout, nn.Identity, nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.Flatten,
              nn.AvgPool2d, LIFRecurrentCell, LIFCell, LICell)


# ---------------------------------------------------------------------------------------------
# Export: model -> chain of (name, module) -> NIR nodes
# ---------------------------------------------------------------------------------------------

def _classifier_layers(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The per-step layers of our classifiers in forward order (encoder and decoder excluded)."""
    if isinstance(model, SpikingConvClassifier):
        spiking = list(model.spiking.items())
        for i, (conv, pool) in enumerate(zip(model.convs, model.pools, strict=True)):
            yield from ((f"convs.{i}.{j}", m) for j, m in enumerate(conv))
            yield f"spiking.{spiking[i][0]}", spiking[i][1]
            yield f"pools.{i}", pool
        yield "flatten", nn.Flatten()
        yield "dropout", model.dropout
        yield "linear", model.linear
        yield f"spiking.{spiking[-1][0]}", spiking[-1][1]
    else:
        if not isinstance(model.conv, nn.Identity):
            for name, module in model.conv.named_modules():
                if not isinstance(module, nn.Sequential):
                    yield f"conv.{name}", module
        yield "flatten", nn.Flatten()
        yield "dropout", model.dropout
        for i, (linear, (name, layer)) in enumerate(zip(model.linear, model.spiking.items(),
                                                        strict=True)):
            yield f"linear.{i}", linear
            yield f"spiking.{name}", layer
    yield "output", model.output
    yield "readout", model.readout


def _sequential_layers(model: nn.Sequential, prefix: str = "") -> Iterator[tuple[str, nn.Module]]:
    for name, module in model.named_children():
        if isinstance(module, nn.Sequential) and not isinstance(module, SpikingSequential):
            yield from _sequential_layers(module, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", module


def _array(value: torch.Tensor | float, shape: tuple[int, ...]) -> np.ndarray:
    """A neuron constant (scalar or broadcastable tensor) as a float64 array of the neuron shape."""
    value = torch.as_tensor(value).detach().to("cpu", torch.float64).numpy()
    return np.broadcast_to(value, shape).copy()


def _neuron_constants(layer: nn.Module, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """The layer's parameters (learnable ones clamped as in its forward pass) at the neuron shape."""
    p = layer.neuron_parameters(torch.zeros((), dtype=torch.float64, device=layer.v_leak.device))
    return {name: _array(getattr(p, name), shape)
            for name in p._fields if name not in ("method", "alpha")}


def _cuba_node(layer: nn.Module, shape: tuple[int, ...], dt: float) -> nir.NIRNode:
    """``CubaLIF`` for a LIF layer, ``CubaLI`` for an LI layer (the module docstring's units)."""
    c = _neuron_constants(layer, shape)
    tau_syn, tau_mem = 1.0 / c["tau_syn_inv"], 1.0 / c["tau_mem_inv"]
    common = dict(tau_syn=tau_syn, tau_mem=tau_mem, r=np.ones(shape), v_leak=c["v_leak"],
                  w_in=tau_syn / dt)
    if "v_th" not in c:
        return nir.CubaLI(**common)
    return nir.CubaLIF(**common, v_threshold=c["v_th"], v_reset=c["v_reset"],
                       metadata={"method": layer.surrogate["method"],
                                 "alpha": float(layer.surrogate["alpha"])})


def _weights(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().to("cpu").numpy().copy()


def _conv_node(conv: nn.Conv2d, norm: nn.Module | None, in_shape: tuple[int, ...]) -> nir.Conv2d:
    """``Conv2d``, with an eval-mode ``BatchNorm2d`` after it folded into weight and bias."""
    weight = conv.weight.detach().double()
    bias = torch.zeros(conv.out_channels, dtype=torch.float64) if conv.bias is None \
        else conv.bias.detach().double()
    if norm is not None:  # y = gamma (conv(x) - mean) / sqrt(var + eps) + beta
        scale = norm.weight.detach().double() / torch.sqrt(norm.running_var.double() + norm.eps)
        weight = weight * scale[:, None, None, None]
        bias = (bias - norm.running_mean.double()) * scale + norm.bias.detach().double()
    dtype = conv.weight.dtype
    return nir.Conv2d(input_shape=tuple(in_shape[1:]), weight=_weights(weight.to(dtype)),
                      stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                      groups=conv.groups, bias=_weights(bias.to(dtype)))


def _unsupported(name: str, module: nn.Module) -> ValueError:
    kind = type(module).__name__
    if isinstance(module, LIFAdExCell | LIFAdExRecurrentCell):
        return ValueError(
            f"Cannot export layer {name!r} ({kind}) to NIR: NIR has no adaptive neuron, and no "
            "sub-graph of NIR nodes computes AdEx's exponential term or its voltage-driven "
            "adaptation (see snn.interop.nir). Export a LIF model instead (model=lif)."
        )
    hint = ""
    if isinstance(module, nn.ReLU | nn.GELU | nn.SiLU | nn.Tanh | nn.MaxPool2d | nn.GroupNorm):
        hint = (" NIR has no node for it: for SpikingClassifier use conv=null, for "
                "SpikingConvClassifier conv.pool=avg|none and conv.norm=batch|none.")
    return ValueError(f"Cannot export layer {name!r} ({kind}) to NIR.{hint} Supported: {SUPPORTED}.")


def _check_dt(layers: list[tuple[str, nn.Module]], dt: float | None) -> float:
    """The neurons' common time step; ``dt`` (if given) must equal it."""
    steps = {name: m.dt for name, m in layers if hasattr(m, "dt") and hasattr(m, "v_leak")}
    values = sorted(set(steps.values()))
    if len(values) > 1:
        raise ValueError(f"The neuron layers use different time steps {steps}; NIR graphs from "
                         "snn assume one dt (seconds).")
    if dt is not None and values and not math.isclose(dt, values[0]):
        raise ValueError(f"dt={dt} differs from the neuron layers' dt={values[0]}: the layers "
                         "integrate at their own step. Leave dt out or rebuild the model.")
    if dt is None and not values:
        raise ValueError("The model has no neuron layer to take dt from: pass dt=<seconds>.")
    return float(dt if dt is not None else values[0])


def _nodes(layers: list[tuple[str, nn.Module]], shape: tuple[int, ...], dt: float):
    """NIR nodes for a chain of layers fed with one step of ``shape`` (with a batch of 1).

    Returns ``(nodes in order as (name, node), output shape without batch)``.
    """
    out: list[tuple[str, nir.NIRNode]] = []
    sample = torch.zeros(shape)
    i = 0
    while i < len(layers):
        name, m = layers[i]
        key = name.replace(".", "_")  # dots would read as sub-module paths in torch.fx importers
        key = f"{key}_layer" if key in ("input", "output") else key  # the graph's own node names
        nxt = layers[i + 1][1] if i + 1 < len(layers) else None
        if isinstance(m, nn.Dropout | nn.Identity):
            pass
        elif isinstance(m, nn.Linear):
            node = nir.Affine(_weights(m.weight), _weights(m.bias)) if m.bias is not None \
                else nir.Linear(_weights(m.weight))
            out.append((key, node))
            sample = m(sample)
        elif isinstance(m, nn.Conv2d):
            norm = nxt if isinstance(nxt, nn.BatchNorm2d) else None
            if norm is not None and (norm.training or not norm.track_running_stats):
                raise ValueError(f"Cannot fold BatchNorm2d {layers[i + 1][0]!r} into {name!r}: "
                                 "call model.eval() first (the running statistics are used).")
            out.append((key, _conv_node(m, norm, tuple(sample.shape[1:]))))
            sample = m(sample)
            i += norm is not None  # the norm is folded in
        elif isinstance(m, nn.BatchNorm2d):
            raise ValueError(f"Layer {name!r}: a BatchNorm2d is exported only right after a Conv2d "
                             "(folded into it).")
        elif isinstance(m, nn.Flatten):
            if (m.start_dim, m.end_dim) != (1, -1):
                raise ValueError(f"Layer {name!r}: only nn.Flatten(1, -1) (all but the batch) is "
                                 "supported.")
            out.append((key, nir.Flatten(input_type={"input": np.array(sample.shape[1:])},
                                         start_dim=0, end_dim=-1)))
            sample = m(sample)
        elif isinstance(m, nn.AvgPool2d):
            k, s, p = (np.broadcast_to(np.asarray(v), (2,)).copy() for v in
                       (m.kernel_size, m.stride, m.padding))
            pool = nir.SumPool2d if m.divisor_override == 1 else nir.AvgPool2d
            if m.divisor_override not in (None, 1) or m.ceil_mode or \
                    (p.any() and not m.count_include_pad):
                raise ValueError(f"Layer {name!r}: only plain nn.AvgPool2d (or divisor_override=1,"
                                 " a sum pool) has a NIR node.")
            out.append((key, pool(kernel_size=k, stride=s, padding=p)))
            sample = m(sample)
        elif isinstance(m, LIFRecurrentCell):
            hidden = (m.hidden_size,)
            out.append((f"{key}_w_in", nir.Linear(_weights(m.input_weights))))
            sub = {"input": nir.Input(input_type={"input": np.array(hidden)}),
                   "lif": _cuba_node(m, hidden, dt),
                   "w_rec": nir.Linear(_weights(m.effective_recurrent_weights())),
                   "output": nir.Output(output_type={"output": np.array(hidden)})}
            edges = [("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")]
            out.append((key, nir.NIRGraph(nodes=sub, edges=edges, type_check=False)))
            sample = sample.new_zeros(1, *hidden)
        elif isinstance(m, LIFCell | LICell):
            out.append((key, _cuba_node(m, tuple(sample.shape[1:]), dt)))
        else:
            raise _unsupported(name, m)
        i += 1
    return out, tuple(sample.shape[1:])


def export_nir(model: nn.Module, sample_input: torch.Tensor | None = None,
               dt: float | None = None) -> nir.NIRGraph:
    """The per-step NIR graph of ``model`` (see the module docstring for units and limits).

    Args:
        model: a ``SpikingClassifier`` (``conv=null``) or ``SpikingConvClassifier`` (average or no
            pooling), or an ``nn.Sequential`` / ``SpikingSequential`` of supported layers.
        sample_input: one time step ``[B, ...]`` of the input; needed for a Sequential (it gives
            the shapes), optional for the classifiers (checked against their ``input_shape``).
        dt: the time step in seconds; by default the neuron layers' own (a different value is an
            error: the layers integrate at their step).
    """
    if isinstance(model, SpikingClassifier | SpikingConvClassifier):
        layers, shape = list(_classifier_layers(model)), (1, *model.input_shape)
        if sample_input is not None and tuple(sample_input.shape[1:]) != model.input_shape:
            raise ValueError(f"sample_input {list(sample_input.shape)} does not match the model's "
                             f"input [B, {', '.join(map(str, model.input_shape))}].")
        metadata = {"T": model.T, "decoder": model.decoder, "encoder": type(model.encoder).__name__}
    elif isinstance(model, nn.Sequential):
        if not isinstance(sample_input, torch.Tensor) or sample_input.dim() < 2:
            raise ValueError("Exporting a Sequential needs sample_input: one time step [B, ...] "
                             "of its input (the shapes of the graph come from it).")
        layers, shape, metadata = list(_sequential_layers(model)), (1, *sample_input.shape[1:]), {}
    else:
        raise ValueError(f"export_nir takes SpikingClassifier, SpikingConvClassifier or an "
                         f"nn.Sequential of {SUPPORTED}; got {type(model).__name__}.")
    for name, module in layers:  # refuse what has no NIR node before anything is converted
        if not isinstance(module, EXPORTABLE) or isinstance(module, LIFAdExCell):
            raise _unsupported(name, module)
    dt = _check_dt(layers, dt)
    with torch.no_grad():
        chain, out_shape = _nodes(layers, shape, dt)
    nodes = {"input": nir.Input(input_type={"input": np.array(shape[1:])}), **dict(chain),
             "output": nir.Output(output_type={"output": np.array(out_shape)})}
    names = list(nodes)
    return nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:], strict=True)),
                        metadata={"dt": dt, "source": "snn", **metadata}, type_check=False)


# ---------------------------------------------------------------------------------------------
# Import: NIR graph -> SpikingSequential
# ---------------------------------------------------------------------------------------------

def _chain(graph: nir.NIRGraph) -> list[str]:
    """The node names from the Input to the Output of a graph that is a single chain."""
    succ: dict[str, list[str]] = {}
    for a, b in graph.edges:
        succ.setdefault(a, []).append(b)
    inputs = list(graph.inputs)
    if len(inputs) != 1:
        raise ValueError(f"import_nir needs a graph with one Input node, got {inputs}.")
    order = [inputs[0]]
    while not isinstance(graph.nodes[order[-1]], nir.Output):
        nxt = succ.get(order[-1], [])
        if len(nxt) != 1 or nxt[0] in order:
            raise ValueError(f"import_nir supports chains of nodes (and recurrent sub-graphs); node "
                             f"{order[-1]!r} leads to {nxt}.")
        order.append(nxt[0])
    return order[1:-1]


def _tensor(value: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(value, dtype=np.float64))


def _constant(value: Any) -> torch.Tensor:
    """A per-neuron array as one scalar when all its values are equal (as our configs write it)."""
    t = _tensor(value)
    return t.flatten()[0].clone() if t.numel() and bool((t == t.flatten()[0]).all()) else t


def _input_scale(node: nir.NIRNode, dt: float) -> torch.Tensor | None:
    """``r * w_in * dt / tau_syn``: what one step's input adds to our current ``i`` (None if 1)."""
    k = _tensor(node.r) * _tensor(node.w_in) * dt / _tensor(node.tau_syn)
    return None if torch.allclose(k, torch.ones_like(k), rtol=1e-9, atol=0.0) else _constant(k)


def _parameters(node: nir.NIRNode) -> LIFParameters | LIParameters:
    """Our parameters of a ``CubaLIF`` or ``CubaLI`` node (surrogate from its metadata if any)."""
    common = dict(tau_syn_inv=1.0 / _constant(node.tau_syn),
                  tau_mem_inv=1.0 / _constant(node.tau_mem), v_leak=_constant(node.v_leak))
    if isinstance(node, nir.CubaLI):
        return LIParameters(**common)
    meta = node.metadata or {}
    surrogate = {k: (str(meta[k]) if k == "method" else float(meta[k]))
                 for k in ("method", "alpha") if k in meta}
    return LIFParameters(**common, v_th=_constant(node.v_threshold),
                         v_reset=_constant(node.v_reset), **surrogate)


def _recurrent(name: str, graph: nir.NIRGraph, dt: float, before: nn.Module | None):
    """A ``LIFRecurrent`` from a sub-graph ``input -> CubaLIF <-> Linear``, ``CubaLIF -> output``.

    A bias-free Linear just before it becomes its input weights; returns ``(layer, used_before)``.
    """
    lifs = [k for k, n in graph.nodes.items() if isinstance(n, nir.CubaLIF)]
    others = [k for k, n in graph.nodes.items() if not isinstance(n, nir.Input | nir.Output)]
    w_rec = [k for k in others if k not in lifs]
    if len(lifs) != 1 or len(w_rec) != 1 or \
            {(lifs[0], w_rec[0]), (w_rec[0], lifs[0])} - set(map(tuple, graph.edges)) or \
            not isinstance(graph.nodes[w_rec[0]], nir.Linear | nir.Affine):
        raise ValueError(f"Sub-graph {name!r}: import_nir reads recurrent sub-graphs of one CubaLIF "
                         "and one Linear (its recurrent weights); got nodes "
                         f"{ {k: type(n).__name__ for k, n in graph.nodes.items()} }.")
    lif, rec = graph.nodes[lifs[0]], graph.nodes[w_rec[0]]
    if isinstance(rec, nir.Affine) and np.any(rec.bias):
        raise ValueError(f"Sub-graph {name!r}: recurrent weights with a bias are not supported.")
    w_rec_t = _tensor(rec.weight).float()
    hidden = w_rec_t.shape[0]
    used = isinstance(before, nn.Linear) and before.bias is None and before.out_features == hidden
    w_in = before.weight.detach() if used else torch.eye(hidden)
    scale = _input_scale(lif, dt)
    if scale is not None:  # the synapse is linear: scaling its input scales both weight matrices
        column = scale.reshape(-1, 1).to(w_in.dtype)
        w_in, w_rec_t = w_in * column, w_rec_t * column
    layer = LIFRecurrent(w_in.shape[1], hidden, _parameters(lif), dt=dt,
                         autapses=bool(torch.diagonal(w_rec_t).any()), input_weights=w_in,
                         recurrent_weights=w_rec_t)
    return layer, used


def _module(name: str, node: nir.NIRNode, dt: float) -> list[nn.Module]:
    """Our layer(s) for one NIR node (a Scale layer first when a neuron's input is scaled)."""
    if isinstance(node, nir.Affine | nir.Linear):
        weight = _tensor(node.weight).float()
        bias = getattr(node, "bias", None)
        linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
        linear.weight.data.copy_(weight)
        if bias is not None:
            linear.bias.data.copy_(_tensor(bias))
        return [linear]
    if isinstance(node, nir.Conv2d):
        weight = _tensor(node.weight).float()
        padding = node.padding if isinstance(node.padding, str) else tuple(int(p) for p in node.padding)
        conv = nn.Conv2d(weight.shape[1] * node.groups, weight.shape[0], tuple(weight.shape[2:]),
                         stride=tuple(int(s) for s in node.stride), padding=padding,
                         dilation=tuple(int(d) for d in node.dilation), groups=int(node.groups))
        conv.weight.data.copy_(weight)
        conv.bias.data.copy_(_tensor(node.bias))
        return [conv]
    if isinstance(node, nir.Flatten):  # NIR's dims count from the sample, ours from the batch
        end = node.end_dim + 1 if node.end_dim >= 0 else node.end_dim
        return [nn.Flatten(node.start_dim + 1, end)]
    if isinstance(node, nir.AvgPool2d | nir.SumPool2d):
        args = [tuple(int(v) for v in np.broadcast_to(a, (2,)))
                for a in (node.kernel_size, node.stride, node.padding)]
        divisor = 1 if isinstance(node, nir.SumPool2d) else None
        return [nn.AvgPool2d(*args, divisor_override=divisor)]
    if isinstance(node, nir.Scale):
        return [Scale(_tensor(node.scale).float())]
    if isinstance(node, nir.CubaLIF | nir.CubaLI):
        scale = _input_scale(node, dt)
        p = _parameters(node)
        neuron = LI(p, dt=dt) if isinstance(p, LIParameters) else LIF(p, dt=dt)
        return ([] if scale is None else [Scale(scale)]) + [neuron]
    raise ValueError(f"Cannot import NIR node {name!r} ({type(node).__name__}): import_nir reads "
                     "Affine, Linear, Conv2d, Flatten, AvgPool2d, SumPool2d, Scale, CubaLIF, "
                     "CubaLI and recurrent CubaLIF sub-graphs.")


def import_nir(graph: nir.NIRGraph | str, dt: float | None = None) -> SpikingSequential:
    """A :class:`SpikingSequential` of our layers that runs ``graph`` on ``[T, B, ...]`` inputs.

    Args:
        graph: a ``nir.NIRGraph`` or the path of a NIR (HDF5) file.
        dt: the time step (seconds) to simulate at; by default the ``dt`` in ``graph.metadata``
            (graphs from :func:`export_nir` carry it).
    """
    if isinstance(graph, str):
        graph = nir.read(graph)
    if dt is None:
        dt = graph.metadata.get("dt") if isinstance(graph.metadata, dict) else None
        if dt is None:
            raise ValueError("The graph does not record its time step (metadata 'dt'): pass "
                             "import_nir(graph, dt=<seconds>), the step its author simulated at.")
    dt = float(dt)
    layers: list[nn.Module] = []
    for name in _chain(graph):
        node = graph.nodes[name]
        if isinstance(node, nir.NIRGraph):
            layer, used = _recurrent(name, node, dt, layers[-1] if layers else None)
            if used:
                layers.pop()
            layers.append(layer)
        else:
            layers.extend(_module(name, node, dt))
    return SpikingSequential(*layers)
