"""A layer's state trajectory: every state field and the pre-reset voltage at every time step.

A layer's ``forward`` returns only the outputs of all steps and the final state (and may run a
fused loop that keeps nothing else). :func:`trajectory` runs the same layer step by step through
its own step function and keeps what happened in between, for plots and analysis:

- ``outputs``: what the layer returns (spikes; voltages for LI), bit-identical to its forward pass
  on the eager backend;
- ``states``: the layer's state NamedTuple with each field stacked over time, ``[T, B, ...]``: the
  state after every step (after the reset);
- ``v_pre``: the voltage before the spike and reset, the value compared with the threshold
  (``v_d`` in the step functions' equations); for a non-spiking layer it is ``states.v``.

The pre-reset voltage comes from the neuron's ``subthreshold`` function, the first lines of its
step, which the step itself calls: nothing here repeats a neuron equation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from .module import NeuronModule, RecurrentNeuronModule, recurrent_current


class Trajectory(NamedTuple):
    """Per-step tensors ``[T, B, ...]`` of a layer run (see the module docstring)."""

    outputs: torch.Tensor
    states: Any  # the layer's state NamedTuple, each field [T, B, ...]
    v_pre: torch.Tensor


def trajectory(
    layer: NeuronModule, input_tensor: torch.Tensor, state: NamedTuple | None = None
) -> Trajectory:
    """Runs the layer ``layer`` (time-major: ``[T, B, ...]`` in) step by step from ``state``
    (``None``: from rest) and returns its :class:`Trajectory`.

    Works for feed-forward and recurrent layers of every neuron type in :mod:`snn.neurons`. Costs
    about two eager passes; run it under ``torch.no_grad()`` unless gradients are wanted.
    """
    if not isinstance(layer, NeuronModule) or not layer.time_major:
        raise ValueError(
            f"trajectory() runs a neuron layer (time-major, e.g. LIFAdEx, LIFRecurrent, LI), got "
            f"{type(layer).__name__}; for a cell, stack its inputs over time and use its layer "
            "class."
        )
    neuron_shape = layer.check_input(input_tensor, time_major=True)
    if state is None:
        state = layer.rest_state(input_tensor.new_zeros(neuron_shape))
    state = layer.check_state(state, neuron_shape, layer.state_class, like=input_tensor)
    p = layer.neuron_parameters(input_tensor)
    step, subthreshold = type(layer).step, type(layer).subthreshold
    if isinstance(layer, RecurrentNeuronModule):
        w_in, w_rec = layer.input_weights, layer.effective_recurrent_weights()

    outputs, states, v_pre = [], [], []
    for x_t in input_tensor.unbind(0):
        if isinstance(layer, RecurrentNeuronModule):
            current = recurrent_current(x_t, state.z, w_in, w_rec)
            before = subthreshold(current, state, p, layer.dt)
            out, state = step(x_t, state, w_in, w_rec, p, layer.dt)
        else:
            before = subthreshold(x_t, state, p, layer.dt) if subthreshold is not None else None
            out, state = step(x_t, state, p, layer.dt)
        outputs.append(out)
        states.append(state)
        v_pre.append(state.v if before is None else before.v)
    stacked = type(state)(*(torch.stack(field) for field in zip(*states, strict=True)))
    return Trajectory(torch.stack(outputs), stacked, torch.stack(v_pre))
