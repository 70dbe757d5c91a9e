"""The fused recurrent loops (snn.neurons.fused.recurrent: the ``python`` and ``cpp`` backends)
against the eager step-by-step loop.

Forward: spikes and final states bit-identical (float32 and float64) on one thread: the loops make
the eager loop's BLAS calls. Where the products run on other thread counts (the loops run a small
step's on one, the eager loop on all): the same spikes, states within a stated bound
(``blas_bound``).
Backward: gradients of the input, both weight matrices, the initial state and learnable per-neuron
parameters equal to autograd through ``lif_adex_step``/``lif_step`` within 1e-10 relative in
float64, for every built-in surrogate. tests/neurons/test_norse_equivalence.py compares the layers (default backend)
with norse.
"""

from __future__ import annotations

import pytest
import torch

from snn.neurons import (
    LIFAdExParameters,
    LIFAdExRecurrent,
    LIFAdExState,
    LIFParameters,
    LIFRecurrent,
)
from snn.neurons.fused import cpp as fused_cpp
from snn.neurons.fused import recurrent
from snn.neurons.fused import registry as fused_registry
from snn.neurons.fused.python import feed_forward as python_loops
from snn.neurons.fused.recurrent import _integrate_recurrent as integrate_recurrent
from snn.neurons.surrogate import SURROGATES, register_surrogate
from tests.helpers import assert_close_gradients, make_recurrent_layer, recurrent_layer_classes, weighted_loss
from tests.helpers import recurrent_inputs as inputs

LAYERS = {kind: recurrent_layer_classes(kind) for kind in ("adex", "lif")}
make_layer = make_recurrent_layer
BUILTIN = ["super", "triangle", "sigmoid", "atan", "tanh", "heaviside"]
FUSED = ["python", "cpp"]




def run_both(kind, x, state, loss=weighted_loss, backend="python", **layer_args):
    """Eager and ``backend`` from the same weights, inputs and state: outputs, final states and the
    gradients of ``loss`` with respect to everything that has one."""
    results = []
    for b in ("eager", backend):
        layer = make_layer(kind, b, F=x.shape[-1], **layer_args)
        xb = x.clone().requires_grad_()
        sb = None if state is None else [s.clone().requires_grad_() for s in state]
        out, final = layer(xb, None if sb is None else LAYERS[kind][2](*sb))
        loss(out, final).backward()
        grads = {
            "x": xb.grad,
            **{f"state.{f}": s.grad for f, s in zip(final._fields, sb or [], strict=False)},
        }
        grads.update({name: p.grad for name, p in layer.named_parameters()})
        results.append((out.detach(), [s.detach() for s in final], grads))
    return results


@pytest.mark.exactness
@pytest.mark.usefixtures("one_blas_thread")
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("sizes", [(4, 5, 300), (2, 3, 37)], ids=["B4N300", "B2N37"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_forward_bit_identical(kind, dtype, sizes, backend):
    """The loops make the eager loop's BLAS calls (``W_in x_t`` and ``W_rec z_{t-1}`` per step, not
    one GEMM over all steps; operands aligned as eager's), so on one thread, where both run the
    products alike, the forward is bit-identical. (On more threads the loops still run a small
    step's products on one: test_forward_on_more_threads_within_the_blas_bound.) B = 2, N = 37:
    the rows of step t's spikes start at an offset no allocation has, and BLAS rounds by
    alignment: the loops must multiply a z of their own, as eager does."""
    B, F, N = sizes
    x, state = inputs(kind, dtype, T=40, B=B, F=F, N=N)
    with torch.no_grad():
        ref_out, ref_state = make_layer(kind, "eager", F=F, N=N, dtype=dtype)(
            x, LAYERS[kind][2](*state)
        )
        out, final = make_layer(kind, backend, F=F, N=N, dtype=dtype)(x, LAYERS[kind][2](*state))
    assert 0.02 < ref_out.mean() < 0.8, "some, not all, neurons must spike"
    assert torch.equal(out, ref_out)
    assert all(torch.equal(a, b) for a, b in zip(final, ref_state, strict=True))


def blas_bound(layer, x, z0, out, final):
    r"""What a BLAS of any CPU and thread count may change in the final state: each current
    :math:`c_t = W_{\text{in}} x_t + W_{\text{rec}} z_{t-1}` is a sum of at most ``K`` products,
    which any summation order rounds within :math:`\gamma_K S_t` of the exact sum, :math:`S_t =
    |W_{\text{in}}| |x_t| + |W_{\text{rec}}| |z_{t-1}|`, :math:`\gamma_K \le K u`; two orders differ
    by twice that. The neuron update is the same operations on both sides and contracts (leak, decay)
    or resets a difference, so over ``T`` steps the states differ by at most ``T`` times the largest
    current difference, plus a rounding of the state per operation: bound ``T (2 K u S + 8 u M)``
    with ``M`` the largest state, as long as no voltage lies within that of the threshold (then a
    spike would differ; the test checks that none does)."""
    u = torch.finfo(x.dtype).eps / 2
    w_in, w_rec = layer.input_weights.abs(), layer.effective_recurrent_weights().abs()
    zprev = torch.cat([z0[None], out[:-1]])
    S = (x.abs() @ w_in.T + zprev.abs() @ w_rec.T).max()
    K = w_in.shape[1] + w_rec.shape[1]
    M = max(s.abs().max() for s in final)
    return x.shape[0] * (2 * K * u * S + 8 * u * M)


@pytest.mark.exactness
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_forward_on_more_threads_within_the_blas_bound(kind, dtype, backend, intra_op_threads):
    """What holds on any CPU and thread count. On two threads the eager loop runs its products on
    both, the fused loops (steps below ``PARALLEL_STEP_MACS`` / ATen's grain size) on one, and MKL
    rounds ``[4, 300] x [300, 300]`` differently on one and two threads (AVX-512 Xeon: the final
    current one ulp off): the same spikes, states within :func:`blas_bound` (a worst-case bound,
    far above what the BLAS does: docs/guides/backends.md, "Exactness")."""
    intra_op_threads(2)
    x, state = inputs(kind, dtype, T=40, B=4, F=5, N=300)
    with torch.no_grad():
        ref_out, ref_state = make_layer(kind, "eager", F=5, N=300, dtype=dtype)(x, LAYERS[kind][2](*state))
        out, final = make_layer(kind, backend, F=5, N=300, dtype=dtype)(x, LAYERS[kind][2](*state))
        bound = blas_bound(make_layer(kind, "eager", F=5, N=300, dtype=dtype), x, state[0], ref_out, ref_state)
    assert 0.02 < ref_out.mean() < 0.8, "some, not all, neurons must spike"
    assert torch.equal(out, ref_out)
    for name, a, b in zip(final._fields, final, ref_state, strict=True):
        assert (a - b).abs().max() <= bound, f"state.{name}: {(a - b).abs().max():.3g} > {bound:.3g}"


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("method", BUILTIN)
@pytest.mark.parametrize("learnable", [(), "all"], ids=["fixed", "learnable"])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_gradients_equal_eager(kind, learnable, method, backend):
    """Both backward loops of each backend (python: block-wise without parameter gradients,
    step-wise with), every surrogate: gradients of x, W_in, W_rec, the initial state and per-neuron
    parameters."""
    x, state = inputs(kind, torch.float64)
    (ref_out, ref_final, ref), (out, final, got) = run_both(
        kind, x, state, backend=backend, method=method, learnable=learnable
    )
    assert torch.equal(out, ref_out)
    assert 0 < ref_out.mean() < 1
    assert_close_gradients(ref, got)
    if method != "heaviside":
        assert ref["recurrent_weights"].abs().max() > 0 and ref["state.z"].abs().max() > 0


@pytest.mark.exactness
@pytest.mark.usefixtures("one_blas_thread")
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("autapses", [False, True])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_autapses_and_rest_state(kind, autapses, backend):
    """state=None (from rest: z0 = 0, v0 a broadcast of v_leak) with and without self-connections;
    without them the diagonal of W_rec gets no gradient."""
    x, _ = inputs(kind, torch.float64, T=20, state=False)
    (ref_out, ref_final, ref), (out, final, got) = run_both(
        kind, x, None, backend=backend, autapses=autapses, learnable=("tau_mem_inv",)
    )
    assert torch.equal(out, ref_out)
    assert all(torch.equal(a, b) for a, b in zip(final, ref_final, strict=True))
    assert_close_gradients(ref, got)
    assert (got["recurrent_weights"].diagonal() == 0).all() != autapses


@pytest.mark.exactness
@pytest.mark.usefixtures("one_blas_thread")
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("shape", [(1, 3, 1), (1, 2, 37), (9, 1, 1), (5, 2, 300)], ids=str)
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_odd_sizes(kind, shape, backend):
    """T = 1, B = 1, N = 1 and N not a multiple of any tile or block."""
    T, B, N = shape
    x, state = inputs(kind, torch.float64, T=T, B=B, N=N)
    (ref_out, _, ref), (out, _, got) = run_both(kind, x, state, backend=backend, N=N, learnable=())
    assert torch.equal(out, ref_out)
    assert_close_gradients(ref, got)


@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_backward_in_blocks_of_steps(kind, monkeypatch):
    """Blocks of 5, 5 and 2 of the 12 steps give the gradients of one block."""
    monkeypatch.setattr(python_loops, "BLOCK_VALUES", 5 * 3 * 37)
    assert python_loops._block(12, 3 * 37) == 5
    x, state = inputs(kind, torch.float64)
    (_, _, ref), (_, _, got) = run_both(kind, x, state)
    assert_close_gradients(ref, got)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_gradient_from_final_state_only(kind, backend):
    """No gradient reaches the spikes (only the final ``v``): the node gets None for them."""
    x, state = inputs(kind, torch.float64)
    (_, _, ref), (_, _, got) = run_both(
        kind, x, state, backend=backend, loss=lambda out, final: final.v.square().sum()
    )
    assert_close_gradients(ref, got)
    assert ref["x"].abs().max() > 0


# AdEx's symplectic integrator, with v_reset != v_leak (see tests/neurons/fused/test_fused.py).
SYMPLECTIC = {"integrator": "symplectic", "adaptation_current": 2.0, "v_reset": -0.2}


@pytest.mark.exactness
@pytest.mark.usefixtures("one_blas_thread")
@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_symplectic_forward_bit_identical(dtype, backend):
    x, state = inputs("adex", dtype, T=40, B=4, F=5, N=300)
    runs = {}
    with torch.no_grad():
        for name, b, params in (("eager", "eager", SYMPLECTIC), ("fused", backend, SYMPLECTIC),
                                ("euler", backend, {**SYMPLECTIC, "integrator": "euler"})):
            layer = make_layer("adex", b, F=5, N=300, dtype=dtype, params=params)
            runs[name] = layer(x, LIFAdExState(*state))
    (ref_out, ref_state), (out, final), (_, euler) = runs["eager"], runs["fused"], runs["euler"]
    assert 0.02 < ref_out.mean() < 0.8, "some, not all, neurons must spike"
    assert torch.equal(out, ref_out)
    assert all(torch.equal(a, b) for a, b in zip(final, ref_state, strict=True))
    assert not torch.equal(euler.a, ref_state.a)  # the integrators differ


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("method", ["super", "sigmoid", "atan"])
@pytest.mark.parametrize("learnable", [(), "all"], ids=["fixed", "learnable"])
def test_symplectic_gradients_equal_eager(learnable, method, backend):
    """Both backward loops of each backend with the symplectic integrator: gradients of x, W_in,
    W_rec, the initial state and per-neuron parameters within 1e-10 of autograd."""
    x, state = inputs("adex", torch.float64)
    (ref_out, _, ref), (out, _, got) = run_both(
        "adex", x, state, backend=backend, method=method, learnable=learnable, params=SYMPLECTIC
    )
    assert torch.equal(out, ref_out)
    assert 0 < ref_out.mean() < 1
    assert_close_gradients(ref, got)


@pytest.mark.parametrize("backend", ["auto", *FUSED])
def test_symplectic_runs_the_fused_node(backend, monkeypatch):
    """The symplectic integrator runs on the fused loops (auto: cpp on CPU), not the step loop."""
    ran = []
    for name, loops in fused_registry.REGISTRY.items():
        monkeypatch.setitem(fused_registry.REGISTRY, name, _Recording(loops, name, ran))
    x = torch.rand(5, 3, 3, dtype=torch.float64, requires_grad=True)
    out, _ = make_layer("adex", backend, params=SYMPLECTIC)(x)
    assert type(out.grad_fn).__name__ == "FusedRecurrentLoopBackward"
    assert ran == ["cpp" if backend == "auto" else backend]


def test_symplectic_python_backward_in_blocks_of_steps(monkeypatch):
    monkeypatch.setattr(python_loops, "BLOCK_VALUES", 5 * 3 * 37)
    x, state = inputs("adex", torch.float64)
    (ref_out, _, ref), (out, _, got) = run_both("adex", x, state, params=SYMPLECTIC)
    assert torch.equal(out, ref_out)
    assert_close_gradients(ref, got)


def test_default_backend_runs_one_node(monkeypatch):
    """``auto`` runs the fused node on the ``cpp`` loops on CPU (so the norse equivalence tests of
    the layers cover them), and the ``python`` loops for a surrogate the kernels do not have."""
    ran = []
    for name, loops in fused_registry.REGISTRY.items():
        monkeypatch.setitem(fused_registry.REGISTRY, name, _Recording(loops, name, ran))
    register_surrogate("test_recurrent_custom", SURROGATES["super"])
    try:
        for layer_class, params_class in ((LIFAdExRecurrent, LIFAdExParameters), (LIFRecurrent, LIFParameters)):
            layer = layer_class(2, 4)
            assert layer.backend == "auto" and "backend='auto'" in repr(layer)
            out, _ = layer(torch.rand(5, 3, 2, requires_grad=True))
            assert type(out.grad_fn).__name__ == "FusedRecurrentLoopBackward"
            custom = layer_class(2, 4, params_class(method="test_recurrent_custom"))
            custom(torch.rand(5, 3, 2))
    finally:
        SURROGATES.pop("test_recurrent_custom")
    assert ran == ["cpp", "python", "cpp", "python"]


class _Recording:
    """A backend that records its name when its recurrent forward runs."""

    def __init__(self, loops, name, ran):
        self.loops, self.name, self.ran = loops, name, ran
        self.why_not, self.recurrent_backward = loops.why_not, loops.recurrent_backward

    def recurrent_forward(self, *args):
        self.ran.append(self.name)
        return self.loops.recurrent_forward(*args)


def saved_bytes(layer, x, state=None):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x, state)
    return total


@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_saved_bytes_per_neuron_and_step(kind):
    """Per step (the difference between 100 and 50 steps, from rest): the pre-reset voltage, 4
    bytes per neuron in float32, and the input x; the eager loop keeps several times more."""
    B, F, N = 4, 1, 256
    per_step = {}
    for backend in ("python", "cpp", "eager"):
        layer = make_layer(kind, backend, F=F, N=N, dtype=torch.float32)
        totals = [saved_bytes(layer, torch.rand(T, B, F, requires_grad=True)) for T in (50, 100)]
        per_step[backend] = (totals[1] - totals[0]) / 50
    assert per_step["python"] == per_step["cpp"] == 4 * B * N + 4 * B * F
    assert per_step["eager"] >= 4 * per_step["python"]


def test_bad_input_errors():
    layer = LIFAdExRecurrent(3, 5)
    with pytest.raises(ValueError, match="expects 3 input features"):
        layer(torch.rand(4, 2, 7))
    state = layer.initial_state(torch.rand(4, 2, 3))
    with pytest.raises(ValueError, match=r"state.z must have shape \[6, 5\]"):
        layer(torch.rand(4, 6, 3), state)  # a state of batch size 2 for a batch of 6
    with pytest.raises(ValueError, match="Recurrent layers have the backends auto, cpp, triton, python, eager"):
        LIFRecurrent(3, 5, backend="compile")
    half = LIFRecurrent(3, 5).half()
    zeros = half.initial_state(torch.rand(4, 2, 3)).__class__(*(torch.zeros(2, 5).half() for _ in range(3)))
    with pytest.raises(ValueError, match="backend='cpp' cannot run this lif layer: it runs on CPU in float32/float64"):
        integrate_recurrent("lif", "cpp", torch.rand(4, 2, 3).half(), zeros, half.input_weights,
                            half.recurrent_weights, LIFParameters(), 1e-3)
    x = torch.rand(4, 2, 3)
    p = LIFAdExParameters()
    with pytest.raises(
        ValueError, match=r"recurrent_weights must have shape \[5, 5\].*got \[5, 4\]"
    ):
        integrate_recurrent("adex", "python", x, state, torch.rand(5, 3), torch.rand(5, 4), p, 1e-3)
    with pytest.raises(ValueError, match=r"input_weights must have shape \[5, 3\].*got \[5, 2\]"):
        integrate_recurrent("adex", "python", x, state, torch.rand(5, 2), torch.rand(5, 5), p, 1e-3)


@pytest.mark.exactness
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_cpp_steps_on_all_threads_give_the_same_results(kind, monkeypatch):
    """Large populations run each step's products and kernel on all threads (PARALLEL_STEP_MACS)
    while the cores are free: forced here for a small one, spikes and states stay bit-identical and
    gradients within 1e-10."""
    monkeypatch.setattr(fused_cpp, "PARALLEL_STEP_MACS", 1)
    monkeypatch.setattr(recurrent, "free_threads", lambda device: 2)  # as on an idle machine
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # the kernel's threads, even on 1 core
    x, state = inputs(kind, torch.float64, T=20, B=2, N=37)
    (ref_out, ref_final, ref), (out, final, got) = run_both(kind, x, state, backend="cpp", learnable="all")
    assert torch.equal(out, ref_out)
    assert all(torch.equal(a, b) for a, b in zip(final, ref_final, strict=True))
    assert_close_gradients(ref, got)
