"""What every neuron module shares: parameters as buffers or nn.Parameters, input and state checks.

The neuron equations live in the step functions of :mod:`snn.neurons.adex`, :mod:`~snn.neurons.lif`
and :mod:`~snn.neurons.li`; the modules here only own the constants and create the initial state.

The modules check the constants once, when they are built (:data:`PARAMETER_RANGES`); the step
functions are the hot path and check nothing, so a step function called directly with, say, a
negative ``tau_mem_inv`` computes a growing voltage, as the equations say.

Dtypes: the neuron constants follow the input (a float64 input computes in float64 whatever the
module holds). The weight matrices of the recurrent modules and of
:class:`~snn.neurons.li.LILinearCell` are like ``nn.Linear``'s: the input must have their dtype
(``module.double()`` for float64 input).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from .constants import broadcasts_to, check_backend, check_recurrent_backend
from .fused.feed_forward import run as run_fused
from .fused.recurrent import run_recurrent
from .fused.spec import KernelOptions

# Fields of a parameter NamedTuple that are not tensors: the surrogate's name and steepness, and
# the time-stepping scheme (AdEx's integrator).
SURROGATE_FIELDS = ("method", "alpha")
OPTION_FIELDS = (*SURROGATE_FIELDS, "integrator")


def _as_float_tensor(name: str, value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        tensor = value.detach()
    elif isinstance(value, int | float):
        tensor = torch.tensor(float(value), dtype=torch.float64)
    else:
        raise ValueError(f"Neuron parameter {name!r} must be a number or a tensor, got {type(value).__name__}.")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    if not torch.isfinite(tensor).all():
        raise ValueError(f"Neuron parameter {name!r} must be finite, got {value!r}.")
    return tensor


# The valid range of each constant that has one: (lowest value, whether it is allowed). An inverse
# time constant of 0 means no decay, a negative one a neuron that grows exponentially instead of
# decaying; delta_T divides the voltage in AdEx's exponential (0 gives NaN, a negative value makes
# the term explode below threshold). Other constants, v_reset >= v_th included, are legal in norse
# and give finite (if odd) results, so they are not restricted.
PARAMETER_RANGES = {
    "tau_mem_inv": (0.0, True),
    "tau_syn_inv": (0.0, True),
    "tau_ada_inv": (0.0, True),
    "delta_T": (0.0, False),
}


def check_range(owner: str, name: str, tensor: torch.Tensor) -> None:
    """Raises a ValueError naming ``owner.name``, its value and its valid range when ``tensor`` (any
    shape) has a value outside :data:`PARAMETER_RANGES`."""
    if name not in PARAMETER_RANGES or tensor.numel() == 0 or tensor.device.type == "meta":
        return
    lowest, inclusive = PARAMETER_RANGES[name]
    smallest = tensor.min().item()
    if smallest > lowest or (inclusive and smallest == lowest):
        return
    valid = f">= {lowest:g}" if inclusive else f"> {lowest:g}"
    got = repr(smallest) if tensor.numel() == 1 else f"a tensor whose smallest value is {smallest!r}"
    if name.endswith("_inv"):
        valid += " (an inverse time constant in 1/s; 0 means no decay)"
    raise ValueError(f"{owner}.{name} must be {valid}, got {got}.")


class _ClampAtZero(torch.autograd.Function):
    """``x.clamp(min=0)`` (same forward, same gradient where ``x >= 0``) whose backward also passes
    the gradient where ``x < 0`` if it is negative, i.e. if gradient descent would raise ``x`` back
    towards the valid range. ``torch.clamp`` gives such an ``x`` zero gradient forever, so a
    learnable time constant that an optimizer step pushed below zero would stay stuck at 0."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0.0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return torch.where((x >= 0) | (grad < 0), grad, torch.zeros_like(grad))


class NeuronModule(nn.Module):
    """Holds a neuron's parameters and checks inputs and states.

    Each tensor field of ``p`` becomes a buffer, or an ``nn.Parameter`` when its name is in
    ``learnable``, so ``.to(device)``, ``state_dict`` and DDP see it. A parameter may be a scalar or
    any tensor that broadcasts to the neuron shape; ``shape`` (e.g. ``(N,)`` or ``(C, 1, 1)``)
    expands the learnable ones to one value per neuron.

    Fixed constants keep full (float64) precision and are cast to the input's dtype at every call,
    so float32 and float64 inputs both see the parameter as written.

    Every constant is checked against :data:`PARAMETER_RANGES` at construction (learnable ones by
    their initial value): a ValueError names the field, its value and the valid range.

    Learnable inverse time constants (fields ending in ``_inv``) are clamped at zero when used, so an
    optimizer step can never make a time constant negative (the neuron would then grow, not decay).
    The clamp lets a value that overshot below zero recover: its gradient still passes wherever it
    points back into the valid range (:class:`_ClampAtZero`).

    ``p`` returns the parameters as the NamedTuple, as norse's modules expose them
    (``cell.p.v_leak``).
    """

    parameters_class: type[NamedTuple]
    state_class: type[NamedTuple]
    # step(input, state, p, dt) -> (output, new_state): the neuron's equations, one Euler step.
    step: Callable[..., tuple[torch.Tensor, Any]]
    # subthreshold(current, state, p, dt) -> state before the spike and reset: the first lines of
    # a spiking neuron's step, which its step calls (snn.neurons.trajectory reads v_d from it).
    subthreshold: Callable[..., Any] | None = None
    # True for layers (input [T, B, ...], loop over T), False for cells (input [B, ...], one step).
    time_major: bool = False
    # The fused time loop of this neuron type in snn.neurons.fused ("adex", "lif", "li"), if any,
    # and the backend that runs the loop (layers take it as a constructor argument; the property
    # `backend` checks it when it is set, so the calls need not).
    fused_kind: str | None = None
    _backend: str = "eager"
    check_backend = staticmethod(check_backend)

    @property
    def backend(self) -> str:
        """The backend that runs the time loop (see :mod:`snn.neurons.fused`)."""
        return self._backend

    @backend.setter
    def backend(self, backend: str) -> None:
        self._backend = self.check_backend(backend)

    def __init__(
        self,
        p: NamedTuple,
        dt: float = 0.001,
        learnable: Iterable[str] = (),
        shape: Sequence[int] | None = None,
    ):
        super().__init__()
        if not isinstance(p, self.parameters_class):
            raise ValueError(
                f"{type(self).__name__} expects p to be a {self.parameters_class.__name__}, got {type(p).__name__}."
            )
        if not isinstance(dt, int | float) or not math.isfinite(dt) or dt <= 0:
            raise ValueError(f"The time step dt must be a positive number, got {dt!r}.")
        learnable = (learnable,) if isinstance(learnable, str) else tuple(learnable)
        tensor_fields = [f for f in p._fields if f not in OPTION_FIELDS]
        unknown = [name for name in learnable if name not in tensor_fields]
        if unknown:
            raise ValueError(
                f"Cannot make {unknown} learnable: {self.parameters_class.__name__} has the tensor "
                f"fields {tensor_fields}."
            )
        # method, alpha and integrator, checked here once for every call (the fused loops take them
        # as this value; the step functions read them from the parameters).
        self.kernel_options = KernelOptions.of(p)
        self.dt = float(dt)
        self.learnable = learnable
        self.shape = None if shape is None else tuple(int(s) for s in shape)
        self.surrogate = {f: getattr(p, f) for f in SURROGATE_FIELDS if f in p._fields}
        self.options = {f: getattr(p, f) for f in OPTION_FIELDS if f in p._fields}  # surrogate too
        self._tensor_fields = tensor_fields
        for name in tensor_fields:
            tensor = _as_float_tensor(name, getattr(p, name))
            check_range(self.parameters_class.__name__, name, tensor)
            if name in learnable:
                if self.shape is not None:
                    tensor = tensor.expand(self.shape)
                # Trained like the weights around it: in the default dtype (``.double()`` etc. apply).
                self.register_parameter(name, nn.Parameter(tensor.to(torch.get_default_dtype()).clone()))
            else:
                self.register_buffer(name, tensor.clone())

    def rest_state(self, like: torch.Tensor, materialize: bool = True) -> NamedTuple:
        """The resting state shaped and typed like ``like`` (one time step): v = v_leak, the rest 0.

        ``materialize=False`` leaves v a broadcast of ``v_leak`` (no memory per neuron; read-only):
        the layers start from it when no state is given, so the fused loops save no initial voltage.
        """
        v_leak = self.v_leak.to(device=like.device, dtype=like.dtype).expand(like.shape)
        return self.state_class(
            **{f: (v_leak.clone() if materialize else v_leak) if f == "v" else torch.zeros_like(like)
               for f in self.state_class._fields}
        )

    @property
    def p(self) -> NamedTuple:
        """The parameters as the NamedTuple, as in norse (``cell.p.v_leak``): the module's current
        tensors themselves (buffers, and the ``nn.Parameter`` of each learnable field, unclamped),
        plus ``method``, ``alpha`` (and AdEx's ``integrator``).

        Assignable as in norse (``cell.p = cell.p._replace(v_th=0.8)``): each changed field is set
        with :meth:`set_constant` (learnable ones stay the same ``nn.Parameter``, so an optimizer
        holding them keeps training them), the options are replaced; everything is checked first."""
        return self.parameters_class(**{name: getattr(self, name) for name in self._tensor_fields},
                                     **self.options)

    @p.setter
    def p(self, p: NamedTuple) -> None:
        if not isinstance(p, self.parameters_class):
            raise ValueError(f"{type(self).__name__}.p must be a {self.parameters_class.__name__}, "
                             f"got {type(p).__name__}.")
        kernel_options = KernelOptions.of(p)  # checks method, alpha and integrator
        changed = {}
        for name in self._tensor_fields:
            value, current = getattr(p, name), getattr(self, name)
            if value is current:  # the field as .p gave it: unchanged
                continue
            tensor = _as_float_tensor(name, value)
            check_range(self.parameters_class.__name__, name, tensor)
            changed[name] = tensor
        for name, tensor in changed.items():
            self.set_constant(name, tensor)
        self.kernel_options = kernel_options
        self.surrogate = {f: getattr(p, f) for f in SURROGATE_FIELDS if f in p._fields}
        self.options = {f: getattr(p, f) for f in OPTION_FIELDS if f in p._fields}

    @torch.no_grad()
    def set_constant(self, name: str, value: Any) -> None:
        """Sets constant ``name`` to ``value`` (checked against :data:`PARAMETER_RANGES`): a fixed
        one's buffer is replaced (any shape that broadcasts to the neurons), a learnable one's
        ``nn.Parameter`` is written in place (``value`` broadcasts to its shape)."""
        if name not in self._tensor_fields:
            raise ValueError(f"{type(self).__name__} has no constant {name!r}; its constants are "
                             f"{self._tensor_fields}.")
        tensor = _as_float_tensor(name, value)
        check_range(self.parameters_class.__name__, name, tensor)
        if name not in self.learnable:
            buffer = self._buffers[name]
            self._buffers[name] = tensor.to(device=buffer.device, dtype=buffer.dtype).clone()
            return
        param = self._parameters[name]
        if not broadcasts_to(tensor.shape, param.shape):
            raise ValueError(f"{type(self).__name__}.{name} is learnable with shape {list(param.shape)}; got a "
                             f"value of shape {list(tensor.shape)}.")
        param.copy_(tensor.to(param).expand(param.shape))

    def neuron_parameters(self, like: torch.Tensor) -> NamedTuple:
        """The parameter NamedTuple with every tensor in the dtype of ``like`` (the input)."""
        values = {}
        for name in self._tensor_fields:
            tensor = getattr(self, name)
            if tensor.device != like.device:
                raise ValueError(
                    f"{type(self).__name__}'s parameters are on {tensor.device} but the input is on "
                    f"{like.device}; move the module with .to({str(like.device)!r})."
                )
            if name in self.learnable and name.endswith("_inv"):
                tensor = _ClampAtZero.apply(tensor)
            values[name] = tensor.to(like.dtype)
        return self.parameters_class(**values, **self.options)

    def check_input(self, x: Any, time_major: bool, hidden_size: int | None = None) -> torch.Size:
        """Checks ``x`` is a float tensor ``[T, B, ...]`` (or ``[B, ...]``) that the parameters fit.

        Returns the neuron shape: the input's shape without time, with the last dimension replaced
        by ``hidden_size`` for recurrent populations.
        """
        expected = "[T, B, ...] (time first)" if time_major else "[B, ...] (one time step)"
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"{type(self).__name__} expects a tensor of shape {expected}, got {type(x).__name__}.")
        if not x.is_floating_point():
            raise ValueError(f"{type(self).__name__} expects a floating-point input, got {x.dtype}.")
        if x.layout != torch.strided:
            raise ValueError(f"{type(self).__name__} expects a dense input, got a {x.layout} tensor; "
                             "convert it with .to_dense().")
        minimum = (2 if time_major else 1) + (len(self.shape) if self.shape else 0)
        if x.dim() < minimum:
            per_neuron = f" with neuron shape {list(self.shape)}" if self.shape else ""
            raise ValueError(
                f"{type(self).__name__} expects input of shape {expected}{per_neuron}, got {list(x.shape)}"
                + (": add a time dimension, e.g. x.unsqueeze(0) for one step." if time_major else ".")
            )
        neuron_shape = x.shape[1:] if time_major else x.shape
        if hidden_size is not None:
            neuron_shape = neuron_shape[:-1] + (hidden_size,)
        on_cpu = x.is_cpu
        for name in self._tensor_fields:
            param = getattr(self, name)
            param_shape = param.shape
            if param.layout != torch.strided:  # a buffer replaced after construction, say
                raise ValueError(f"{type(self).__name__}'s parameter {name!r} is a {param.layout} tensor; "
                                 "neuron parameters are dense tensors (use .to_dense()).")
            if not (on_cpu and param.is_cpu) and param.device != x.device:  # before v_leak makes the rest state
                raise ValueError(
                    f"{type(self).__name__}'s parameters are on {param.device} but the input is on "
                    f"{x.device}; move the module with .to({str(x.device)!r})."
                )
            if not broadcasts_to(param_shape, neuron_shape):
                raise ValueError(
                    f"{type(self).__name__}'s parameter {name!r} of shape {list(param_shape)} does not "
                    f"broadcast to the neuron shape {list(neuron_shape)} of the input {list(x.shape)}."
                )
        return neuron_shape

    def check_state(self, state: Any, neuron_shape: torch.Size, state_class: type[NamedTuple],
                    like: torch.Tensor) -> NamedTuple:
        """Checks ``state`` is a ``state_class`` of dense tensors that broadcast to the neuron shape
        and, given the input ``like``, of its dtype and on its device (0-dim ones are converted):
        every backend then sees the same arguments (the eager step would promote a float64 state,
        the fused loops compute in the input's dtype). Returns the state with every field expanded
        to the neuron shape (as norse's steps broadcast it). A ValueError names the field and the
        fix."""
        if not isinstance(state, state_class):
            raise ValueError(
                f"{type(self).__name__} expects state=None or a {state_class.__name__}, got {type(state).__name__}."
            )
        fields = {}
        for name, value in zip(state._fields, state, strict=True):
            if isinstance(value, torch.Tensor) and value.dim() == 0 and value.is_floating_point():
                # A 0-dim tensor (norse's tests pass v=cell.p.v_leak) takes the input's dtype and device,
                # as in torch's type promotion, where a 0-dim operand never sets the result's dtype.
                value = value.to(device=like.device, dtype=like.dtype)
            if not isinstance(value, torch.Tensor) or not broadcasts_to(value.shape, neuron_shape):
                got = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ValueError(
                    f"{type(self).__name__}: state.{name} must have shape {list(neuron_shape)} "
                    f"(the input without its time dimension) or one that broadcasts to it, got {got}."
                )
            if value.layout != torch.strided:
                raise ValueError(f"{type(self).__name__}: state.{name} must be a dense tensor, got a "
                                 f"{value.layout} tensor; convert it with .to_dense().")
            if value.dtype != like.dtype or (not (value.is_cpu and like.is_cpu)
                                             and value.device != like.device):
                raise ValueError(
                    f"{type(self).__name__}: state.{name} is {value.dtype} on {value.device} but the input "
                    f"is {like.dtype} on {like.device}; pass state=None to start from rest, or convert "
                    f"the state to the input x: {state_class.__name__}(*(s.to(x) for s in state))."
                )
            fields[name] = value.expand(neuron_shape)  # a view, as norse's steps broadcast it
        return state_class(**fields)

    def forward(self, input_tensor: torch.Tensor, state: NamedTuple | None = None):
        """Cell: ``[B, ...] -> (output, state)``. Layer: ``[T, B, ...] -> (outputs [T, B, ...], final state)``.

        ``state=None`` starts from rest.
        """
        neuron_shape = self.check_input(input_tensor, self.time_major)
        if state is None:
            state = self.rest_state(input_tensor.new_zeros(neuron_shape), materialize=False)
        state = self.check_state(state, neuron_shape, self.state_class, like=input_tensor)
        p = self.neuron_parameters(input_tensor)
        if not self.time_major:
            return type(self).step(input_tensor, state, p, self.dt)
        if input_tensor.shape[0] == 0:  # no steps, on every backend: no outputs and the initial state
            return run_time_loop(type(self).step, input_tensor, state)
        return self.integrate(input_tensor, state, p)

    def integrate(self, input_tensor: torch.Tensor, state: NamedTuple, p: NamedTuple):
        """Runs the step function over the time dimension of a checked input, step by step
        (``backend="eager"``) or in one fused loop (see :mod:`snn.neurons.fused`)."""
        if self.backend != "eager" and self.fused_kind is not None:
            return run_fused(self.fused_kind, self.backend, input_tensor, state, p, self.dt, self.kernel_options)
        step = type(self).step
        return run_time_loop(lambda x, s: step(x, s, p, self.dt), input_tensor, state)

    def initial_state(self, input_tensor: torch.Tensor) -> NamedTuple:
        """The resting state for ``input_tensor`` (as in norse)."""
        neuron_shape = self.check_input(input_tensor, self.time_major)
        return self.rest_state(input_tensor.new_zeros(neuron_shape))

    def extra_repr(self) -> str:
        parts = [f"dt={self.dt}"]
        parts += [f"{k}={v!r}" for k, v in self.options.items()]
        if self.time_major and self.fused_kind is not None:
            parts.append(f"backend={self.backend!r}")
        if self.learnable:
            parts.append(f"learnable={self.learnable}")
        if self.shape:
            parts.append(f"shape={self.shape}")
        return ", ".join(parts)


def run_time_loop(
    step: Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]], x: torch.Tensor, state: Any
) -> tuple[torch.Tensor, Any]:
    """Applies ``step`` to each ``x[t]``: ``[T, B, ...] -> ([T, B, ...] outputs, final state)``.

    With T = 0: no outputs (``[0, *neuron shape]``) and the initial state, as new tensors (the rest
    state a layer starts from may be a read-only broadcast)."""
    if x.shape[0] == 0:
        return (x.new_empty((0, *state[0].shape)),
                type(state)(*(s.clone(memory_format=torch.contiguous_format) for s in state)))
    outputs = []
    for x_t in x.unbind(0):
        out, state = step(x_t, state)
        outputs.append(out)
    return torch.stack(outputs), state


def recurrent_current(input_tensor: torch.Tensor, z: torch.Tensor, input_weights: torch.Tensor,
                      recurrent_weights: torch.Tensor) -> torch.Tensor:
    r"""The input current of a recurrent population:
    :math:`W_{\text{in}} x + W_{\text{rec}} z_{\text{prev}}`."""
    return F.linear(input_tensor, input_weights) + F.linear(z, recurrent_weights)


# The dtypes autocast converts between, and the nn.Module method that converts to each dtype.
AUTOCAST_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
DTYPE_METHODS = {torch.float64: "double()", torch.float32: "float()", torch.float16: "half()",
                 torch.bfloat16: "bfloat16()"}


class Projection:
    """Mixin for a population of ``hidden_size`` neurons fed through ``[hidden_size, input_size]``
    weights (:class:`RecurrentNeuronModule`, :class:`~snn.neurons.li.LILinearCell`): size checks and
    inputs ``[..., input_size]`` for neurons ``[..., hidden_size]``."""

    input_size: int
    hidden_size: int
    # The weight matrices that multiply the input or the spikes; they set the dtype (check_weights).
    weight_names: tuple[str, ...] = ("input_weights",)

    @staticmethod
    def check_sizes(input_size: int, hidden_size: int) -> None:
        for name, size in (("input_size", input_size), ("hidden_size", hidden_size)):
            if not isinstance(size, int) or size <= 0:
                raise ValueError(f"{name} must be a positive integer, got {size!r}.")

    def check_input(self, x: Any, time_major: bool, hidden_size: int | None = None) -> torch.Size:
        """Checks ``x`` (``[T, B, input_size]`` or ``[B, input_size]``); returns ``[B, hidden_size]``."""
        hidden_shape = super().check_input(x, time_major, hidden_size=self.hidden_size)
        if x.shape[-1] != self.input_size:
            raise ValueError(
                f"{type(self).__name__} expects {self.input_size} input features in the last "
                f"dimension, got input of shape {list(x.shape)}."
            )
        return hidden_shape

    def check_weights(self, x: torch.Tensor) -> None:
        """The rule of ``nn.Linear``: the weights set the dtype and the input must match it (and
        their device), except under autocast, which casts both. One sentence instead of torch's
        ``expected m1 and m2 to have the same dtype`` from inside the step."""
        device = x.device.type
        autocast = torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device)
        for name in self.weight_names:
            w = getattr(self, name)
            if w.device != x.device:
                raise ValueError(
                    f"{type(self).__name__}'s {name} are on {w.device} but the input is on "
                    f"{x.device}; move the module with .to({str(x.device)!r})."
                )
            cast = autocast and x.dtype in AUTOCAST_DTYPES and w.dtype in AUTOCAST_DTYPES
            if w.dtype != x.dtype and not cast:
                convert = DTYPE_METHODS.get(x.dtype, f"to({x.dtype})")
                raise ValueError(
                    f"{type(self).__name__}'s {name} are {w.dtype} but the input is {x.dtype}: "
                    f"convert the module (module.{convert}) or the input (x.to({w.dtype}))."
                )


class RecurrentNeuronModule(Projection, NeuronModule):
    """A population of ``hidden_size`` neurons driven by ``W_in x + W_rec z_prev``.

    Weights are He-initialised as in norse (``randn * sqrt(2 / hidden_size)``); ``autapses=False``
    (the default, as in norse) removes self-connections, also from user-given recurrent weights.
    Learnable parameters get one value per neuron. The weights set the dtype, as in ``nn.Linear``
    (``module.double()`` for float64 input); the neuron constants follow it.
    """

    weight_names = ("input_weights", "recurrent_weights")
    check_backend = staticmethod(check_recurrent_backend)

    def __init__(self, input_size: int, hidden_size: int, p: NamedTuple, dt: float, autapses: bool,
                 learnable: Iterable[str], input_weights: torch.Tensor | None,
                 recurrent_weights: torch.Tensor | None):
        self.check_sizes(input_size, hidden_size)
        super().__init__(p, dt, learnable, shape=(hidden_size,) if learnable else None)
        self.input_size, self.hidden_size, self.autapses = input_size, hidden_size, autapses
        self.input_weights = self._weights(input_weights, (hidden_size, input_size), "input_weights")
        self.recurrent_weights = self._weights(recurrent_weights, (hidden_size, hidden_size), "recurrent_weights")
        if not autapses:
            self.recurrent_weights.data.fill_diagonal_(0.0)

    @staticmethod
    def _weights(given: torch.Tensor | None, shape: tuple[int, int], name: str) -> nn.Parameter:
        """The given weights as they are (dtype kept), or a He initialisation ``randn * sqrt(2 / hidden)``."""
        if given is None:
            return nn.Parameter(torch.randn(shape) * math.sqrt(2.0 / shape[0]))
        if not isinstance(given, torch.Tensor) or tuple(given.shape) != shape:
            got = list(given.shape) if isinstance(given, torch.Tensor) else type(given).__name__
            raise ValueError(f"{name} must be a tensor of shape {list(shape)} ([hidden, input]), got {got}.")
        if given.layout != torch.strided:
            raise ValueError(f"{name} must be a dense tensor, got a {given.layout} one; pass .to_dense().")
        if not given.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {given.dtype}; convert it with .float().")
        return nn.Parameter(given.detach().clone())

    def effective_recurrent_weights(self) -> torch.Tensor:
        """``W_rec``, with a zero diagonal unless autapses are allowed."""
        if self.autapses:
            return self.recurrent_weights
        return self.recurrent_weights * (1.0 - torch.eye(self.hidden_size, dtype=self.recurrent_weights.dtype,
                                                         device=self.recurrent_weights.device))

    def forward(self, input_tensor: torch.Tensor, state: NamedTuple | None = None):
        """Cell: ``[B, input_size] -> (z [B, hidden_size], state)``; layer: the same over ``[T, ...]``."""
        hidden_shape = self.check_input(input_tensor, self.time_major)
        self.check_weights(input_tensor)
        if state is None:  # v a broadcast of v_leak: the fused loops then save no initial voltage
            state = self.rest_state(input_tensor.new_zeros(hidden_shape), materialize=False)
        state = self.check_state(state, hidden_shape, self.state_class, like=input_tensor)
        p = self.neuron_parameters(input_tensor)
        w_in, w_rec = self.input_weights, self.effective_recurrent_weights()
        step = type(self).step
        if not self.time_major:
            return step(input_tensor, state, w_in, w_rec, p, self.dt)
        if self.backend != "eager" and self.fused_kind is not None and input_tensor.shape[0] > 0:
            kind = self.fused_kind
            if input_tensor.dim() == 3:
                return run_recurrent(kind, self.backend, input_tensor, state, w_in, w_rec, p, self.dt,
                                     self.kernel_options)
            # Any other batch shape, as the eager loop and norse take it (e.g. [T, input_size]): the
            # fused loop runs on [T, B, input_size] with the batch dimensions flattened into B.
            batch = math.prod(hidden_shape[:-1])
            x = input_tensor.reshape(input_tensor.shape[0], batch, self.input_size)
            flat = type(state)(*(s.reshape(batch, self.hidden_size) for s in state))
            out, final = run_recurrent(kind, self.backend, x, flat, w_in, w_rec, p, self.dt, self.kernel_options)
            return (out.reshape(*input_tensor.shape[:-1], self.hidden_size),
                    type(final)(*(s.reshape(hidden_shape) for s in final)))
        return run_time_loop(lambda x, s: step(x, s, w_in, w_rec, p, self.dt), input_tensor, state)

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, autapses={self.autapses}, "
                + super().extra_repr())
