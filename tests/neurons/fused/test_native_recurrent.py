"""The native recurrent loops of the ``cpp`` backend (snn.neurons.fused.cpp.recurrent ``forward`` /
``backward``): the whole time loop in one C++ call, the products through BLAS's GEMM with the
arguments torch's ``mm`` hands it (``gemm_plan``).

Pinned here: the ``cpp`` backend runs them (not the per-step loops); on one thread they give the
per-step loops' results bit for bit (spikes, states and every gradient: the same BLAS calls), and
the eager loop's forward bit for bit for inputs and weights in any layout; on two threads, with
the products and the kernel split over both, the eager loop's spikes and states within the bound
that BLAS's summation order allows; gradcheck of a small case. tests/neurons/fused/test_fused_recurrent.py runs the
backend's equality tests (every surrogate, integrator, learnable parameters, state=None, T = 1,
N = 1) on them, test_fused_recurrent_safety.py fuzzes the memory they are handed.
"""

from __future__ import annotations

import pytest
import torch

from snn.neurons import LIFAdExParameters, LIFAdExState
from snn.neurons.fused import cpp as fused_cpp
from snn.neurons.fused.cpp import recurrent as cpp_recurrent
from snn.neurons.fused.recurrent import _integrate_recurrent as integrate_recurrent
from tests.helpers import assert_close_gradients, require_native_recurrent
from tests.helpers import recurrent_inputs as inputs
from tests.neurons.fused.test_fused_recurrent import BUILTIN, LAYERS, SYMPLECTIC, make_layer, run_both


@pytest.fixture(autouse=True)
def native_loops():
    """Every test here runs the native loops: skipped without them, failed in CI (tests.helpers.unavailable)."""
    require_native_recurrent()


@pytest.fixture
def threads():
    """``threads(n)`` sets torch's (and so MKL's) intra-op threads for the test, restored after it."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def per_step(monkeypatch):
    """``per_step()`` makes the ``cpp`` backend run the per-step loops (the native ones before)."""

    def switch():
        monkeypatch.setattr(cpp_recurrent, "forward", cpp_recurrent.forward_per_step)
        monkeypatch.setattr(cpp_recurrent, "backward", cpp_recurrent.backward_per_step)

    return switch


def test_cpp_backend_runs_the_native_loops(monkeypatch):
    """Forward and backward of ``cpp`` and ``auto`` on CPU go through the one-call loops."""

    def refuse(*args, **kwargs):
        raise AssertionError("the per-step loop ran")

    monkeypatch.setattr(cpp_recurrent, "forward_per_step", refuse)
    monkeypatch.setattr(cpp_recurrent, "backward_per_step", refuse)
    for backend in ("cpp", "auto"):
        for kind in ("adex", "lif"):
            x, state = inputs(kind, torch.float32)
            x.requires_grad_()
            out, final = make_layer(kind, backend, dtype=torch.float32)(x, LAYERS[kind][2](*state))
            (out.sum() + final.v.sum()).backward()
            assert x.grad.abs().max() > 0


def native_and_per_step(kind, per_step, **layer_args):
    dtype = layer_args.setdefault("dtype", torch.float64)
    x, state = inputs(kind, dtype, N=layer_args.get("N", 37))
    native = run_both(kind, x, state, backend="cpp", **layer_args)[1]
    per_step()
    return native, run_both(kind, x, state, backend="cpp", **layer_args)[1]


@pytest.mark.parametrize("method", BUILTIN)
@pytest.mark.parametrize("learnable", [(), "all"], ids=["fixed", "learnable"])
@pytest.mark.parametrize("kind", ["adex", "lif", "adex-symplectic"])
def test_native_equals_per_step_bit_for_bit(kind, learnable, method, per_step, threads):
    """On one thread the native loops make the per-step loops' BLAS calls with the same operands
    in the same order: outputs, final states and every gradient are bit-identical."""
    threads(1)
    params = SYMPLECTIC if kind.endswith("symplectic") else None
    (out, final, grads), (ref_out, ref_final, ref) = native_and_per_step(
        kind.split("-")[0], per_step, method=method, learnable=learnable, params=params)
    assert torch.equal(out, ref_out) and 0 < ref_out.mean() < 1
    assert all(torch.equal(a, b) for a, b in zip(final, ref_final, strict=True))
    assert grads.keys() == ref.keys()
    for name in ref:
        assert torch.equal(grads[name], ref[name]), name


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_native_equals_per_step_in_float32_and_large_populations(kind, dtype, per_step, threads):
    """N beyond a kernel tile, B > 1, float32 too."""
    threads(1)
    (out, final, grads), (ref_out, ref_final, ref) = native_and_per_step(
        kind, per_step, dtype=dtype, N=300, learnable=("tau_mem_inv", "v_th"))
    assert torch.equal(out, ref_out)
    assert all(torch.equal(a, b) for a, b in zip(final, ref_final, strict=True))
    for name in ref:
        assert torch.equal(grads[name], ref[name]), name


def _layouts(x):
    """``x [T, B, F]`` in the layouts a caller may hand a layer, each with the same values."""
    T, B, F = x.shape
    yield "contiguous", x
    yield "transposed", x.transpose(1, 2).contiguous().transpose(1, 2)  # x[t] column-major
    yield "batch-major", x.transpose(0, 1).contiguous().transpose(0, 1)  # [B, T, F] memory
    yield "sliced", torch.stack([x, x], -1).flatten(-2)[..., ::2]  # every other feature: copied per step
    yield "expanded", x[:1].expand(T, B, F)  # one step broadcast over time


@pytest.mark.parametrize("features", [5, 1], ids=["F5", "F1"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_native_forward_bit_identical_to_eager_for_any_layout(kind, dtype, features, threads):
    """Inputs in every layout and transposed weights (the layout a layer keeps when given one):
    the native loops hand GEMM what torch's mm does (operands as they are, or a fresh copy where
    mm makes one; with one input feature the loop multiplies x[t, b] w_in[n] itself, one rounding
    as in GEMM), so on one thread the forward equals the eager loop's bit for bit."""
    threads(1)
    x, state = inputs(kind, dtype, T=30, B=4, F=features, N=300)
    for transposed in (False, True):
        # With autapses the layer multiplies its own W_rec, in the layout it keeps.
        eager = make_layer(kind, "eager", F=features, N=300, dtype=dtype, autapses=True)
        native = make_layer(kind, "cpp", F=features, N=300, dtype=dtype, autapses=True)
        if transposed:
            with torch.no_grad():
                for layer in (eager, native):
                    for name in ("input_weights", "recurrent_weights"):
                        w = getattr(layer, name)
                        setattr(layer, name, torch.nn.Parameter(w.detach().t().contiguous().t()))
        assert native.recurrent_weights.is_contiguous() != transposed
        for name, xl in _layouts(x):
            with torch.no_grad():
                ref_out, ref_state = eager(xl, LAYERS[kind][2](*state))
                out, final = native(xl, LAYERS[kind][2](*state))
            assert 0.02 < ref_out.mean() < 0.8 or name == "expanded", name
            assert torch.equal(out, ref_out), name
            assert all(torch.equal(a, b) for a, b in zip(final, ref_state, strict=True)), (name, transposed)


def test_gemm_plan_copies_what_torch_copies():
    """ATen hands GEMM a strided operand as it is when one of its strides is 1 and copies it
    otherwise; a size-1 dimension's leading dimension is normalised."""
    plan, copy_m1, copy_m2 = cpp_recurrent.gemm_plan((4, 5), (5, 1), (5, 300), (1, 5))  # x[t] @ W_in^T
    assert (plan.transa, plan.transb, plan.m, plan.n, plan.k, plan.swap) == (1, 0, 300, 4, 5, 1)
    assert (plan.lda, plan.ldb, plan.ldc) == (5, 5, 300) and not copy_m1 and not copy_m2
    assert cpp_recurrent.gemm_plan((4, 5), (10, 2), (5, 300), (1, 5))[1:] == (True, False)  # sliced x[t]
    assert cpp_recurrent.gemm_plan((4, 5), (5, 1), (5, 300), (0, 0))[1:] == (False, True)  # expanded W
    assert cpp_recurrent.gemm_plan((3, 1), (1, 1), (1, 7), (1, 1))[0].lda == 1
    assert cpp_recurrent.gemm_plan((3, 0), (1, 1), (0, 7), (1, 1)) is None  # torch fills an empty product


def test_native_loops_on_two_threads_within_the_blas_bound(monkeypatch, threads):
    """Products on two threads (forced for a small population; the neuron update of a step this small
    stays on one, see cpu_kernels.cpp's kParallelStepNeurons): BLAS may split the sums
    otherwise than on one, so the spikes stay those of the eager loop and the states within what
    the summation order allows (T (2 K u S + 8 u M), see test_fused_recurrent's blas_bound);
    gradients within 1e-10 in float64."""
    threads(2)
    monkeypatch.setattr(fused_cpp, "PARALLEL_STEP_MACS", 1)
    for kind in ("adex", "lif"):
        x, state = inputs(kind, torch.float64, T=20, B=4, F=5, N=300)
        (ref_out, ref_final, ref), (out, final, got) = run_both(kind, x, state, backend="cpp", N=300,
                                                                learnable=("tau_mem_inv",))
        assert torch.equal(out, ref_out)
        layer = make_layer(kind, "eager", F=5, N=300)
        u = torch.finfo(torch.float64).eps / 2
        zprev = torch.cat([state[0][None], ref_out[:-1]])
        S = (x.abs() @ layer.input_weights.abs().T + zprev.abs() @ layer.effective_recurrent_weights().abs().T).max()
        K = 5 + 300
        bound = x.shape[0] * (2 * K * u * S + 8 * u * max(s.abs().max() for s in ref_final))
        for a, b in zip(final, ref_final, strict=True):
            assert (a - b).abs().max() <= bound
        assert_close_gradients(ref, got)


def test_gradcheck_small_case():
    """Finite differences through the native loops (below threshold, where the step is smooth and
    the heaviside surrogate adds nothing;
    z0 has spikes, so W_rec has a path): input, both weights, the initial state and per-neuron
    parameters."""
    g = torch.Generator().manual_seed(3)
    T, B, F, N = 4, 2, 2, 3
    x = (torch.rand(T, B, F, generator=g, dtype=torch.float64) * 0.05).requires_grad_()
    w_in = torch.rand(N, F, generator=g, dtype=torch.float64).requires_grad_()
    w_rec = (torch.randn(N, N, generator=g, dtype=torch.float64) * 0.1).requires_grad_()
    v, i, a = (torch.rand(B, N, generator=g, dtype=torch.float64).mul(0.1).requires_grad_() for _ in range(3))
    tau = torch.full((N,), 100.0, dtype=torch.float64).add(torch.rand(N, generator=g, dtype=torch.float64))
    tau.requires_grad_()
    z0 = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], dtype=torch.float64)

    def run(x, w_in, w_rec, v, i, a, tau):
        p = LIFAdExParameters(method="heaviside", adaptation_current=1.5)._replace(tau_mem_inv=tau)
        out, final = integrate_recurrent("adex", "cpp", x, LIFAdExState(z0, v, i, a), w_in, w_rec, p, 1e-3)
        assert not out.any()
        return final.v, final.i, final.a

    assert torch.autograd.gradcheck(run, (x, w_in, w_rec, v, i, a, tau))
