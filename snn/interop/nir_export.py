"""NIR export: our layers -> NIR nodes (see :mod:`snn.interop.nir` for the mapping and units)."""

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
    LIFRecurrent,
    LIFRecurrentCell,
)

from .sequential import SpikingSequential

__all__ = ["export_nir"]

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
    """The layer's parameters (learnable ones as its forward pass computes them) at the neuron shape."""
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


# Layers that return (output, state): nirtorch follows their output [0] and drops the state.
_STATEFUL = {LIF, LI, LIFRecurrent, LIFCell, LICell, LIFRecurrentCell}


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


def _traced(model: nn.Module, sample: torch.Tensor, dt: float | None,
            sum_pools: bool) -> tuple[nir.NIRGraph, float]:
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
        nodes, _ = _nodes(chain, (1, *step), dt, sum_pools)  # folds within a SpikingSequential
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
        graph, dt = _traced(model, sample_input, dt, sum_pools=avg_pool == "sum")
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
