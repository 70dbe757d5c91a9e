"""NIR import: a (checked) NIR file or graph -> SpikingSequential (see :mod:`snn.interop.nir`)."""

from __future__ import annotations

import math
import os
from typing import Any

import nir
import numpy as np
import torch
from torch import nn

from snn.hdf5_structure import structure_problem
from snn.neurons import LI, LIF, LIFParameters, LIFRecurrent, LIParameters

from .sequential import Scale, SpikingSequential

__all__ = ["import_nir"]


# ---------------------------------------------------------------------------------------------
# Import: NIR file -> checked NIR graph -> SpikingSequential
# ---------------------------------------------------------------------------------------------

# Numeric fields of the nodes import_nir reads: each must be finite (taus also positive).
_FIELDS = ("weight", "bias", "scale", "tau", "tau_syn", "tau_mem", "r", "v_leak", "v_threshold",
           "v_reset", "w_in")
_TAUS = ("tau", "tau_syn", "tau_mem")
_NEURONS = (nir.CubaLIF, nir.CubaLI, nir.LIF, nir.LI)


def _check_file(path: str, max_bytes: int) -> None:
    """Refuse a NIR (HDF5) file that reads outside itself or loops (:mod:`snn.hdf5_structure`:
    external links and raw storage, virtual datasets, soft links to groups, hard-link cycles), or whose
    datasets declare more than ``max_bytes`` in all, from their shapes and dtypes alone (nothing is
    read)."""
    import h5py  # a dependency of nir

    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(f"{path}: not a readable NIR (HDF5) file ({e}).") from e
    with f:
        problem = structure_problem(f)
        if problem:
            raise ValueError(f"{path}: {problem}. import_nir reads self-contained NIR files only; nothing "
                             "was read.")
        sizes: dict[str, tuple[tuple[int, ...], np.dtype, int]] = {}

        def visit(name: str, link: Any) -> None:  # no raising in here: h5py's C callback
            if isinstance(link, h5py.HardLink) and isinstance(f[name], h5py.Dataset):
                d = f[name]
                sizes[name] = (tuple(d.shape), d.dtype, int(d.size) * d.dtype.itemsize)

        f.visititems_links(visit)
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
        shapes = {}
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
            shapes[field] = array.shape
        if isinstance(node, _NEURONS):  # per-neuron fields: one shape (or scalars), no outer products
            try:
                common = np.broadcast_shapes(*shapes.values())
            except ValueError:
                common = None
            if common is None or math.prod(common) > max(math.prod(v) for v in shapes.values()):
                raise ValueError(f"{source}: node {name!r} ({type(node).__name__}) has per-neuron "
                                 f"fields of different shapes {shapes}; each must have the neuron "
                                 "shape or be a scalar.")


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
        try:  # NIR's type check would refuse graphs that record a batch in their Input (norse's)
            graph = nir.read(source, type_check=False)
        except (AssertionError, KeyError, ValueError, TypeError) as e:  # nir's own checks assert
            raise ValueError(f"{source}: not a NIR graph that nir {nir.version} can read "
                             f"({type(e).__name__}: {e}).") from e
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
