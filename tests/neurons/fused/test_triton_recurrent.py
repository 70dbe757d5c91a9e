"""The ``triton`` backend of the recurrent layers (snn.neurons.fused.triton.recurrent) against
the eager step loop.

On the CPU the kernels run through Triton's interpreter, as in test_triton.py (its module
docstring says how and why): ``TRITON_INTERPRET=1`` for each test, programs of 64 neurons, so
2 x 37 neurons make two programs, the second one partial. Every comparison also checks that the
triton loops ran (a layer that fell back to ``python`` would pass them too).

Forward (products on one thread, as the loops run a small step's): spikes bit-identical to the
eager loop, states within 1e-6 (float32) / 1e-14 (float64) of the largest: the triton loops
compute the input product of all steps in one GEMM and add the recurrent one with addmm, which
BLAS may round differently in the last bit from the eager loop's per-step products and sum
(snn.neurons.fused.triton.recurrent), and AdEx's exponential is numpy's under the interpreter
(see test_triton.py).
Backward: gradients of the input, both weight matrices, the initial state and learnable per-neuron
parameters within 1e-10 (float64) / 1e-6 (float32) of autograd through the step functions,
relative to the largest. tests/neurons/fused/triton_gpu_checks.py runs the compiled kernels on a GPU.
"""

from __future__ import annotations

import collections
import math
import types
import warnings

import pytest
import torch

from snn.neurons import (
    SURROGATES,
    LIFAdExParameters,
    LIFAdExRecurrent,
    LIFAdExState,
    LIFParameters,
    LIFRecurrent,
    LIFState,
)
from snn.neurons.fused import KernelOptions
from snn.neurons.fused import registry as fused_registry
from snn.neurons.fused.registry import resolve
from snn.neurons.fused.triton import TritonBackend, trust
from tests.helpers import (
    assert_close_gradients,
    make_recurrent_layer,
    recurrent_inputs,
    recurrent_layer_classes,
    weighted_loss,
)

pytest.importorskip("triton")

LAYERS = {kind: recurrent_layer_classes(kind) for kind in ("adex", "lif")}
make_layer = make_recurrent_layer
TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-10}
STATE_TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-14}  # the input GEMM; AdEx: numpy's exp


class _Recording:
    """A backend that counts the recurrent forwards it runs."""

    def __init__(self, loops):
        self.loops, self.runs, self.name = loops, 0, loops.name
        self.why_not, self.recurrent_backward = loops.why_not, loops.recurrent_backward

    def recurrent_forward(self, *args):
        self.runs += 1
        return self.loops.recurrent_forward(*args)


@pytest.fixture(autouse=True)
def triton_runs(monkeypatch):
    """The interpreter for every test, programs of 64 neurons, and the triton loops recorded."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    recording = _Recording(TritonBackend(block=64))
    monkeypatch.setitem(fused_registry.REGISTRY, "triton", recording)
    return recording




def inputs(kind, dtype, T=7, B=2, **kwargs):
    """tests.helpers.recurrent_inputs at this file's smaller default sizes."""
    return recurrent_inputs(kind, dtype, T=T, B=B, **kwargs)


def run_both(kind, x, state, recording, loss=weighted_loss, **layer_args):
    """Eager and triton from the same weights, inputs and state: outputs, final states and the
    gradients of ``loss`` with respect to everything that has one."""
    results = []
    for backend in ("eager", "triton"):
        layer = make_layer(kind, backend, F=x.shape[-1], dtype=x.dtype, **layer_args)
        xb = x.clone().requires_grad_()
        sb = None if state is None else [s.clone().requires_grad_() for s in state]
        out, final = layer(xb, None if sb is None else LAYERS[kind][2](*sb))
        loss(out, final).backward()
        grads = {"x": xb.grad, **{f"state.{f}": s.grad for f, s in zip(final._fields, sb or [], strict=False)}}
        grads.update({name: p.grad for name, p in layer.named_parameters()})
        results.append((out.detach(), [s.detach() for s in final], grads))
    assert recording.runs == 1, "the triton loops did not run"
    return results


def assert_forward_equal(kind, out, final, ref_out, ref_final):
    """Spikes equal, states within STATE_TOLERANCE (the input product over all steps, see the
    module docstring)."""
    assert torch.equal(out, ref_out)
    for a, b in zip(final, ref_final, strict=True):
        assert (a - b).abs().max() <= STATE_TOLERANCE[a.dtype] * b.abs().max()


@pytest.mark.exactness
@pytest.mark.usefixtures("one_blas_thread")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_forward_matches_the_eager_loop(kind, dtype, triton_runs):
    """T = 7, B = 2, N = 37: row t of the spikes is 296 t bytes (float32) into its buffer, an
    alignment for which BLAS rounds W_rec z differently from the eager loop's fresh z."""
    x, state = inputs(kind, dtype)
    with torch.no_grad():
        ref_out, ref_final = make_layer(kind, "eager", dtype=dtype)(x, LAYERS[kind][2](*state))
        out, final = make_layer(kind, "triton", dtype=dtype)(x, LAYERS[kind][2](*state))
    assert triton_runs.runs == 1
    assert 0 < ref_out.mean() < 1, "some, not all, neurons must spike"
    assert_forward_equal(kind, out, final, ref_out, ref_final)


@pytest.mark.parametrize("method", ["super", "sigmoid"])
@pytest.mark.parametrize("learnable", [(), "all"], ids=["fixed", "learnable"])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_gradients_equal_eager(kind, learnable, method, triton_runs):
    """Gradients of x, W_in, W_rec, the initial state and (learnable) per-neuron parameters."""
    x, state = inputs(kind, torch.float64)
    (ref_out, ref_final, ref), (out, final, got) = run_both(
        kind, x, state, triton_runs, method=method, learnable=learnable
    )
    assert_forward_equal(kind, out, final, ref_out, ref_final)
    assert 0 < ref_out.mean() < 1
    assert_close_gradients(ref, got, TOLERANCE[torch.float64])
    assert ref["recurrent_weights"].abs().max() > 0 and ref["state.z"].abs().max() > 0


@pytest.mark.parametrize("kind, method", [("adex", "sigmoid"), ("lif", "atan"), ("lif", "super")])
def test_gradients_float32(kind, method, triton_runs):
    """Within 2e-6: float32 rounding over seven recurrent steps, not the kernels. The ``python``
    and ``cpp`` backends are 1.4e-6 to 2e-6 from eager for AdEx with per-neuron parameters and
    ``super`` or ``atan``; the triton loops, whose currents round once per step (the input GEMM
    and ``addmm``, see the module docstring), 1.5e-6 for LIF's ``v_th`` as well."""
    x, state = inputs(kind, torch.float32)
    (ref_out, ref_final, ref), (out, final, got) = run_both(
        kind, x, state, triton_runs, method=method, learnable="all"
    )
    assert_forward_equal(kind, out, final, ref_out, ref_final)
    assert_close_gradients(ref, got, 2 * TOLERANCE[torch.float32])


@pytest.mark.exactness
@pytest.mark.usefixtures("one_blas_thread")
@pytest.mark.parametrize("autapses", [False, True])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_rest_state_and_autapses(kind, autapses, triton_runs):
    """state=None (z0 = 0, v0 a broadcast of v_leak), with and without self-connections."""
    x, _ = inputs(kind, torch.float64, state=False)
    (ref_out, ref_final, ref), (out, final, got) = run_both(
        kind, x, None, triton_runs, autapses=autapses, learnable=("tau_mem_inv",)
    )
    assert 0 < ref_out.mean() < 1
    assert_forward_equal(kind, out, final, ref_out, ref_final)
    assert_close_gradients(ref, got, TOLERANCE[torch.float64])
    assert (got["recurrent_weights"].diagonal() == 0).all() != autapses


@pytest.mark.parametrize("shape", [(1, 2, 37), (7, 2, 1), (1, 1, 1)], ids=str)
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_one_step_and_one_neuron(kind, shape, triton_runs):
    T, B, N = shape
    x, state = inputs(kind, torch.float64, T=T, B=B, N=N)
    (ref_out, ref_final, ref), (out, final, got) = run_both(kind, x, state, triton_runs, N=N, learnable="all")
    assert_forward_equal(kind, out, final, ref_out, ref_final)
    assert_close_gradients(ref, got, TOLERANCE[torch.float64])


@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_gradient_from_the_final_state_only(kind, triton_runs):
    """No gradient reaches the spikes: the node gets None for them."""
    x, state = inputs(kind, torch.float64)
    (_, _, ref), (_, _, got) = run_both(
        kind, x, state, triton_runs, loss=lambda out, final: final.v.square().sum(), learnable="all"
    )
    assert_close_gradients(ref, got, TOLERANCE[torch.float64])
    assert ref["x"].abs().max() > 0


@pytest.mark.exactness
@pytest.mark.usefixtures("one_blas_thread")
def test_symplectic_integrator(triton_runs):
    """AdEx's symplectic integrator: the SYMPLECTIC kernels, with v_reset != v_leak."""
    params = {"integrator": "symplectic", "adaptation_current": 2.0, "v_reset": -0.2}
    x, state = inputs("adex", torch.float64)
    (ref_out, ref_final, ref), (out, final, got) = run_both(
        "adex", x, state, triton_runs, learnable="all", params=params
    )
    assert_forward_equal("adex", out, final, ref_out, ref_final)
    assert_close_gradients(ref, got, TOLERANCE[torch.float64])
    with torch.no_grad():
        _, euler = make_layer("adex", "triton", params={**params, "integrator": "euler"})(x, LIFAdExState(*state))
    assert (euler.a - ref_final[3]).abs().max() > 1e-3  # the integrators differ


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_run_in_float32(dtype, triton_runs):
    """float16/bfloat16 inputs computed in float32 (the layers' rule, snn.neurons.module): the eager
    loop in float32 on the same values, spikes in the input's dtype, the final state in float32.
    Weights, inputs and time constants are short dyadic numbers, exact in every dtype, so the
    spikes and states equal the eager loop's; gradients: float32, then rounded once to the dtype
    of the half input, state or weights they belong to."""
    T, B, F, N = 7, 2, 3, 37
    g = torch.Generator().manual_seed(3)
    w_in = torch.randint(0, 4, (N, F), generator=g) / 8.0
    w_rec = torch.randint(-2, 3, (N, N), generator=g) / 16.0
    x = torch.randint(0, 9, (T, B, F), generator=g) / 4.0
    z0 = (torch.rand(B, N, generator=g) > 0.6).float()
    state = [z0, *(torch.rand(B, N, generator=g).to(dtype).float() for _ in range(2))]  # exact in dtype
    p = LIFParameters(tau_syn_inv=256.0, tau_mem_inv=128.0, v_leak=0.0, v_th=1.0, v_reset=0.0, method="super",
                      alpha=8.0)
    results = []
    for backend, run_dtype in (("eager", torch.float32), ("triton", dtype)):
        layer = LIFRecurrent(F, N, p, dt=2.0**-10, input_weights=w_in, recurrent_weights=w_rec, backend=backend)
        layer = layer.to(run_dtype)
        xb = x.to(run_dtype, copy=True).requires_grad_()
        sb = [s.to(run_dtype, copy=True).requires_grad_() for s in state]
        out, final = layer(xb, LIFState(*sb))
        weighted_loss(out.float(), [f.float() for f in final]).backward()
        grads = [xb.grad, *(s.grad for s in sb), layer.input_weights.grad, layer.recurrent_weights.grad]
        results.append((out, final, grads))
    assert triton_runs.runs == 1
    (ref_out, ref_final, ref_grads), (out, final, grads) = results
    assert out.dtype == dtype and all(f.dtype == torch.float32 for f in final)
    assert 0 < ref_out.mean() < 1
    assert torch.equal(out, ref_out.to(dtype))
    assert all(torch.equal(a, b) for a, b in zip(final, ref_final, strict=True))
    eps = torch.finfo(dtype).eps
    for k, (got, r) in enumerate(zip(grads, ref_grads, strict=True)):
        assert got.dtype == dtype
        tolerance = eps + 1e-6 if k in (1, 2, 3) else 2 * eps  # the state's: one rounding
        error, scale = (got.float() - r).abs().max(), r.abs().max()
        assert error <= tolerance * scale, f"gradient {k}: error {error:.3g} at scale {scale:.3g}"


def test_auto_picks_triton_on_cuda_only(monkeypatch):
    """``auto``: triton for a CUDA input when triton imports and the surrogate is built in (an
    object that looks like a CUDA tensor to the rule: no GPU here, so a GPU whose first-use check
    passed), never on the CPU."""
    monkeypatch.setattr(trust, "require", lambda device, backend: None)
    cuda = types.SimpleNamespace(device=torch.device("cuda"), dtype=torch.float32, layout=torch.strided)
    assert resolve("auto", "adex", (cuda, cuda, cuda), KernelOptions("super")).name == "triton"
    assert resolve("auto", "lif", (cuda, cuda, cuda), KernelOptions("heaviside")).name == "triton"
    cpu = torch.zeros(2, 3, 4)
    assert resolve("auto", "lif", (cpu, cpu[0], cpu[0]), KernelOptions("super")).name in ("cpp", "python")


def test_user_registered_surrogate(monkeypatch):
    """As for feed-forward layers: ``auto`` picks ``python`` silently, an explicit ``triton``
    refuses it."""
    monkeypatch.setitem(SURROGATES, "test_gauss", lambda x, a: a / math.sqrt(math.pi) * torch.exp(-((a * x) ** 2)))
    cuda = types.SimpleNamespace(device=torch.device("cuda"), dtype=torch.float32, layout=torch.strided)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve("auto", "adex", (cuda, cuda, cuda), KernelOptions("test_gauss")).name == "python"
    x = torch.zeros(2, 3, 4)
    with pytest.raises(ValueError, match="backend='triton' cannot run this adex layer: .*not 'test_gauss'"):
        resolve("triton", "adex", (x, x[0], x[0]), KernelOptions("test_gauss"))
    layer = LIFAdExRecurrent(3, 5, LIFAdExParameters(method="test_gauss"), backend="triton")
    with pytest.raises(ValueError, match="not 'test_gauss'. Use backend='auto' or 'python'"):
        layer(torch.rand(4, 2, 3))


def test_cpu_without_the_interpreter_and_sparse_weights_are_clear_errors(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    layer = LIFRecurrent(3, 5, backend="triton")
    with pytest.raises(ValueError, match="backend='triton' cannot run this lif layer: on the CPU .*TRITON_INTERPRET=1"):
        layer(torch.rand(4, 2, 3))
    x = torch.rand(4, 2, 3)
    with pytest.raises(ValueError, match="backend='triton' cannot run this lif layer: it takes dense"):
        resolve("triton", "lif", (x, torch.rand(5, 3).to_sparse(), torch.rand(5, 5)), KernelOptions("super"))


class _Ops(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the aten operations run inside it."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


def test_one_torch_operation_and_one_kernel_per_step_and_no_host_sync(monkeypatch):
    """The recurrent triton loops launch, per step, one ``addmm`` and one kernel forward and one
    kernel and one ``addmm`` backward (the input product of all steps is one GEMM), and never read
    a value back to the host (``_local_scalar_dense``: ``.item()``, ``bool(t)``), the autograd node
    included. The kernels are replaced by a counter here: what is counted is the torch work around
    them, per step as the difference between 9 and 4 steps (views cost no launch)."""
    launches = []

    def bind(self, direction, kind, like, M, **constants):
        return lambda *args: launches.append(direction)

    trust.require(torch.device("cpu"), TritonBackend(block=64))  # the first-use check first, real kernels
    monkeypatch.setattr(TritonBackend(block=64).loops.__class__, "bind", bind)
    counts = {}
    for T in (4, 9):
        layer = make_layer("adex", "triton", dtype=torch.float32)
        x, state = inputs("adex", torch.float32, T=T)
        x.requires_grad_()
        launches.clear()
        with _Ops() as counter:
            out, _ = layer(x, LIFAdExState(*state))
            forward = len(counter.ops)
            out.sum().backward()
        assert launches.count("forward") == T and launches.count("backward") == T
        assert "_local_scalar_dense" not in counter.ops
        counts[T] = (collections.Counter(counter.ops[:forward]), collections.Counter(counter.ops[forward:]))
    views = {"select", "t", "view", "detach", "as_strided", "alias", "unbind"}
    for k, direction in enumerate(("forward", "backward")):
        per_step = counts[9][k] - counts[4][k]
        launched = {op: n / 5 for op, n in per_step.items() if op not in views}
        assert launched == {"forward": {"addmm_": 1.0}, "backward": {"addmm": 1.0}}[direction], (direction, launched)
