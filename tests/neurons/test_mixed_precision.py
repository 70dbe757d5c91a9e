"""Mixed precision on every backend: the rule of snn.neurons.module (half inputs computed in
float32, autocast off inside the neuron modules, outputs in the input's dtype, state in float32,
constants' buffers kept in float64 by ``.bfloat16()``), for feed-forward, conv and recurrent models.

Each precision is a CPU run of what Lightning does on a GPU: ``bf16-mixed`` and ``16-mixed`` are
``torch.autocast("cpu", dtype=...)`` around a float32 model (CPU autocast runs float16 too),
``bf16-true`` is ``model.bfloat16()`` fed bfloat16 inputs. The reference is the ``eager`` backend in
the same precision: the linear and conv layers around the neurons then compute the same half
precision products from the same values on every backend, and the neurons compute in float32.
Outputs and the float32 gradients of the neuron constants agree within 1e-5 of the largest value
(float32 loops against autograd in float32; AdEx's exponential through Triton's interpreter is
numpy's, one float32 ulp from torch's), 1e-4 for the gradients of the recurrent triton loops,
whose currents round apart from the eager loop's in the last bit (one input GEMM over all steps:
snn.neurons.fused.triton.recurrent) and the surrogate's slope amplifies that (1.2e-5);
gradients of half precision weights within 2 ulps of their dtype of the largest one (an input
gradient that differs in the last float32 bit can round to the neighbouring half value before the
half precision product).
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from snn.neurons import LI, LIF, LIFAdEx, LIFAdExParameters, LIFAdExRecurrent, LIParameters
from snn.neurons.fused import registry as fused_registry
from snn.neurons.fused.triton import TritonBackend

BACKENDS = ["python", "cpp", "triton"]
PRECISIONS = ["bf16-mixed", "16-mixed", "bf16-true"]
HALF = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16, "bf16-true": torch.bfloat16}


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    """Triton through its interpreter (programs of 64 neurons), for every test of this module."""
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setitem(fused_registry.REGISTRY, "triton", TritonBackend(block=64))


class FeedForward(nn.Module):
    """Linear -> LIFAdEx -> Linear -> LI over ``[T, B, 6]``: the readout voltages ``[T, B, 4]``."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 20), nn.Linear(20, 4)
        self.spiking = LIFAdEx(LIFAdExParameters(delta_T=0.3, method="super", alpha=30.0),
                               learnable=["v_th", "delta_T"], shape=(20,))
        self.readout = LI(LIParameters(), learnable=["tau_mem_inv"], shape=(4,))

    def forward(self, x):
        z, self.state = self.spiking(self.fc1(x) * 3)
        return self.readout(self.fc2(z))[0]


class Conv(nn.Module):
    """Conv2d per step -> LIF over ``[T, B, 2, 5, 5]`` -> Linear -> LI."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3, padding=1), nn.Linear(50, 4)
        self.spiking = LIF()
        self.readout = LI()

    def forward(self, x):
        T, B = x.shape[:2]
        c = self.conv(x.flatten(0, 1)).unflatten(0, (T, B)) * 4
        z, self.state = self.spiking(c)
        return self.readout(self.fc(z.flatten(2)))[0]


class Recurrent(nn.Module):
    """Linear -> LIFAdExRecurrent -> Linear -> LI over ``[T, B, 4]`` (the issue's reproduction,
    learnable constants included)."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(24, 4)
        self.spiking = LIFAdExRecurrent(8, 24, learnable=["v_th", "tau_ada_inv"])
        self.readout = LI()

    def forward(self, x):
        z, self.state = self.spiking(self.fc1(x) * 2)
        return self.readout(self.fc2(z))[0]


MODELS = {"feed_forward": (FeedForward, (6, 3, 6)), "conv": (Conv, (6, 3, 1, 5, 5)),
          "recurrent": (Recurrent, (6, 3, 4))}


def run(model: nn.Module, backend: str, precision: str, x: torch.Tensor):
    """The readout, the spiking layer's final state and every parameter's gradient of one training
    step of ``model`` with its neuron layers on ``backend`` in ``precision``."""
    model = copy.deepcopy(model)
    for layer in (model.spiking, model.readout):
        layer.backend = backend
    if precision == "bf16-true":
        model, x = model.bfloat16(), x.bfloat16()
        context = torch.autocast("cpu", enabled=False)
    else:
        context = torch.autocast("cpu", dtype=HALF[precision])
    with context:
        out = model(x)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
    (out.float() * weights).sum().backward()
    return out, model.state, {name: p.grad for name, p in model.named_parameters()}, model


def within(got: torch.Tensor, ref: torch.Tensor, tolerance: float, name: str) -> None:
    assert got.dtype == ref.dtype and got.shape == ref.shape, name
    scale = ref.float().abs().max()
    error = (got.float() - ref.float()).abs().max()
    assert error <= tolerance * scale, f"{name}: error {error:.3g} at scale {scale:.3g}"


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("family", list(MODELS))
def test_every_backend_trains_in_mixed_precision_as_eager_does(family, precision):
    build, shape = MODELS[family]
    torch.manual_seed(0)
    model = build()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
    ref_out, ref_state, ref_grads, ref_model = run(model, "eager", precision, x)
    half = HALF[precision]
    assert ref_out.dtype == half  # the readout's output in its input's dtype
    assert all(s.dtype == torch.float32 for s in ref_state)  # the state in float32
    assert ref_state[0].abs().max() > 0
    for backend in BACKENDS:
        out, state, grads, trained = run(model, backend, precision, x)
        within(out, ref_out, 1e-5, f"{backend}: readout")
        for name, s, r in zip(type(state)._fields, state, ref_state, strict=True):
            within(s, r, 1e-5, f"{backend}: state.{name}")
        for name, g in grads.items():
            assert g is not None, (backend, name)
            # neuron constants: float32 raw parameters under autocast; half weights: 2 half ulps
            tolerance = 2 * torch.finfo(half).eps
            if g.dtype == torch.float32 and "_raw" in name:
                tolerance = 1e-4 if (backend, family) == ("triton", "recurrent") else 1e-5
            within(g, ref_grads[name], tolerance, f"{backend}: {name}.grad")
        assert trained.spiking.v_leak.dtype == torch.float64  # bf16-true did not round the constants


def test_the_issue_reproduction_trains_with_autocast_on_auto():
    """``Linear`` -> ``LIFAdExRecurrent()`` under ``torch.autocast("cpu", dtype=torch.bfloat16)`` on
    the default backend failed in backward (expected m1 and m2 to have the same dtype)."""
    torch.manual_seed(0)
    linear, layer = nn.Linear(4, 8), LIFAdExRecurrent(8, 16)
    x = torch.rand(10, 3, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = linear(x)
        z, state = layer(h)
    assert h.dtype == z.dtype == torch.bfloat16 and state.v.dtype == torch.float32
    z.float().sum().backward()
    assert linear.weight.grad.dtype == torch.float32 and layer.recurrent_weights.grad.dtype == torch.float32


@pytest.mark.parametrize("backend", ["eager", *BACKENDS])
def test_a_half_input_with_a_float32_state_from_the_last_call_continues_it(backend):
    """A half input continues from the float32 state the last call returned (or one of its own
    dtype): what a truncated sequence passes on; another dtype is refused naming both."""
    layer = LIF(backend=backend)
    x = torch.rand(4, 2, 5).bfloat16() * 4
    z1, state = layer(x)
    z2, state2 = layer(x, state)
    assert state.v.dtype == state2.v.dtype == torch.float32
    half_state = type(state)(*(s.bfloat16() for s in state))
    assert layer(x, half_state)[1].v.dtype == torch.float32
    with pytest.raises(ValueError, match=r"state\.v is torch\.float64 on cpu but the input is torch\.bfloat16 "
                                         r"on cpu \(computed in torch\.float32"):
        layer(x, type(state)(*(s.double() for s in state)))


@pytest.mark.parametrize("convert", ["bfloat16", "half", "float"])
def test_converting_a_module_keeps_its_constants_in_float64(convert):
    """``.bfloat16()`` (Lightning's bf16-true), ``.half()`` and ``.float()`` convert weights and
    learnable raw parameters, not the constants' buffers; ``.double()`` and device moves apply."""
    layer = LIFAdExRecurrent(3, 5, p=LIFAdExParameters(v_th=torch.tensor(1.0 / 3, dtype=torch.float64)),
                             learnable=["tau_mem_inv"])
    converted = getattr(layer, convert)()
    dtype = {"bfloat16": torch.bfloat16, "half": torch.float16, "float": torch.float32}[convert]
    assert converted.input_weights.dtype == converted.tau_mem_inv_raw.dtype == dtype
    assert converted.v_th.dtype == converted.tau_mem_inv_init.dtype == torch.float64
    assert converted.v_th.item() == 1.0 / 3  # not rounded on the way
    assert layer.to("meta").v_th.device.type == "meta"
    assert LIF().to(torch.float32).double().v_th.dtype == torch.float64

