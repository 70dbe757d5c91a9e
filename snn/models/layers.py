"""The neuron kinds a model can use, and the one place where models build their spiking layers
(feed-forward or recurrent) and their LI readouts from config values.

Adding a neuron kind to the models: a row in ``NEURONS`` with its parameter NamedTuple and its
feed-forward and recurrent layer classes (from :mod:`snn.neurons`); configs then name it as
``model.neuron.kind`` (a ``conf/model/neuron/<kind>.yaml`` holds its defaults).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from torch import nn

from snn.neurons import (
    LI,
    LIF,
    LIFAdEx,
    LIFAdExParameters,
    LIFAdExRecurrent,
    LIFParameters,
    LIFRecurrent,
    LIParameters,
)


class NeuronKind(NamedTuple):
    parameters: type  # the NamedTuple of the kind's constants
    feedforward: type[nn.Module]  # [T, B, ...] -> (spikes, state)
    recurrent: type[nn.Module]  # (input_size, hidden_size, p, ...): [T, B, F] -> (spikes [T, B, N], state)


NEURONS: dict[str, NeuronKind] = {
    "adex": NeuronKind(LIFAdExParameters, LIFAdEx, LIFAdExRecurrent),
    "lif": NeuronKind(LIFParameters, LIF, LIFRecurrent),
}


def parameters_from_config(cls: type, params: Mapping[str, Any], where: str, hint: str = ""):
    """``cls(**params)`` with a clear error for unknown fields or non-positive rates."""
    unknown = sorted(set(params) - set(cls._fields))
    if unknown:
        raise ValueError(f"{where}: {cls.__name__} has no field(s) {unknown}; valid: {list(cls._fields)}.{hint}")
    for name, value in params.items():
        if name.endswith("_inv") and isinstance(value, int | float) and not value > 0:
            raise ValueError(f"{where}: {name} (an inverse time constant, 1/s) must be > 0, got {value!r}.")
    return cls(**params)


def learnable_names(learnable: str | Sequence[str] | None) -> tuple[str, ...]:
    """``learnable`` as a tuple of field names: a single name (``learnable=tau_mem_inv`` on the command
    line) is one name, never iterated character by character."""
    if learnable is None:
        return ()
    return (learnable,) if isinstance(learnable, str) else tuple(learnable)


def make_neurons(
    kind: str = "adex",
    dt: float = 0.001,
    shape: Sequence[int] | None = None,
    learnable: str | Sequence[str] = (),
    backend: str = "auto",
    recurrent_inputs: int | None = None,
    autapses: bool = False,
    **params: Any,
) -> nn.Module:
    """A spiking layer of ``kind`` (a key of ``NEURONS``): feed-forward ``[T, B, ...] -> (spikes,
    state)``, or with ``recurrent_inputs`` a recurrent population of ``shape = (N,)`` neurons fed by
    that many inputs, ``[T, B, recurrent_inputs] -> (spikes [T, B, N], state)`` (``autapses``: self-
    connections in its recurrent weights).

    ``params`` are fields of the kind's parameter NamedTuple (tau_mem_inv, v_th, method, alpha...);
    ``shape`` makes the ``learnable`` ones per neuron (a recurrent population's always are).
    """
    if kind not in NEURONS:
        raise ValueError(f"Unknown neuron kind {kind!r}; choose one of {sorted(NEURONS)}.")
    row = NEURONS[kind]
    hint = f" (use model={'rlif' if recurrent_inputs else 'lif'} for LIF neurons)" if kind == "lif" else ""
    p = parameters_from_config(row.parameters, params, f"neuron kind {kind!r}", hint)
    if recurrent_inputs is None:
        return row.feedforward(p, dt=dt, learnable=learnable_names(learnable), shape=shape, backend=backend)
    if shape is None or len(shape) != 1:
        raise ValueError(f"A recurrent population has shape (N,), got {shape!r}.")
    return row.recurrent(recurrent_inputs, shape[0], p, dt=dt, autapses=autapses, learnable=learnable_names(learnable),
                         backend=backend)


def readout_settings(readout: Mapping[str, Any] | None, neuron_backend: str) -> tuple[LIParameters, tuple, str]:
    """The LI readout's parameters, learnable constants and backend from a model's ``readout``
    config (LI parameters plus optional ``learnable`` and ``backend``). A ``backend`` of None runs
    the readout's time loop on the spiking layers' backend, ``neuron_backend``."""
    readout = dict(readout or {})
    learnable = learnable_names(readout.pop("learnable", ()))
    backend = readout.pop("backend", None) or neuron_backend
    return parameters_from_config(LIParameters, readout, "readout"), learnable, backend


def make_readout(settings: tuple[LIParameters, tuple, str], num_classes: int, dt: float) -> LI:
    """The LI readout of ``num_classes`` neurons from :func:`readout_settings`."""
    p, learnable, backend = settings
    return LI(p, dt=dt, learnable=learnable, shape=(num_classes,), backend=backend)


def hidden_sizes(hidden: int | Sequence[int]) -> list[int]:
    """``hidden`` (one size or a list of them) as a non-empty list of positive sizes, else a ValueError."""
    sizes = [hidden] if isinstance(hidden, int) else list(hidden)
    if not sizes or any(not isinstance(h, int) or h <= 0 for h in sizes):
        raise ValueError(f"hidden must be a positive int or a non-empty list of them, got {hidden!r}.")
    return sizes
