"""What every neuron module shares: parameters as buffers or nn.Parameters, input and state checks.

The neuron equations live in the step functions of :mod:`snn.neurons.adex`, :mod:`~snn.neurons.lif`
and :mod:`~snn.neurons.li`; the modules here only own the constants and create the initial state.

The modules check the constants once, when they are built (:data:`PARAMETER_RANGES`, and
:data:`EULER_STABLE_STEP` for the inverse time constants at the module's ``dt``); the step
functions are the hot path and check nothing, so a step function called directly with, say, a
negative ``tau_mem_inv`` computes a growing voltage, as the equations say.

Dtypes: the neuron constants follow the input (a float64 input computes in float64 whatever the
module holds). The weight matrices of the recurrent modules and of
:class:`~snn.neurons.li.LILinearCell` are like ``nn.Linear``'s: the input must have their dtype
(``module.double()`` for float64 input), except under autocast, which casts them.

Half precision (the rule of every backend, ``eager`` included): a float16 or bfloat16 input, with
or without autocast (``bf16-mixed``, ``16-mixed``, ``bf16-true``), is computed in float32. The
module runs on ``x.float()`` with float32 state and constants, returns its outputs in the input's
dtype (spikes, 0 or 1, are exact in both) and its final state in float32 (not rounded to 8 or 11
bits from one call to the next; a state passed in may be float32 or of the input's dtype). Under
autocast a neuron module turns autocast off for its own operations, whatever its input's dtype: a
recurrent module's products ``W_in x`` and ``W_rec z`` run in float32 (half weights cast to
float32 for the call), the linear layers around it in the autocast dtype. The threshold
comparison and AdEx's exponential would otherwise decide spikes on voltages rounded to a few
bits, differently on each backend. The constants' buffers keep their dtype (float64) when the
module is converted with ``.half()``, ``.bfloat16()``, ``.float()`` or ``.to(dtype)`` (only device
moves and conversions to float64 apply to them, see :meth:`NeuronModule._apply`): a ``bf16-true``
run does not round them for good.
"""

from __future__ import annotations

import contextlib
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

# Inputs of these dtypes are computed in float32 (see the module docstring).
HALF_DTYPES = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a neuron module computes an input of ``dtype`` in: float32 for half precision."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def without_autocast(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off on ``x``'s device type where it is on: a neuron module computes in its own
    dtype rule (the module docstring), so that the eager loop and every fused backend see the same
    float32 products and states, and backward the same dtypes as forward."""
    device = x.device.type
    if torch.amp.is_autocast_available(device) and torch.is_autocast_enabled(device):
        return torch.autocast(device, enabled=False)
    return contextlib.nullcontext()


def float32_state(state: Any, dtype: torch.dtype) -> Any:
    """A state passed in with a half input: its fields of the input's ``dtype`` in float32 (the
    compute dtype), the others as they are (the state check refuses another dtype)."""
    if state is None or dtype not in HALF_DTYPES or not isinstance(state, tuple):
        return state
    return type(state)(*(s.float() if isinstance(s, torch.Tensor) and s.dtype == dtype else s for s in state))


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
    if tensor.device.type != "meta" and not torch.isfinite(tensor).all():  # meta: shapes only
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


# The largest ``dt * tau_inv`` an explicit Euler decay step takes. Each decay is
# ``x' = (1 - c) x + ...`` with ``c = dt * tau_inv``: for ``0 <= c <= 1`` the factor lies in [0, 1]
# and the state decays without changing sign (``c = 1`` empties it in one step, which is how NIR
# import models a neuron without synapse, and NIR import refuses ``tau < dt`` for the same reason).
# Above 1 the state alternates in sign; the synaptic current then drives the voltage in resonance
# (at ``c = 2`` both factors are -1 and the voltage grows linearly), and above 2 every step
# multiplies the state by more than 1 in magnitude: inf, then NaN, within a few dozen steps. LI's
# output is its voltage, so it showed the divergence at once; in LIF and AdEx the synaptic current
# and the voltage below threshold diverge the same way behind spikes that look finite.
EULER_STABLE_STEP = 1.0


def check_step(owner: str, name: str, tensor: torch.Tensor, dt: float) -> None:
    """Raises a ValueError naming ``owner.name``, ``dt`` and the bound when an inverse time constant
    makes the explicit Euler step unstable: ``dt * tau_inv > 1`` (see :data:`EULER_STABLE_STEP`)."""
    if not name.endswith("_inv") or tensor.numel() == 0 or tensor.device.type == "meta":
        return
    largest = tensor.max().item()
    if dt * largest <= EULER_STABLE_STEP:
        return
    outcome = "grows without bound (inf, then NaN)" if dt * largest > 2 else "oscillates in sign"
    got = f"{largest:g}" if tensor.numel() == 1 else f"a tensor whose largest value is {largest:g}"
    raise ValueError(
        f"{owner}.{name} = {got} 1/s at dt = {dt!r} s gives dt * {name} = {dt * largest:.3g}: each explicit "
        f"Euler step multiplies the state by 1 - dt * {name} = {1 - dt * largest:.3g}, so it "
        f"{outcome}. Keep dt * {name} <= {EULER_STABLE_STEP:g}: {name} <= "
        f"{EULER_STABLE_STEP / dt:.6g} at this dt, or dt <= {EULER_STABLE_STEP / largest:.3g} s.")


# How a learnable constant is trained. The optimizer sees ``<name>_raw`` (one value per neuron, 0 at
# the start); ``<name>_init`` keeps the value it started from, and the neuron computes with
#
# - ``"log"``: ``init * exp(raw)``, for the constants that must stay positive (the inverse time
#   constants and delta_T, those of PARAMETER_RANGES). A step of ``raw`` is the same relative change
#   at 2 ms and at 2 s, and no step can make a time constant negative (the clamp at zero of the
#   ranges holds by construction);
# - ``"scaled"``: ``init + scale * raw`` with ``scale = |init|`` (1 where init is 0), for the voltages
#   and the adaptation strengths, which may take any sign: a step is a fraction of the constant's
#   own size, so 0.02 and 4 move alike.
#
# At ``raw = 0`` both give ``init`` exactly: a module with learnable constants computes, bit for bit,
# what the same module with fixed ones computes until the first optimizer step.


def parametrization(name: str) -> str:
    """How the learnable constant ``name`` is trained: ``"log"`` or ``"scaled"`` (see above)."""
    return "log" if name in PARAMETER_RANGES else "scaled"


def _scale(init: torch.Tensor) -> torch.Tensor:
    return torch.where(init == 0, torch.ones_like(init), init.abs())


def constant_value(kind: str, init: torch.Tensor, raw: torch.Tensor) -> torch.Tensor:
    """The value of a learnable constant (in the dtype of ``init`` and ``raw``, which must agree)."""
    if kind == "log":
        return init * torch.exp(raw)
    return init + _scale(init) * raw


def raw_value(kind: str, init: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`constant_value`: the raw parameter that gives ``value``."""
    if kind == "log":
        return torch.log(value / init)
    return (value - init) / _scale(init)


def _same_values(value: Any, current: torch.Tensor) -> bool:
    return (isinstance(value, torch.Tensor) and value.shape == current.shape and value.dtype == current.dtype
            and torch.equal(value.detach(), current.detach()))


class NeuronModule(nn.Module):
    """Holds a neuron's parameters and checks inputs and states.

    Each tensor field of ``p`` becomes a buffer, so ``.to(device)``, ``state_dict`` and DDP see it. A
    parameter may be a scalar or any tensor that broadcasts to the neuron shape.

    A field named in ``learnable`` is trained, one value per neuron: ``shape`` (e.g. ``(N,)``, or
    ``(C, 1, 1)`` for one value per channel) is the neuron shape it is learned at; ``shape=()``
    learns one value shared by all neurons. Without ``shape`` a per-neuron tensor in ``p`` sets it; a
    learnable scalar without ``shape`` is refused (the module cannot know N before its first input).
    The optimizer trains ``<name>_raw`` (an ``nn.Parameter``, 0 at the start; :func:`parametrization`
    says how it maps to the value), ``<name>_init`` keeps the starting value, and ``module.<name>``
    reads the current value (with autograd), as for a fixed constant; assigning to it sets the raw
    parameter. :meth:`constant_parameters` lists the raw parameters (their own optimizer group:
    ``snn.training``), :meth:`constants` the values.

    Fixed constants keep full (float64) precision and are cast to the input's dtype at every call,
    so float32 and float64 inputs both see the parameter as written; learnable ones are computed in
    the input's dtype from their float64 start and their raw parameter.

    Every constant is checked against :data:`PARAMETER_RANGES` at construction (learnable ones by
    their initial value): a ValueError names the field, its value and the valid range. Learnable
    inverse time constants and ``delta_T`` are trained on a log scale, so they stay in it.

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
        self._learned: dict[str, str] = {}  # learnable field -> its parametrization
        for name in tensor_fields:
            tensor = _as_float_tensor(name, getattr(p, name))
            check_range(self.parameters_class.__name__, name, tensor)
            check_step(self.parameters_class.__name__, name, tensor, self.dt)
            if name in learnable:
                self._register_learnable(name, tensor)
            else:
                self.register_buffer(name, tensor.clone())

    def _register_learnable(self, name: str, tensor: torch.Tensor) -> None:
        """``<name>_init`` (the starting value, float64, one per neuron) and ``<name>_raw`` (0)."""
        owner = f"{self.parameters_class.__name__}.{name}"
        if self.shape is None and tensor.dim() == 0:
            raise ValueError(
                f"{type(self).__name__}(learnable=[{name!r}, ...]) learns one value per neuron, but the "
                f"module does not know its neurons: pass shape=(N,) (the input's dimensions after time and "
                f"batch; (C, 1, 1) for one value per channel), a per-neuron tensor as {owner}, or shape=() to "
                "learn one value shared by all neurons."
            )
        if self.shape is not None:
            if not broadcasts_to(tensor.shape, self.shape):
                raise ValueError(f"{owner} of shape {list(tensor.shape)} does not broadcast to the learnable "
                                 f"shape {list(self.shape)}.")
            tensor = tensor.expand(self.shape)
        kind = parametrization(name)
        if kind == "log" and tensor.numel() and tensor.device.type != "meta" and tensor.min().item() <= 0:
            raise ValueError(
                f"{owner} is learnable and starts at {tensor.min().item()!r}: a learnable {name} is trained on a "
                "log scale (relative steps) and must start > 0. Start it at a small positive value, or keep "
                "it fixed."
            )
        self._learned[name] = kind
        self.register_buffer(f"{name}_init", tensor.contiguous().clone())
        # Trained like the weights around it: in the default dtype (``.double()`` etc. apply).
        self.register_parameter(f"{name}_raw", nn.Parameter(torch.zeros(tensor.shape)))

    def __getattr__(self, name: str) -> Any:
        learned = self.__dict__.get("_learned")
        if learned is not None and name in learned:
            return self.constant(name)
        return super().__getattr__(name)

    def __setattr__(self, name: str, value: Any) -> None:
        learned = self.__dict__.get("_learned")
        if learned is not None and name in learned:
            self.set_constant(name, value)
        else:
            super().__setattr__(name, value)

    def _apply(self, fn, recurse=True):
        """``nn.Module._apply`` (``.to()``, ``.cuda()``, ``.half()``, ``.bfloat16()``, ...) with the
        constants' buffers (the fixed constants and the learnable ones' ``<name>_init``) kept in
        their dtype unless converted to float64: they move with the module, but a ``.bfloat16()``
        (Lightning's ``bf16-true``) does not round them to 8 bits for good. The module computes
        with them in the input's dtype at every call (see the module docstring)."""
        constants = set(self._tensor_fields) | {f"{name}_init" for name in self._learned}
        kept = {}
        for name, buffer in self._buffers.items():
            if name in constants and buffer is not None:
                moved = fn(buffer)
                if moved.dtype != buffer.dtype and moved.dtype != torch.float64:
                    moved = buffer.to(device=moved.device, copy=moved.device == buffer.device)
                kept[name] = moved
        result = super()._apply(fn, recurse)
        self._buffers.update(kept)
        return result

    def constant(self, name: str, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The current value of constant ``name``: a learnable one computed from its raw parameter
        (in ``dtype``, default the raw parameter's, with autograd), a fixed one its buffer (cast to
        ``dtype`` if given)."""
        kind = self._learned.get(name)
        if kind is None:
            tensor = super().__getattr__(name)
            return tensor if dtype is None else tensor.to(dtype)
        raw = self._parameters[f"{name}_raw"]
        dtype = raw.dtype if dtype is None else dtype
        return constant_value(kind, self._buffers[f"{name}_init"].to(dtype), raw.to(dtype))

    @torch.no_grad()
    def set_constant(self, name: str, value: Any) -> None:
        """Sets constant ``name``: a fixed one's buffer, a learnable one's raw parameter (so the
        module computes with ``value``; its start ``<name>_init`` stays). Checked against
        :data:`PARAMETER_RANGES`; ``value`` broadcasts to the constant's shape (a fixed one's buffer is
        replaced: any shape that broadcasts to the neurons)."""
        if name not in self._tensor_fields:
            raise ValueError(f"{type(self).__name__} has no constant {name!r}; its constants are "
                             f"{self._tensor_fields}.")
        tensor = _as_float_tensor(name, value)
        check_range(self.parameters_class.__name__, name, tensor)
        check_step(self.parameters_class.__name__, name, tensor, self.dt)
        kind = self._learned.get(name)
        if kind is None:
            buffer = self._buffers[name]
            self._buffers[name] = tensor.to(device=buffer.device, dtype=buffer.dtype).clone()
            return
        raw = self._parameters[f"{name}_raw"]
        init = self._buffers[f"{name}_init"]
        if not broadcasts_to(tensor.shape, raw.shape):
            raise ValueError(f"{type(self).__name__}.{name} has shape {list(raw.shape)}; got a value of shape "
                             f"{list(tensor.shape)}.")
        if kind == "log" and tensor.numel() and tensor.min().item() <= 0:
            raise ValueError(f"{type(self).__name__}.{name} is learnable on a log scale: it must stay > 0, "
                             f"got {tensor.min().item()!r}.")
        tensor = tensor.to(device=init.device, dtype=init.dtype).expand(raw.shape)
        raw.copy_(raw_value(kind, init, tensor))

    def constant_parameters(self) -> dict[str, nn.Parameter]:
        """The raw ``nn.Parameter`` of every learnable constant, by field name (what an optimizer
        trains; train them without weight decay, which would pull them to their start)."""
        return {name: self._parameters[f"{name}_raw"] for name in self._learned}

    def constants(self, learnable_only: bool = False) -> dict[str, torch.Tensor]:
        """The current values of the neuron constants (all, or only the learnable ones), detached."""
        names = self._learned if learnable_only else self._tensor_fields
        with torch.no_grad():
            return {name: self.constant(name).detach() for name in names}

    def _stored(self, name: str) -> torch.Tensor:
        """What holds constant ``name``: its buffer or, for a learnable one, its raw parameter (same
        shape, device; checks read it instead of computing the value)."""
        if name in self._learned:
            return self._parameters[f"{name}_raw"]
        return self._buffers[name]

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A state dict from before the raw parametrization holds a learnable constant's value as
        # ``<name>``: it becomes the start, with raw 0, so the module computes what it computed.
        for name in self._learned:
            old, raw = prefix + name, f"{prefix}{name}_raw"
            if old in state_dict and raw not in state_dict and f"{prefix}{name}_init" not in state_dict:
                value = state_dict.pop(old)
                state_dict[f"{prefix}{name}_init"] = value.to(torch.float64)
                state_dict[raw] = torch.zeros(value.shape, dtype=value.dtype)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

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
        values (the buffers themselves; each learnable field's value computed from its raw parameter,
        with autograd), plus ``method``, ``alpha`` (and AdEx's ``integrator``).

        Assignable as in norse (``cell.p = cell.p._replace(v_th=0.8)``): each changed field is set
        with :meth:`set_constant` (a learnable one through its raw parameter, which stays the same
        ``nn.Parameter``, so an optimizer holding it keeps training it), the options are replaced;
        everything is checked first."""
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
            if value is current or (name in self._learned and _same_values(value, current)):
                continue  # the field as .p gave it: unchanged (a learnable one's value is computed anew)
            tensor = _as_float_tensor(name, value)
            check_range(self.parameters_class.__name__, name, tensor)
            check_step(self.parameters_class.__name__, name, tensor, self.dt)
            changed[name] = tensor
        for name, tensor in changed.items():
            self.set_constant(name, tensor)
        self.kernel_options = kernel_options
        self.surrogate = {f: getattr(p, f) for f in SURROGATE_FIELDS if f in p._fields}
        self.options = {f: getattr(p, f) for f in OPTION_FIELDS if f in p._fields}

    def neuron_parameters(self, like: torch.Tensor) -> NamedTuple:
        """The parameter NamedTuple with every tensor in the dtype of ``like`` (the input)."""
        values = {}
        for name in self._tensor_fields:
            tensor = self._stored(name)
            if tensor.device != like.device:
                raise ValueError(
                    f"{type(self).__name__}'s parameters are on {tensor.device} but the input is on "
                    f"{like.device}; move the module with .to({str(like.device)!r})."
                )
            values[name] = self.constant(name, like.dtype)
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
            param = self._stored(name)
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
                    like: torch.Tensor, given: torch.dtype | None = None) -> NamedTuple:
        """Checks ``state`` is a ``state_class`` of dense tensors that broadcast to the neuron shape
        and, given the input ``like``, of its dtype and on its device (0-dim ones are converted):
        every backend then sees the same arguments (the eager step would promote a float64 state,
        the fused loops compute in the input's dtype). Returns the state with every field expanded
        to the neuron shape (as norse's steps broadcast it). A ValueError names the field and the
        fix. ``given``: the dtype of a half input that ``like`` (float32) computes (see
        :func:`float32_state`), for the message."""
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
                if given is not None and given != like.dtype:
                    what = f"{given} on {like.device} (computed in {like.dtype}, whose state may be either)"
                else:
                    what = f"{like.dtype} on {like.device}"
                raise ValueError(
                    f"{type(self).__name__}: state.{name} is {value.dtype} on {value.device} but the input "
                    f"is {what}; pass state=None to start from rest, or convert "
                    f"the state to the input x: {state_class.__name__}(*(s.to(x) for s in state))."
                )
            fields[name] = value.expand(neuron_shape)  # a view, as norse's steps broadcast it
        return state_class(**fields)

    def forward(self, input_tensor: torch.Tensor, state: NamedTuple | None = None):
        """Cell: ``[B, ...] -> (output, state)``. Layer: ``[T, B, ...] -> (outputs [T, B, ...], final state)``.

        ``state=None`` starts from rest.
        """
        neuron_shape = self.check_input(input_tensor, self.time_major)
        given = input_tensor.dtype
        with without_autocast(input_tensor):  # half precision: computed in float32 (module docstring)
            x = input_tensor.to(compute_dtype(given))
            state = float32_state(state, given)
            if state is None:
                state = self.rest_state(x.new_zeros(neuron_shape), materialize=False)
            state = self.check_state(state, neuron_shape, self.state_class, like=x, given=given)
            p = self.neuron_parameters(x)
            if not self.time_major:
                out, final = type(self).step(x, state, p, self.dt)
            elif x.shape[0] == 0:  # no steps, on every backend: no outputs and the initial state
                out, final = run_time_loop(type(self).step, x, state)
            else:
                out, final = self.integrate(x, state, p)
        return out.to(given), final

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
    Learnable constants get one value per neuron (``shape=(hidden_size,)``, the default; ``shape=()``
    learns one value shared by the population). The weights set the dtype, as in ``nn.Linear``
    (``module.double()`` for float64 input); the neuron constants follow it.
    """

    weight_names = ("input_weights", "recurrent_weights")
    check_backend = staticmethod(check_recurrent_backend)

    def __init__(self, input_size: int, hidden_size: int, p: NamedTuple, dt: float, autapses: bool,
                 learnable: Iterable[str], input_weights: torch.Tensor | None,
                 recurrent_weights: torch.Tensor | None, shape: Sequence[int] | None = None):
        self.check_sizes(input_size, hidden_size)
        super().__init__(p, dt, learnable, shape=self.learnable_shape(hidden_size, learnable, shape))
        self.input_size, self.hidden_size, self.autapses = input_size, hidden_size, autapses
        self.input_weights = self._weights(input_weights, (hidden_size, input_size), "input_weights")
        self.recurrent_weights = self._weights(recurrent_weights, (hidden_size, hidden_size), "recurrent_weights")
        if not autapses:
            self.recurrent_weights.data.fill_diagonal_(0.0)

    @staticmethod
    def learnable_shape(hidden_size: int, learnable: Iterable[str] | str,
                        shape: Sequence[int] | None) -> tuple[int, ...] | None:
        """The shape learnable constants get: ``(hidden_size,)`` (one per neuron) when ``shape`` is None or
        says so, ``()`` (one shared value) when asked; None without learnable constants."""
        given = None if shape is None else tuple(shape)
        if given not in (None, (hidden_size,), ()):
            raise ValueError(f"A recurrent population of {hidden_size} neurons learns its constants at shape "
                             f"({hidden_size},) (one per neuron, the default) or () (one shared value), "
                             f"got shape={list(shape)}.")
        if not learnable:
            return None
        return (hidden_size,) if given is None else given

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
        given = input_tensor.dtype
        with without_autocast(input_tensor):  # half precision: computed in float32 (module docstring)
            x = input_tensor.to(compute_dtype(given))
            out, final = self._forward(x, float32_state(state, given), hidden_shape, given)
        return out.to(given), final

    def _forward(self, input_tensor: torch.Tensor, state: NamedTuple | None, hidden_shape: torch.Size,
                 given: torch.dtype):
        """:meth:`forward` on the checked input in its compute dtype (``given``: the input's own)."""
        if state is None:  # v a broadcast of v_leak: the fused loops then save no initial voltage
            state = self.rest_state(input_tensor.new_zeros(hidden_shape), materialize=False)
        state = self.check_state(state, hidden_shape, self.state_class, like=input_tensor, given=given)
        p = self.neuron_parameters(input_tensor)
        dtype = input_tensor.dtype  # half weights (bf16-true) computed in float32 too; else a no-op
        w_in, w_rec = self.input_weights.to(dtype), self.effective_recurrent_weights().to(dtype)
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
