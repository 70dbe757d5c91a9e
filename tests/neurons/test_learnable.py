"""Learnable neuron constants: their parametrization (log time constants, strengths in units of their
start), per-neuron shapes, gradients through the parametrization on every backend, old state dicts.
Their optimizer group, histograms and a training run: tests/training/test_learnable_training.py."""

from __future__ import annotations

import math

import pytest
import torch

from snn.neurons import LI, LIF, LIFAdEx, LIFAdExParameters, LIFAdExRecurrent, LIFRecurrent
from snn.neurons.fused import registry as fused_registry
from tests.helpers import require_cpp_kernels

F64 = torch.float64
ADAPTATION = ("tau_ada_inv", "adaptation_current", "adaptation_spike")


@pytest.fixture
def backend(request, monkeypatch):
    """The backend of the test id: triton through its interpreter on the CPU."""
    name = request.param
    if name == "cpp":
        require_cpp_kernels()
    if name == "triton":
        pytest.importorskip("triton")
        from snn.neurons.fused.triton import TritonBackend

        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setitem(fused_registry.REGISTRY, "triton", TritonBackend(block=64))
    return name


BACKENDS = ["python", "cpp", "triton"]

# --- the parametrization -----------------------------------------------------------------------


def test_a_raw_step_is_the_same_relative_change_at_2_ms_and_at_2_s():
    """Time constants are learned on a log scale: the same step of their raw parameters moves a
    2 ms and a 2 s adaptation time constant by the same factor; strengths move in units of their
    start, so 0.02 and 4 move alike."""
    p = LIFAdExParameters(tau_ada_inv=torch.tensor([500.0, 0.5]), adaptation_current=torch.tensor([4.0, 0.0]),
                          adaptation_spike=torch.tensor([0.02, -0.3]))
    layer = LIFAdEx(p, learnable=ADAPTATION, shape=(2,))
    start = {name: getattr(layer, name).detach().clone() for name in ADAPTATION}
    with torch.no_grad():
        for raw in layer.constant_parameters().values():
            raw.add_(0.1)
    tau = 1 / layer.tau_ada_inv.detach()
    torch.testing.assert_close(tau, torch.tensor([2e-3, 2.0]) * math.exp(-0.1))
    torch.testing.assert_close(layer.adaptation_current.detach(), torch.tensor([4.4, 0.1]))  # 1 where the start is 0
    torch.testing.assert_close(layer.adaptation_spike.detach(), torch.tensor([0.022, -0.27]))  # |start| units
    assert all(torch.equal(getattr(layer, f"{n}_init").float(), start[n]) for n in ADAPTATION)


@pytest.mark.parametrize("backend", ["eager", *BACKENDS], indirect=True)
def test_learnable_constants_compute_what_fixed_ones_do_until_they_are_trained(backend):
    """At the start every learnable constant is its fixed value exactly: outputs bit-identical."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(25, 2, 5, generator=g, dtype=F64) * 4
    p = LIFAdExParameters(tau_ada_inv=1 / torch.linspace(0.05, 2.0, 5, dtype=F64), v_th=0.9)
    fixed = LIFAdEx(p, backend=backend).double()
    learnable = [*ADAPTATION, "tau_mem_inv", "v_th", "delta_T"]
    learned = LIFAdEx(p, backend=backend, learnable=learnable, shape=(5,)).double()
    (z, state), (z_l, state_l) = fixed(x), learned(x)
    assert z.sum() > 0 and torch.equal(z, z_l)
    assert all(torch.equal(a, b) for a, b in zip(state, state_l, strict=True))


def raw_leaves(layer) -> dict[str, torch.Tensor]:
    return {f"{name}_raw": raw.detach().clone().requires_grad_(True)
            for name, raw in layer.constant_parameters().items()}


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("kind", ["adex", "lif", "li"])
def test_gradcheck_through_the_parametrization_feed_forward(kind, backend):
    """Float64 finite differences of the raw parameters of every learnable constant, per neuron,
    through the fused loop: the kernels get the constants, autograd outside them carries the
    gradient on to the raw parameters. Below threshold, with the heaviside surrogate (whose
    derivative is 0, so the backward is the exact derivative of the sub-threshold dynamics)."""
    cls, fields = {"adex": (LIFAdEx, (*ADAPTATION, "tau_mem_inv", "tau_syn_inv", "delta_T", "v_leak")),
                   "lif": (LIF, ("tau_mem_inv", "tau_syn_inv", "v_leak")),
                   "li": (LI, ("tau_mem_inv", "tau_syn_inv", "v_leak"))}[kind]
    p = cls.parameters_class(**({"adaptation_current": 1.5} if kind == "adex" else {}),
                             **({} if kind == "li" else {"method": "heaviside"}))
    layer = cls(p, learnable=fields, shape=(3,), backend=backend).double()
    with torch.no_grad():  # every neuron's constants differ
        for k, raw in enumerate(layer.constant_parameters().values()):
            raw.copy_(torch.tensor([0.3, -0.2, 0.1]) * (k % 3 - 1))
    x = torch.rand(12, 2, 3, generator=torch.Generator().manual_seed(1), dtype=F64) * 0.3
    leaves = raw_leaves(layer)

    def final_state(*raws):
        out, state = torch.func.functional_call(layer, dict(zip(leaves, raws, strict=True)), (x,))
        assert kind == "li" or not out.any()
        return (out, *state) if kind == "li" else tuple(state)

    # The interpreted triton kernels are slow: a random projection of the Jacobian (fast mode) there.
    assert torch.autograd.gradcheck(final_state, tuple(leaves.values()), fast_mode=backend == "triton")


@pytest.mark.parametrize("backend", BACKENDS, indirect=True)
@pytest.mark.parametrize("cls", [LIFAdExRecurrent, LIFRecurrent])
def test_gradcheck_through_the_parametrization_recurrent(cls, backend):
    fields = (*ADAPTATION, "tau_mem_inv") if cls is LIFAdExRecurrent else ("tau_mem_inv", "tau_syn_inv", "v_leak")
    torch.manual_seed(0)
    layer = cls(2, 4, cls.parameters_class(method="heaviside"), learnable=fields, backend=backend).double()
    with torch.no_grad():
        for k, raw in enumerate(layer.constant_parameters().values()):
            raw.copy_(torch.tensor([0.3, -0.2, 0.1, 0.0]) * (k % 3 - 1))
        layer.recurrent_weights.mul_(0.1)
    x = torch.rand(10, 2, 2, generator=torch.Generator().manual_seed(1), dtype=F64) * 0.3
    leaves = raw_leaves(layer)

    def final_state(*raws):
        out, state = torch.func.functional_call(layer, dict(zip(leaves, raws, strict=True)), (x,))
        assert not out.any()
        return tuple(state)[1:]

    # The interpreted triton kernels are slow: a random projection of the Jacobian (fast mode) there.
    assert torch.autograd.gradcheck(final_state, tuple(leaves.values()), fast_mode=backend == "triton")


def test_constants_refuse_what_they_cannot_learn():
    with pytest.raises(ValueError, match=r"LIFAdEx\(learnable=\['tau_ada_inv', \.\.\.\]\) learns one value per "
                                         r"neuron.*pass shape=\(N,\).*shape=\(\) to learn one value shared"):
        LIFAdEx(learnable=("tau_ada_inv",))
    with pytest.raises(ValueError, match=r"tau_ada_inv is learnable and starts at 0\.0.*log scale.*> 0"):
        LIFAdEx(LIFAdExParameters(tau_ada_inv=0.0), learnable=("tau_ada_inv",), shape=(3,))
    with pytest.raises(ValueError, match=r"learns its constants at shape \(5,\).*got shape=\[4\]"):
        LIFAdExRecurrent(3, 5, learnable=("tau_ada_inv",), shape=(4,))
    layer = LIFAdEx(learnable=("tau_ada_inv",), shape=(3,))
    with pytest.raises(ValueError, match=r"tau_ada_inv must be >= 0 .*got -1\.0"):
        layer.tau_ada_inv = -1.0


def test_recurrent_layers_take_shape_and_learn_per_neuron():
    """The recurrent layers know their population: learnable constants are per neuron with or
    without shape=(H,); shape=() shares one value."""
    for cls in (LIFAdExRecurrent, LIFRecurrent):
        for shape in (None, (6,)):
            layer = cls(3, 6, learnable=("tau_mem_inv",), shape=shape)
            assert layer.tau_mem_inv_raw.shape == (6,) and layer.tau_mem_inv.shape == (6,)
        assert cls(3, 6, learnable=("tau_mem_inv",), shape=()).tau_mem_inv_raw.shape == ()
        z, _ = cls(3, 6, shape=(6,))(torch.rand(5, 2, 3))  # shape without learnable: nothing to learn
        assert z.shape == (5, 2, 6)


def test_state_dict_of_a_learnable_constant_saved_as_its_value_loads():
    """Checkpoints written before the raw parametrization hold a learnable constant's value under
    its own name: it loads as the start, with raw 0, and the layer computes what it did."""
    layer = LIFAdEx(learnable=("tau_ada_inv", "v_th"), shape=(3,))
    old = {k: v for k, v in layer.state_dict().items() if not k.startswith(("tau_ada_inv_", "v_th_"))}
    old["tau_ada_inv"] = torch.tensor([1.0, 2.0, 3.0])
    old["v_th"] = torch.tensor([0.9, 1.0, 1.1])
    layer.load_state_dict(old)
    assert torch.equal(layer.tau_ada_inv, torch.tensor([1.0, 2.0, 3.0]))
    assert torch.equal(layer.v_th, torch.tensor([0.9, 1.0, 1.1]))
    assert not layer.tau_ada_inv_raw.any()
