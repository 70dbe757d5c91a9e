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
import os
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


def _nodes(layers: list[tuple[str, nn.Module]], shape: tuple[int, ...], dt: float,
           sum_pools: bool = False):
    """NIR nodes for a chain of layers fed with one step of ``shape`` (with a batch of 1).

    ``sum_pools``: average pools become ``SumPool2d`` with their ``1 / (k_h k_w)`` folded into the
    weights of the next Linear or Conv2d (exact when ``k_h k_w`` is a power of two).
    Returns ``(nodes in order as (name, node), output shape without batch)``.
    """
    out: list[tuple[str, nir.NIRNode]] = []
    fold: tuple[str, float] | None = None  # (average pool, its divisor) waiting for weights

    def folded(node: nir.NIRNode) -> nir.NIRNode:
        nonlocal fold
        if fold is not None:
            node.weight = (node.weight * fold[1]).astype(node.weight.dtype)
            fold = None
        return node

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
            out.append((key, folded(node)))
            sample = m(sample)
        elif isinstance(m, nn.Conv2d):
            norm = nxt if isinstance(nxt, nn.BatchNorm2d) else None
            if norm is not None and (norm.training or not norm.track_running_stats):
                raise ValueError(f"Cannot fold BatchNorm2d {layers[i + 1][0]!r} into {name!r}: "
                                 "call model.eval() first (the running statistics are used).")
            out.append((key, folded(_conv_node(m, norm, tuple(sample.shape[1:])))))
            sample = m(sample)
            i += norm is not None  # the norm is folded in
        elif isinstance(m, nn.BatchNorm2d):
            raise ValueError(f"Layer {name!r}: a BatchNorm2d is exported only right after a Conv2d "
                             "(folded into it).")
        elif isinstance(m, nn.Flatten):
            if (m.start_dim, m.end_dim) != (1, -1):
                raise ValueError(f"Layer {name!r}: only nn.Flatten(1, -1) (all but the batch) is "
                                 "supported.")
            # dims counted from the end mean the same with or without a leading batch dimension:
            # NIR's are per sample, norse 1.1's and snntorch 1.0's importers hand them to
            # torch.nn.Flatten on [B, ...] unchanged (start_dim=0 would flatten the batch too)
            out.append((key, nir.Flatten(input_type={"input": np.array(sample.shape[1:])},
                                         start_dim=1 - sample.dim(), end_dim=-1)))
            sample = m(sample)
        elif isinstance(m, nn.AvgPool2d):
            k, s, p = (np.broadcast_to(np.asarray(v), (2,)).copy() for v in
                       (m.kernel_size, m.stride, m.padding))
            pool = nir.SumPool2d if m.divisor_override == 1 else nir.AvgPool2d
            if m.divisor_override not in (None, 1) or m.ceil_mode or \
                    (p.any() and not m.count_include_pad):
                raise ValueError(f"Layer {name!r}: only plain nn.AvgPool2d (or divisor_override=1,"
                                 " a sum pool) has a NIR node.")
            if sum_pools and pool is nir.AvgPool2d:
                pool, fold = nir.SumPool2d, (name, 1.0 / float(k[0] * k[1]))
            out.append((key, pool(kernel_size=k, stride=s, padding=p)))
            sample = m(sample)
        elif fold is not None and isinstance(m, LIFRecurrentCell | LIFCell | LICell):
            raise ValueError(f"avg_pool='sum': average pool {fold[0]!r} is followed by {name!r} "
                             "before any Linear or Conv2d to fold its 1/(k*k) into; export it with "
                             "avg_pool='avg'.")
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
    if fold is not None:
        raise ValueError(f"avg_pool='sum': average pool {fold[0]!r} has no Linear or Conv2d after "
                         "it to fold its 1/(k*k) into; export it with avg_pool='avg'.")
    return out, tuple(sample.shape[1:])


class _LeafMap(dict):
    """nirtorch's module map: our exporter for every layer type, our refusal for the rest."""

    LAYERS = (*EXPORTABLE, SpikingSequential, LIFAdExCell, LIFAdExRecurrentCell)

    def __init__(self, convert, names: dict[int, str]):
        super().__init__({t: convert for t in self.LAYERS})  # the keys are fx's leaf types
        self.convert, self.names = convert, names

    def __missing__(self, kind: type) -> Any:  # nirtorch looks layers up by their exact type
        if issubclass(kind, self.LAYERS):
            return self.convert

        def refuse(module: nn.Module) -> nir.NIRNode:
            raise _unsupported(self.names.get(id(module), kind.__name__), module)
        return refuse


def _traced(model: nn.Module, sample: torch.Tensor, dt: float | None) -> tuple[nir.NIRGraph, float]:
    """The graph of any ``nn.Module`` whose forward calls supported layers on ``[T, B, ...]``:
    traced with nirtorch (torch.fx), each layer converted by :func:`_nodes` at the shape it saw
    when the model ran one step of ``sample``; layers that become several nodes (a SpikingSequential
    inside, a LIFRecurrent: input weights + sub-graph) are spliced in as chains."""
    import nirtorch

    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    seen: dict[int, tuple[int, ...]] = {}  # id(module) -> shape of its input when the model ran

    def record(module: nn.Module, args: tuple) -> None:
        if args and isinstance(args[0], torch.Tensor):
            seen.setdefault(id(module), tuple(args[0].shape))

    hooks = [m.register_forward_pre_hook(record) for m in modules.values()]
    try:
        with torch.no_grad():
            out = model(sample.unsqueeze(0))  # [1, B, ...]: one time step, time-major
    finally:
        for h in hooks:
            h.remove()
    if isinstance(out, tuple):
        out = out[0]
    for name, m in modules.items():  # refuse what has no NIR node before anything is converted
        if id(m) in seen and (isinstance(m, LIFAdExCell | LIFAdExRecurrentCell) or (
                not any(m.children()) and not isinstance(m, EXPORTABLE))):
            raise _unsupported(name, m)
    leaves = [m for m in modules.values() if isinstance(m, (*EXPORTABLE, SpikingSequential))]
    layer_items = [(names[id(m)], m) for m in leaves]
    dt = _check_dt(layer_items, dt)
    spliced: dict[int, list[tuple[str, nir.NIRNode]]] = {}  # id(placeholder graph) -> chain

    def convert(m: nn.Module) -> nir.NIRNode:
        name = names[id(m)]
        if id(m) not in seen:
            raise ValueError(f"Layer {name!r} did not run when the model was called on "
                             "sample_input; export_nir follows the layers the forward pass uses.")
        shape = seen[id(m)]
        if isinstance(m, nn.Flatten):  # per-sample dims, counted from the end (see _nodes)
            # nirtorch traces no reshapes, so the input keeps its two leading dims [T, B]
            start, end = (d - len(shape) if d >= 0 else d for d in (m.start_dim, m.end_dim))
            if -start > len(shape) - 2:
                raise ValueError(f"Layer {name!r}: {m} flattens the time or batch dimension of "
                                 f"its input {list(shape)} ([T, B, ...]); only dimensions of one "
                                 "sample can be exported.")
            return nir.Flatten(input_type={"input": np.array(shape[2:])}, start_dim=start,
                               end_dim=end)
        if isinstance(m, SpikingSequential):
            chain = list(_sequential_layers(m))
            step = shape[2:]
        elif getattr(m, "time_major", False):  # neuron layers: [T, B, ...]
            chain, step = [("", m)], shape[2:]
        elif isinstance(m, nn.Linear):
            chain, step = [("", m)], shape[-1:]
        elif isinstance(m, nn.Conv2d | nn.AvgPool2d | nn.BatchNorm2d):
            chain, step = [("", m)], shape[-3:]
        else:  # cells [B, ...], Dropout, Identity
            chain, step = [("", m)], shape[1:]
        chain = [(f"{name}.{n}" if n else name, layer) for n, layer in chain]
        for n, layer in chain:
            if not isinstance(layer, EXPORTABLE) or isinstance(layer, LIFAdExCell):
                raise _unsupported(n, layer)
        nodes, _ = _nodes(chain, (1, *step), dt)
        if len(nodes) == 1 and not isinstance(m, SpikingSequential):
            return nodes[0][1]
        graph = nir.NIRGraph(nodes=dict(nodes), edges=[], type_check=False)
        spliced[id(graph)] = nodes
        return graph

    try:
        graph = nirtorch.torch_to_nir(model, _LeafMap(convert, names), default_dict=None,
                                      type_check=False, stateful_modules=_STATEFUL)
    except (torch.fx.proxy.TraceError, TypeError) as e:
        raise ValueError(f"Cannot trace {type(model).__name__}.forward ({e}): export_nir follows "
                         "forward passes that call layers on the whole sequence [T, B, ...] (no "
                         "loop over time, no branching on values).") from e
    except ValueError as e:
        if str(e).startswith(("Cannot export", "Layer ", "avg_pool")):
            raise
        raise ValueError(f"Cannot export {type(model).__name__}: nirtorch's tracer says: {e} "
                         "Between layers, export_nir follows additions only (NIR sums the inputs "
                         "of a node); other operations need a layer with a NIR node.") from e
    graph = _splice(graph, spliced)
    for node in graph.nodes.values():  # the types nirtorch could not know
        if isinstance(node, nir.Input):
            node.input_type = node.output_type = {"input": np.array(sample.shape[1:])}
        elif isinstance(node, nir.Output):
            node.input_type = node.output_type = {"output": np.array(out.shape[2:])}
    return graph, dt


_STATEFUL = {LIF, LI, LIFRecurrent, LIFCell, LICell, LIFRecurrentCell}


def _splice(graph: nir.NIRGraph, spliced: dict[int, list[tuple[str, nir.NIRNode]]]) -> nir.NIRGraph:
    """Replace each node that stands for several layers by the chain of their nodes."""
    nodes, edges = dict(graph.nodes), list(graph.edges)
    for key, node in list(nodes.items()):
        chain = spliced.get(id(node))
        if chain is None:
            continue
        del nodes[key]
        inner = [(k if k not in nodes else f"{key}_{k}", n) for k, n in chain]
        preds = [a for a, b in edges if b == key]
        succs = [b for a, b in edges if a == key]
        edges = [e for e in edges if key not in e]
        if not inner:  # nothing to compute (Dropout, Identity): connect around it
            edges += [(a, b) for a in preds for b in succs]
            continue
        nodes.update(inner)
        edges += [(a, inner[0][0]) for a in preds]
        edges += [(b[0], c[0]) for b, c in zip(inner[:-1], inner[1:], strict=True)]
        edges += [(inner[-1][0], b) for b in succs]
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def _voltages_in_tau_mem_over_dt(graph: nir.NIRGraph, dt: float) -> None:
    """``r = tau_mem / dt`` with every voltage scaled by the same factor: the same spikes in NIR's
    equations (the membrane equation is linear in v, r and the voltages), in snntorch's units."""
    for node in graph.nodes.values():
        if isinstance(node, nir.NIRGraph):
            _voltages_in_tau_mem_over_dt(node, dt)
        elif isinstance(node, nir.CubaLIF | nir.CubaLI):
            k = np.asarray(node.tau_mem, dtype=np.float64) / dt
            node.r, node.v_leak = node.r * k, node.v_leak * k
            if isinstance(node, nir.CubaLIF):
                node.v_threshold, node.v_reset = node.v_threshold * k, node.v_reset * k


def export_nir(model: nn.Module, sample_input: torch.Tensor | None = None,
               dt: float | None = None, r: float | str = 1, readout: bool = True,
               avg_pool: str = "avg") -> nir.NIRGraph:
    """The per-step NIR graph of ``model`` (see the module docstring for units and limits).

    Args:
        model: a ``SpikingClassifier`` (``conv=null``) or ``SpikingConvClassifier`` (average or no
            pooling), an ``nn.Sequential`` / ``SpikingSequential`` of supported layers, or any
            ``nn.Module`` whose forward calls supported layers on ``[T, B, ...]`` (traced).
        sample_input: one time step ``[B, ...]`` of the input; needed except for the classifiers
            (the shapes of the graph come from it; for them it is checked against ``input_shape``).
        dt: the time step in seconds; by default the neuron layers' own (a different value is an
            error: the layers integrate at their step).
        r: ``1`` (our voltages) or ``"tau_mem/dt"``: every voltage (``v_threshold``, ``v_reset``,
            ``v_leak``, the readout's ``v``) times ``tau_mem / dt`` and ``r = tau_mem / dt``, the
            same network in the units snntorch's importer accepts.
        readout: for the classifiers, ``False`` ends the graph at the readout's input current
            (the output layer), for importers that cannot read ``CubaLI`` (snntorch 1.0 refuses
            it, norse 1.1 leaves it out): run ``model.readout`` on what they give.
        avg_pool: ``"avg"`` (``AvgPool2d`` nodes) or ``"sum"``: ``SumPool2d`` nodes with the
            ``1 / (k_h k_w)`` folded into the next Linear or Conv2d, for importers without
            ``AvgPool2d`` (norse 1.1); exact for 2x2 (any power-of-two area) pools.
    """
    if avg_pool not in ("avg", "sum"):
        raise ValueError(f"avg_pool={avg_pool!r}: choose 'avg' or 'sum'.")
    if r not in (1, "tau_mem/dt"):
        raise ValueError(f"r={r!r}: choose 1 or 'tau_mem/dt'.")
    if isinstance(model, SpikingClassifier | SpikingConvClassifier):
        layers, shape = list(_classifier_layers(model)), (1, *model.input_shape)
        layers = layers if readout else layers[:-1]
        if sample_input is not None and tuple(sample_input.shape[1:]) != model.input_shape:
            raise ValueError(f"sample_input {list(sample_input.shape)} does not match the model's "
                             f"input [B, {', '.join(map(str, model.input_shape))}].")
        metadata = {"T": model.T, "decoder": model.decoder, "encoder": type(model.encoder).__name__,
                    "readout": "CubaLI" if readout else "left out: the output is its input current"}
    elif not readout:
        raise ValueError("readout=False is for SpikingClassifier and SpikingConvClassifier; export "
                         "another model without its last layer instead.")
    elif not isinstance(sample_input, torch.Tensor) or sample_input.dim() < 2:
        raise ValueError(f"Exporting a {type(model).__name__} needs sample_input: one time step "
                         "[B, ...] of its input (the shapes of the graph come from it).")
    elif isinstance(model, nn.Sequential):
        layers, shape, metadata = list(_sequential_layers(model)), (1, *sample_input.shape[1:]), {}
    else:
        if avg_pool != "avg":
            raise ValueError("avg_pool='sum' folds across layers, which export_nir does for "
                             "classifiers and Sequentials only; wrap the layers in a "
                             "SpikingSequential.")
        graph, dt = _traced(model, sample_input, dt)
        graph.metadata = {"dt": dt, "source": "snn"}
        if r != 1:
            _voltages_in_tau_mem_over_dt(graph, dt)
        return graph
    for name, module in layers:  # refuse what has no NIR node before anything is converted
        if not isinstance(module, EXPORTABLE) or isinstance(module, LIFAdExCell):
            raise _unsupported(name, module)
    dt = _check_dt(layers, dt)
    with torch.no_grad():
        chain, out_shape = _nodes(layers, shape, dt, sum_pools=avg_pool == "sum")
    nodes = {"input": nir.Input(input_type={"input": np.array(shape[1:])}), **dict(chain),
             "output": nir.Output(output_type={"output": np.array(out_shape)})}
    names = list(nodes)
    graph = nir.NIRGraph(nodes=nodes, edges=list(zip(names[:-1], names[1:], strict=True)),
                         metadata={"dt": dt, "source": "snn", **metadata}, type_check=False)
    if r != 1:
        _voltages_in_tau_mem_over_dt(graph, dt)
    return graph


# ---------------------------------------------------------------------------------------------
# Import: NIR file -> checked NIR graph -> SpikingSequential
# ---------------------------------------------------------------------------------------------

# Numeric fields of the nodes import_nir reads: each must be finite (taus also positive).
_FIELDS = ("weight", "bias", "scale", "tau", "tau_syn", "tau_mem", "r", "v_leak", "v_threshold",
           "v_reset", "w_in")
_TAUS = ("tau", "tau_syn", "tau_mem")


def _check_file(path: str, max_bytes: int) -> None:
    """Refuse a NIR (HDF5) file whose datasets declare more than ``max_bytes`` in all, from their
    shapes and dtypes alone (nothing is read), or that links to other files."""
    import h5py  # a dependency of nir

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable NIR (HDF5) file ({e}).") from e
    with f:
        sizes: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}
        external: list[tuple[str, str]] = []

        def visit(name: str, link: Any) -> None:  # no raising in here: h5py's C callback
            if isinstance(link, h5py.ExternalLink):
                external.append((name, link.filename))
            elif isinstance(link, h5py.HardLink) and isinstance(f[name], h5py.Dataset):
                d = f[name]
                sizes[name] = (tuple(d.shape), d.dtype, int(d.size) * d.dtype.itemsize)

        f.visititems_links(visit)
    if external:
        raise ValueError(f"{path}: {external[0][0]!r} links to another file ({external[0][1]}); "
                         "import_nir reads self-contained NIR files only.")
    total = sum(n for _, _, n in sizes.values())
    if total > max_bytes:
        name, (shape, dtype, n) = max(sizes.items(), key=lambda kv: kv[1][2])
        raise ValueError(
            f"{path}: the file declares {total / 2**20:.1f} MiB of arrays (largest: {name!r}, shape "
            f"{list(shape)} {dtype}, {n / 2**20:.1f} MiB), more than max_bytes={max_bytes} "
            f"({max_bytes / 2**20:.0f} MiB). Nothing was read. If the network really is this "
            f"large, pass import_nir(path, max_bytes=<bytes>) with a larger limit.")


def _check_values(graph: nir.NIRGraph, source: str, prefix: str = "") -> None:
    """Every numeric field of every node finite (time constants positive), named if not."""
    for key, node in graph.nodes.items():
        name = f"{prefix}{key}"
        if isinstance(node, nir.NIRGraph):
            _check_values(node, source, f"{name}.")
            continue
        for field in _FIELDS:
            value = getattr(node, field, None)
            if value is None or (field == "scale" and not isinstance(node, nir.Scale)):
                continue
            try:
                array = np.asarray(value, dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{source}: node {name!r} ({type(node).__name__}) field {field!r} "
                                 f"is not numeric ({e}).") from e
            if not np.isfinite(array).all():
                raise ValueError(f"{source}: node {name!r} ({type(node).__name__}) field {field!r} "
                                 f"has {int((~np.isfinite(array)).sum())} non-finite value(s) "
                                 "(NaN or inf); the graph cannot be simulated.")
            if field in _TAUS and not (array > 0).all():
                raise ValueError(f"{source}: node {name!r} ({type(node).__name__}) field {field!r} "
                                 "must be positive (a time constant in seconds).")


def _recurrent_subgraphs(graph: nir.NIRGraph) -> nir.NIRGraph:
    """A cycle ``neuron <-> Linear|Affine`` in the graph itself (as snntorch writes its recurrent
    layers) as one recurrent sub-graph node (as we write them), named after the neuron."""
    nodes, edges = dict(graph.nodes), [tuple(e) for e in graph.edges]
    for a, b in list(edges):
        if (b, a) not in edges or a not in nodes or b not in nodes or \
                not isinstance(nodes[a], nir.CubaLIF | nir.LIF) or \
                not isinstance(nodes[b], nir.Linear | nir.Affine) or \
                sum(b in e for e in edges) != 2:  # the weights feed back only: nothing else
            continue
        n = np.array([np.asarray(nodes[b].weight).shape[0]])
        nodes[a] = nir.NIRGraph(
            nodes={"input": nir.Input(input_type={"input": n}), "lif": nodes[a], "w_rec": nodes[b],
                   "output": nir.Output(output_type={"output": n})},
            edges=[("input", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")],
            type_check=False)
        del nodes[b]
        edges = [e for e in edges if b not in e]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=graph.metadata, type_check=False)


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


CONVENTIONS = ("nir", "norse")
_NEURONS = (nir.CubaLIF, nir.CubaLI, nir.LIF, nir.LI)


def _neuron(name: str, node: nir.NIRNode, dt: float, convention: str):
    """``(parameters, input scale or None)`` of a neuron node; see the module docstring.

    A node without a synapse (``LIF``, ``LI``) becomes our neuron with ``tau_syn_inv = 1 / dt``:
    its current then lasts exactly one step (``i' = i_j - i_j = 0``), so the membrane sees the
    step's input and nothing else, as in NIR's ``LIF``.
    """
    synapse = isinstance(node, nir.CubaLIF | nir.CubaLI)
    tau_mem, tau_syn = (node.tau_mem, node.tau_syn) if synapse else (node.tau, None)
    if convention == "norse":  # norse's to_nir writes tau = dt / tau_inv
        inv_mem = dt / _tensor(tau_mem)
        inv_syn = dt / _tensor(tau_syn) if synapse else torch.tensor(1.0 / dt)
        scale = _tensor(node.r) * (_tensor(node.w_in) if synapse else 1.0)
    else:
        for field, tau in (("tau_mem" if synapse else "tau", tau_mem), ("tau_syn", tau_syn)):
            if tau is not None and bool((_tensor(tau) < dt * (1 - 1e-6)).any()):
                raise ValueError(
                    f"Node {name!r} ({type(node).__name__}): {field} = {float(_tensor(tau).min()):.3g} s is "
                    f"shorter than dt = {dt:g} s, so explicit Euler at this step is unstable: this "
                    "is not a graph in seconds at this dt. norse 1.1's to_nir writes tau = dt / "
                    "tau_inv (5e-06 for tau_syn_inv = 200 at its default dt = 0.001): import such "
                    "a graph with import_nir(graph, dt=<the dt given to to_nir>, "
                    "convention='norse'). snntorch writes its graphs for dt = 1e-4 s. Otherwise "
                    "pass the dt the graph was simulated at.")
        inv_mem = 1.0 / _tensor(tau_mem)
        inv_syn = 1.0 / _tensor(tau_syn) if synapse else torch.tensor(1.0 / dt)
        scale = _tensor(node.r) * (_tensor(node.w_in) * dt / _tensor(tau_syn) if synapse else 1.0)
    common = dict(tau_syn_inv=_constant(inv_syn), tau_mem_inv=_constant(inv_mem),
                  v_leak=_constant(node.v_leak))
    if scale.numel() == 0 or torch.allclose(scale, torch.ones_like(scale), rtol=1e-9, atol=0.0):
        scale = None
    else:
        scale = _constant(scale)
    if isinstance(node, nir.CubaLI | nir.LI):
        return LIParameters(**common), scale
    meta = node.metadata or {}
    surrogate = {k: (str(meta[k]) if k == "method" else float(meta[k]))
                 for k in ("method", "alpha") if k in meta}
    return LIFParameters(**common, v_th=_constant(node.v_threshold),
                         v_reset=_constant(node.v_reset), **surrogate), scale


def _recurrent(name: str, graph: nir.NIRGraph, dt: float, convention: str,
               before: nn.Module | None):
    """A ``LIFRecurrent`` from a sub-graph ``input -> CubaLIF|LIF <-> Linear|Affine -> output``.

    A bias-free Linear just before it becomes its input weights (returns ``(layer, used_before)``);
    a recurrent bias is added to the bias of the Affine before it (the same current every step).
    """
    lifs = [k for k, n in graph.nodes.items() if isinstance(n, nir.CubaLIF | nir.LIF)]
    others = [k for k, n in graph.nodes.items() if not isinstance(n, nir.Input | nir.Output)]
    w_rec = [k for k in others if k not in lifs]
    if len(lifs) != 1 or len(w_rec) != 1 or \
            {(lifs[0], w_rec[0]), (w_rec[0], lifs[0])} - set(map(tuple, graph.edges)) or \
            not isinstance(graph.nodes[w_rec[0]], nir.Linear | nir.Affine):
        raise ValueError(f"Sub-graph {name!r}: import_nir reads recurrent sub-graphs of one CubaLIF "
                         "or LIF and one Linear or Affine (its recurrent weights); got nodes "
                         f"{ {k: type(n).__name__ for k, n in graph.nodes.items()} }.")
    lif, rec = graph.nodes[lifs[0]], graph.nodes[w_rec[0]]
    p, scale = _neuron(f"{name}.{lifs[0]}", lif, dt, convention)
    w_rec_t = _tensor(rec.weight).float()
    hidden = w_rec_t.shape[0]
    bias = _tensor(rec.bias).float() if isinstance(rec, nir.Affine) and np.any(rec.bias) else None
    has_bias = isinstance(before, nn.Linear) and before.bias is not None
    if bias is not None and not (has_bias and before.out_features == hidden):
        raise ValueError(f"Sub-graph {name!r}: its recurrent weights have a bias, which import_nir "
                         "folds into the bias of an Affine node right before the sub-graph; there "
                         "is none.")
    used = isinstance(before, nn.Linear) and before.bias is None and before.out_features == hidden
    w_in = before.weight.detach() if used else torch.eye(hidden)
    if bias is not None:
        with torch.no_grad():
            before.bias.add_(bias)
    if scale is not None:  # the synapse is linear: scaling its input scales both weight matrices
        column = scale.reshape(-1, 1).to(w_in.dtype)
        w_in, w_rec_t = w_in * column, w_rec_t * column
    layer = LIFRecurrent(w_in.shape[1], hidden, p, dt=dt,
                         autapses=bool(torch.diagonal(w_rec_t).any()), input_weights=w_in,
                         recurrent_weights=w_rec_t)
    return layer, used


def _module(name: str, node: nir.NIRNode, dt: float, convention: str) -> list[nn.Module]:
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
        start, end = (int(d) + 1 if d >= 0 else int(d) for d in (node.start_dim, node.end_dim))
        return [nn.Flatten(start, end)]
    if isinstance(node, nir.AvgPool2d | nir.SumPool2d):
        args = [tuple(int(v) for v in np.broadcast_to(a, (2,)))
                for a in (node.kernel_size, node.stride, node.padding)]
        divisor = 1 if isinstance(node, nir.SumPool2d) else None
        return [nn.AvgPool2d(*args, divisor_override=divisor)]
    if isinstance(node, nir.Scale):
        return [Scale(_tensor(node.scale).float())]
    if isinstance(node, _NEURONS):
        p, scale = _neuron(name, node, dt, convention)
        neuron = LI(p, dt=dt) if isinstance(p, LIParameters) else LIF(p, dt=dt)
        return ([] if scale is None else [Scale(scale)]) + [neuron]
    raise ValueError(f"Cannot import NIR node {name!r} ({type(node).__name__}): import_nir reads "
                     "Affine, Linear, Conv2d, Flatten, AvgPool2d, SumPool2d, Scale, CubaLIF, "
                     "CubaLI, LIF, LI and recurrent CubaLIF/LIF sub-graphs.")


DEFAULT_MAX_BYTES = 256 * 2**20


def import_nir(graph: nir.NIRGraph | str | os.PathLike, dt: float | None = None, *,
               convention: str = "nir", max_bytes: int = DEFAULT_MAX_BYTES) -> SpikingSequential:
    """A :class:`SpikingSequential` of our layers that runs ``graph`` on ``[T, B, ...]`` inputs.

    Args:
        graph: a ``nir.NIRGraph`` or the path of a NIR (HDF5) file.
        dt: the time step (seconds) to simulate at; by default the ``dt`` in ``graph.metadata``
            (graphs from :func:`export_nir` carry it; norse's and snntorch's do not).
        convention: how the time constants were written: ``"nir"`` (seconds, NIR's equations, what
            we and snntorch write) or ``"norse"`` (norse 1.1's ``to_nir``: ``tau = dt / tau_inv``,
            the input added to the current as it is); see the module docstring.
        max_bytes: a file whose arrays declare more bytes than this (from their shapes, before
            anything is read) is refused.
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"convention={convention!r}: choose one of {CONVENTIONS}.")
    source = "graph"
    if isinstance(graph, str | os.PathLike):
        source = str(graph)
        _check_file(source, max_bytes)
        graph = nir.read(source)
    _check_values(graph, source)
    if dt is None:
        dt = graph.metadata.get("dt") if isinstance(graph.metadata, dict) else None
        if dt is None:
            raise ValueError(f"{source}: the graph does not record its time step (metadata 'dt'): "
                             "pass import_nir(graph, dt=<seconds>), the step its author simulated "
                             "at (snntorch: 1e-4; norse: the dt given to to_nir, with "
                             "convention='norse').")
    dt = float(dt)
    if not math.isfinite(dt) or dt <= 0:
        raise ValueError(f"dt={dt}: the time step must be a positive number of seconds.")
    graph = _recurrent_subgraphs(graph)
    layers: list[nn.Module] = []
    for name in _chain(graph):
        node = graph.nodes[name]
        if isinstance(node, nir.NIRGraph):
            layer, used = _recurrent(name, node, dt, convention, layers[-1] if layers else None)
            if used:
                layers.pop()
            layers.append(layer)
        else:
            layers.extend(_module(name, node, dt, convention))
    return SpikingSequential(*layers)
