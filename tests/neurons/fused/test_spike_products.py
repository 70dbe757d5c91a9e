"""The spike-sparse recurrent products of the ``cpp`` backend (snn.neurons.fused.cpp.recurrent):
``W_rec z_{t-1}`` as a gather-add over each sample's active neurons, and the recurrent weight
gradient summed over the active pre-synaptic neurons only, chosen against the dense products by
``SNN_SPIKE_PRODUCTS`` and the spike rate.

Pinned here: the choice (``dense`` never, ``sparse`` always, ``auto`` by rate and size, a clear
error for another value); with weights and gradients whose sums are exact in any order (dyadic
values) the sparse results equal the dense ones bit for bit (so every index and every step is
right); with random values, within the documented bound ``2 gamma_K sum |terms|``; spikes identical;
gradcheck in float64 through the sparse path. test_fused_recurrent_safety.py fuzzes it.
"""

from __future__ import annotations

import pytest
import torch

from snn.neurons import LIFAdExParameters, LIFAdExState
from snn.neurons.fused.cpp import recurrent as cpp_recurrent
from snn.neurons.fused.recurrent import _integrate_recurrent as integrate_recurrent
from snn.neurons.fused.recurrent import spikes_before
from tests.helpers import make_recurrent_layer

pytestmark = pytest.mark.skipif(not cpp_recurrent.native_available(), reason="the library found no BLAS GEMM")


@pytest.fixture
def products(monkeypatch):
    """``products(mode)`` sets ``SNN_SPIKE_PRODUCTS`` for the rest of the test."""
    return lambda mode: monkeypatch.setenv(cpp_recurrent.ENV, mode)


def counters():
    return dict(cpp_recurrent.STATS)


def grew(before, key):
    return cpp_recurrent.STATS[key] - before[key]


def test_mode_is_read_from_the_environment(products):
    products("dense")
    assert cpp_recurrent.sparse_max_rate(128, 256, 0.3) is None
    products("sparse")
    assert cpp_recurrent.sparse_max_rate(1, 1, 0.3) == 1.0
    products("auto")
    assert cpp_recurrent.sparse_max_rate(128, 256, 0.3) == 0.3
    assert cpp_recurrent.sparse_max_rate(2, 5, 0.3) is None  # below SPARSE_MIN_MACS: the exact dense path
    products(" Sparse ")
    assert cpp_recurrent.sparse_max_rate(2, 5, 0.3) == 1.0
    products("fast")
    with pytest.raises(ValueError, match="SNN_SPIKE_PRODUCTS='fast'.*auto, dense, sparse"):
        cpp_recurrent.sparse_max_rate(2, 5, 0.3)


def dyadic(shape, g, scale, dtype):
    """Values k / 64 with |k| <= 64 scale: sums of a few thousand of them are exact in float32."""
    return (torch.randint(-64 * scale, 64 * scale + 1, shape, generator=g) / 64).to(dtype)


def layer_run(kind, mode, products, layer, x, state):
    products(mode)
    x = x.clone().requires_grad_()
    layer.zero_grad()
    out, final = layer(x, state)
    (out.sum() * 1.5 + sum(s.sum() * (k + 2) for k, s in enumerate(final))).backward()
    grads = {"x": x.grad, **{n: p.grad.clone() for n, p in layer.named_parameters()}}
    return out.detach(), [s.detach() for s in final], grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_sparse_equals_dense_bit_for_bit_when_sums_are_exact(kind, dtype, products):
    """Dyadic recurrent weights: every sum of the forward's ``W_rec z`` is exact in either order, so
    the gather-add and BLAS give the same currents, spikes and states; the weight gradient of
    dyadic ``g_c`` (a loss weighting spikes only, through the heaviside surrogate: g_c is a dyadic
    multiple of the spikes' weights) likewise."""
    g = torch.Generator().manual_seed(4)
    T, B, F, N = 30, 4, 3, 48
    layer = make_recurrent_layer(kind, "cpp", F=F, N=N, method="heaviside", dtype=dtype)
    with torch.no_grad():
        layer.recurrent_weights.copy_(dyadic((N, N), g, 1, dtype) * 0.5)
        layer.input_weights.copy_(dyadic((N, F), g, 1, dtype).abs() + 0.25)
    x = (torch.rand(T, B, F, generator=g) * 0.5).to(dtype)
    before = counters()
    dense = layer_run(kind, "dense", products, layer, x, None)
    assert grew(before, "forward_steps") == 0 and grew(before, "weight_steps") == 0
    sparse = layer_run(kind, "sparse", products, layer, x, None)
    assert grew(before, "forward_sparse_steps") == T - 1 and grew(before, "weight_sparse_steps") > 0
    rate = dense[0].mean().item()
    assert 0.02 < rate < 0.6, rate
    assert torch.equal(sparse[0], dense[0])
    assert all(torch.equal(a, b) for a, b in zip(sparse[1], dense[1], strict=True))
    # The input and W_in gradients run the same dense products in both modes on the same g_c.
    assert torch.equal(sparse[2]["x"], dense[2]["x"])
    ref = dense[2]["recurrent_weights"]
    assert ref.abs().max() > 0
    # g_c is not dyadic here (the surrogate's chain multiplies by c_mem): within the bound below.
    assert_within_sum_bound(sparse[2]["recurrent_weights"], ref, None, T * B)


def assert_within_sum_bound(got, ref, abs_terms, K):
    """|got - ref| <= 2 gamma_K sum |terms| (two orders of the same K-term sums), with the sum of
    |terms| bounded by ``abs_terms`` (None: by K max |ref|, a looser check)."""
    eps = torch.finfo(ref.dtype).eps / 2
    gamma = K * eps / (1 - K * eps)
    bound = 2 * gamma * (abs_terms if abs_terms is not None else K * ref.abs().max())
    assert torch.all((got - ref).abs() <= bound), (got - ref).abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("vth", ["scalar", "per-neuron"])
@pytest.mark.parametrize("z0", [None, "values"])
def test_weight_gradient_equals_the_dense_product(dtype, vth, z0, products):
    """``weight_gradient`` against ``g_c^T z_{t-1}`` (``spikes_before``, one GEMM): bit for bit on
    dyadic ``g_c`` (exact sums), within ``2 gamma_K sum |g z|`` on random ``g_c``; steps over the
    crossover rate (the late steps here) take GEMM, sparse ones the scatter-add, in one call; a
    ``z0`` with arbitrary values (its step by GEMM) and per-neuron thresholds."""
    products("auto")
    g = torch.Generator().manual_seed(5)
    T, B, N = 37, 64, 128  # B N^2 = 2^20: auto may go sparse
    vd = torch.rand(T, B, N, generator=g, dtype=dtype)
    vd[: T // 2] -= 0.9  # early steps: ~10 % above threshold; late ones ~ 50 % (dense steps)
    vd[T // 2 :] -= 0.5
    v_th = torch.zeros(()) if vth == "scalar" else torch.rand(N, generator=g) * 0.02
    v_th = v_th.to(dtype)
    z0t = None if z0 is None else dyadic((B, N), g, 1, dtype)
    zprev = spikes_before(vd, 0.0 if z0t is None else z0t, v_th)
    for gc in (dyadic((T, B, N), g, 4, dtype), torch.randn(T, B, N, generator=g, dtype=dtype)):
        before = counters()
        got = cpp_recurrent.weight_gradient(gc, vd, z0t, v_th)
        assert 0 < grew(before, "weight_sparse_steps") < grew(before, "weight_steps")
        ref = gc.flatten(0, 1).t() @ zprev.flatten(0, 1)
        assert got.shape == (N, N) and got.dtype == dtype and got.is_contiguous()
        if gc.eq(gc.mul(64).round().div(64)).all():
            assert torch.equal(got, ref)
        else:
            terms = gc.flatten(0, 1).abs().t() @ zprev.flatten(0, 1).abs()
            assert_within_sum_bound(got, ref, terms, T * B)
    products("dense")
    assert cpp_recurrent.weight_gradient(gc, vd, z0t, v_th) is None  # the node multiplies densely


@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_auto_chooses_by_rate_and_random_weights_stay_within_the_bound(kind, products):
    """``auto`` on a step product of at least ``SPARSE_MIN_MACS``: sparse steps at a low rate, dense
    ones at a high rate; the spikes equal the dense path's and the states stay within rounding of
    it (random weights: the sums differ in order only)."""
    T, B, F, N = 12, 64, 1, 128
    layer = make_recurrent_layer(kind, "cpp", F=F, N=N, dtype=torch.float32)
    for scale, expect_sparse in ((0.3, True), (40.0, False)):
        x = torch.rand(T, B, F, generator=torch.Generator().manual_seed(6)) * scale
        before = counters()
        products("auto")
        with torch.no_grad():
            out, final = layer(x)
        rate = grew(before, "forward_spikes") / max(1, grew(before, "forward_steps")) / (B * N)
        sparse_steps = grew(before, "forward_sparse_steps")
        assert (rate <= cpp_recurrent.FORWARD_MAX_RATE) == expect_sparse, rate
        assert sparse_steps == (T - 1 if expect_sparse else 0) or not expect_sparse and sparse_steps < T - 1
        products("dense")
        with torch.no_grad():
            ref_out, ref_final = layer(x)
        assert torch.equal(out, ref_out)
        for a, b in zip(final, ref_final, strict=True):
            assert (a - b).abs().max() <= 1e-4 * max(1.0, b.abs().max().item())


def test_gradcheck_through_the_sparse_path(products):
    """Finite differences through the forced sparse products, with spikes after the first step
    (heaviside surrogate: the spikes are locally constant, so the gradient is the true one), z0
    with spikes: input, both weights, the initial state."""
    products("sparse")
    g = torch.Generator().manual_seed(3)
    T, B, F, N = 12, 2, 2, 5  # step 0 (z0) by GEMM, the later ones sparse
    x = (torch.rand(T, B, F, generator=g, dtype=torch.float64) * 60).requires_grad_()
    w_in = torch.rand(N, F, generator=g, dtype=torch.float64).add(0.5).requires_grad_()
    w_rec = (torch.randn(N, N, generator=g, dtype=torch.float64) * 2).requires_grad_()
    v, i, a = (torch.rand(B, N, generator=g, dtype=torch.float64).mul(0.1).requires_grad_() for _ in range(3))
    z0 = torch.tensor([[1.0, 0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    before = counters()

    def run(x, w_in, w_rec, v, i, a):
        p = LIFAdExParameters(method="heaviside")
        out, final = integrate_recurrent("adex", "cpp", x, LIFAdExState(z0, v, i, a), w_in, w_rec, p, 1e-3)
        assert out[:-1].any()
        return final.v, final.i, final.a

    assert torch.autograd.gradcheck(run, (x, w_in, w_rec, v, i, a))
    assert grew(before, "forward_sparse_steps") > 0 and grew(before, "weight_sparse_steps") > 0


@pytest.mark.parametrize("kind", ["adex", "lif"])
@pytest.mark.parametrize("z0", [None, "values"])
def test_backward_loop_sums_the_weight_gradient_as_weight_gradient_does(kind, z0, products):
    """The native backward's W_rec gradient (summed inside its loop, step by step) equals
    ``weight_gradient`` on the g_c and saved voltages it returns, bit for bit: the same terms in
    the same order (descending t, ascending b); sparse steps and dense ones in one call; None in
    ``dense`` mode (the node multiplies)."""
    from snn.neurons.fused.spec import NEURON_SPECS, KernelOptions, kernel_parameters

    products("auto")
    g = torch.Generator().manual_seed(8)
    T, B, F, N = 16, 64, 2, 128
    layer = make_recurrent_layer(kind, "cpp", F=F, N=N, dtype=torch.float32)
    x = torch.rand(T, B, F, generator=g) * 8
    x[T // 2 :] *= 6  # late steps fire more: dense steps beside sparse ones
    spec = NEURON_SPECS[kind]
    p = layer.p
    P = tuple(torch.as_tensor(v, dtype=torch.float32) for v in kernel_parameters(kind, p, 1e-3))
    options = KernelOptions(method=p.method, alpha=float(p.alpha), integrator=getattr(p, "integrator", "euler"))
    state = [torch.zeros(B, N) for _ in spec.state]
    z0t = None if z0 is None else dyadic((B, N), g, 1, torch.float32)
    w_in, w_rec = layer.input_weights.detach(), layer.recurrent_weights.detach()
    with torch.no_grad():
        _, _, saved = cpp_recurrent.forward(kind, x, w_in, w_rec, torch.zeros(B, N) if z0t is None else z0t,
                                            state, P, True, False, options)
        gout = torch.randn(T, B, N, generator=g)
        gstate = [torch.randn(B, N, generator=g) for _ in spec.state]
        before = counters()
        gc, *_, gw = cpp_recurrent.backward(kind, gout, None, gstate, saved, state[0], w_rec, P, options, False,
                                            z0t, True)
        assert 0 < grew(before, "weight_sparse_steps") < grew(before, "weight_steps") == T - 1
        ref = cpp_recurrent.weight_gradient(gc, saved[0], z0t, P[-2])
        assert gw is not None and torch.equal(gw, ref)
        products("dense")
        assert cpp_recurrent.backward(kind, gout, None, gstate, saved, state[0], w_rec, P, options, False, z0t,
                                      True)[-1] is None
