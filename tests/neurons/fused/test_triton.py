"""The ``triton`` backend (snn.neurons.fused.triton) against the eager step loop.

On the CPU the kernels run through Triton's interpreter (numpy): ``TRITON_INTERPRET=1`` is set for
each test (monkeypatch, so nothing else in the session sees it), and the interpreted kernels are a
load of their own (snn.neurons.fused.triton.feed_forward.kernels), so a GPU session's compiled ones are not affected.
Shapes stay small (T <= 8, B <= 3, N <= 40): the interpreter runs a few hundred numpy ops per step.
Programs hold 64 neurons here, so 3 x 37 neurons make two programs, the second one partial.

Forward: LIF and LI bit-identical to the eager loop. AdEx's exponential under the interpreter is
numpy's, which differs from torch's CPU exp (MKL) by one ulp on 39 % of float32 values and 5 % of
float64 ones: the spikes are the same here and the states within 1e-6 (float32) / 1e-14 (float64)
of the largest value (on a GPU the kernels use libdevice's exp, which torch's CUDA exp runs too:
tests/neurons/fused/triton_gpu_checks.py asserts bit-identity there). Backward: within 1e-6 (float32) and 1e-10
(float64) of autograd through the step functions, relative to the largest gradient. The
interpreter rounds float32 to bfloat16 towards zero (a GPU rounds to nearest even): bfloat16
results are compared within one bfloat16 ulp. Tests that need a GPU run the compiled kernels in a
subprocess (tests/neurons/fused/triton_gpu_checks.py) and skip without one.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import types
import warnings

import pytest
import torch

from snn.neurons import LI, LIF, SURROGATES, LIFAdEx, LIFAdExParameters, LIFParameters, LIParameters
from snn.neurons.fused import KernelOptions
from snn.neurons.fused import registry as fused_registry
from snn.neurons.fused.feed_forward import _integrate as integrate
from snn.neurons.fused.registry import resolve
from snn.neurons.fused.triton import TritonBackend, trust
from tests.helpers import assert_close_gradients, weighted_loss

pytest.importorskip("triton")

LAYERS = {
    "adex": (LIFAdEx, LIFAdExParameters),
    "lif": (LIF, LIFParameters),
    "li": (LI, LIParameters),
}
BUILTIN = ["super", "triangle", "sigmoid", "atan", "tanh", "heaviside"]
TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-10}
EXP_TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-14}  # AdEx forward: numpy's exp, see above


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    """The interpreter for every test, and programs of 64 neurons."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setitem(fused_registry.REGISTRY, "triton", TritonBackend(block=64))


def make_layer(
    kind, backend, method="super", learnable=(), shape=None, dtype=torch.float64, seed=0, **params
):
    """``params``: more fields of the parameters (AdEx's integrator, say)."""
    layer_class, params_class = LAYERS[kind]
    kwargs = {}
    if kind != "li":
        kwargs = {
            "method": method,
            "alpha": 7.0 if method in ("triangle", "sigmoid", "tanh") else 30.0,
        }
    fields = [f for f in params_class._fields if f not in ("method", "alpha", "integrator")]
    layer = layer_class(
        params_class(**kwargs, **params),
        learnable=fields if learnable == "all" else learnable,
        shape=() if shape is None and learnable else shape,  # () : one shared learnable value
        backend=backend,
    ).to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every neuron's learnable values differ
        for name in layer.learnable:
            value = getattr(layer, name)
            setattr(layer, name, value * (1 + 0.2 * torch.rand(value.shape, generator=g, dtype=dtype)))
    return layer


def inputs(kind, dtype, T=8, B=3, N=37, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(T, B, N, generator=g, dtype=dtype) * 6 - 1
    state = [
        torch.rand(B, N, generator=g, dtype=dtype) for _ in LAYERS[kind][0].state_class._fields
    ]
    if kind == "adex":  # the exponential's argument clamped at 20 for the first two neurons
        state[0][0, :5] = torch.tensor([12.0, 11.0, 1.2, 0.9, -3.0])
    return x, state


def gradients(layer, x, state, loss=weighted_loss):
    """Forward and backward from the given initial state: outputs, final state, all gradients."""
    x = x.clone().requires_grad_()
    state = [s.clone().requires_grad_() for s in state]
    out, final = layer(x, layer.state_class(*state))
    loss(out, final).backward()
    grads = {
        "x": x.grad,
        **{f"state.{k}": s.grad for k, s in zip(layer.state_class._fields, state, strict=True)},
    }
    grads.update({name: p.grad for name, p in layer.named_parameters()})
    return out, final, grads


def assert_forward_equal(kind, out, final, ref_out, ref_final):
    """Outputs and final states equal; AdEx's states within EXP_TOLERANCE (see the docstring)."""
    assert torch.equal(out, ref_out)
    for a, b in zip(final, ref_final, strict=True):
        if kind == "adex":
            assert (a - b).abs().max() <= EXP_TOLERANCE[a.dtype] * b.abs().max()
        else:
            assert torch.equal(a, b)


def compare(
    kind,
    method="super",
    learnable=(),
    shape=None,
    dtype=torch.float64,
    T=8,
    loss=weighted_loss,
    **params,
):
    """The triton layer against the eager one: forward equal, gradients within TOLERANCE."""
    x, state = inputs(kind, dtype, T=T)
    ref_out, ref_final, ref = gradients(
        make_layer(kind, "eager", method, learnable, shape, dtype, **params), x, state, loss
    )
    out, final, got = gradients(
        make_layer(kind, "triton", method, learnable, shape, dtype, **params), x, state, loss
    )
    assert_forward_equal(kind, out, final, ref_out, ref_final)
    assert_close_gradients(ref, got, TOLERANCE[dtype])
    return ref


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kind", ["adex", "lif", "li"])
def test_forward_matches_the_eager_loop(kind, dtype):
    x, state = inputs(kind, dtype)
    with torch.no_grad():
        ref_out, ref_final = make_layer(kind, "eager", dtype=dtype)(
            x, LAYERS[kind][0].state_class(*state)
        )
        out, final = make_layer(kind, "triton", dtype=dtype)(x, LAYERS[kind][0].state_class(*state))
    if kind != "li":
        assert 0 < ref_out.mean() < 1, "the input must make some, not all, neurons spike"
    assert_forward_equal(kind, out, final, ref_out, ref_final)


@pytest.mark.parametrize("method", BUILTIN)
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_gradients_per_neuron_learnable_parameters_every_surrogate(kind, method):
    ref = compare(kind, method, "all", (37,))
    if method != "heaviside":
        assert ref["x"].abs().max() > 0


@pytest.mark.parametrize("method", ["super", "sigmoid", "tanh"])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_gradients_fixed_parameters_float32(kind, method):
    compare(kind, method, (), None, torch.float32)


@pytest.mark.parametrize("kind", ["adex", "lif", "li"])
def test_gradients_scalar_learnable_parameters(kind):
    compare(kind, "super", "all", None)


def test_gradients_li_per_neuron_parameters():
    compare("li", None, "all", (37,))


# AdEx's symplectic integrator, with v_reset != v_leak (see tests/neurons/fused/test_fused.py).
SYMPLECTIC = {"integrator": "symplectic", "adaptation_current": 2.0, "v_reset": -0.2}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_symplectic_forward_matches_the_eager_loop(dtype):
    x, state = inputs("adex", dtype)
    with torch.no_grad():
        ref_out, ref_final = make_layer("adex", "eager", dtype=dtype, **SYMPLECTIC)(
            x, LIFAdEx.state_class(*state)
        )
        out, final = make_layer("adex", "triton", dtype=dtype, **SYMPLECTIC)(
            x, LIFAdEx.state_class(*state)
        )
        _, euler = make_layer("adex", "triton", dtype=dtype)(x, LIFAdEx.state_class(*state))
    assert 0 < ref_out.mean() < 1
    assert_forward_equal("adex", out, final, ref_out, ref_final)
    assert (euler.a - ref_final.a).abs().max() > 1e-3  # the integrators differ


@pytest.mark.parametrize(
    "method, learnable, dtype",
    [
        ("super", "per-neuron", torch.float64),
        ("sigmoid", "per-neuron", torch.float64),
        ("super", "fixed", torch.float64),
        ("sigmoid", "fixed", torch.float32),
    ],
)
def test_symplectic_gradients(method, learnable, dtype):
    learn, shape = ("all", (37,)) if learnable == "per-neuron" else ((), None)
    ref = compare("adex", method, learn, shape, dtype, **SYMPLECTIC)
    assert ref["x"].abs().max() > 0


@pytest.mark.parametrize("T", [0, 1])
@pytest.mark.parametrize("kind", ["adex", "lif", "li"])
def test_no_steps_and_one_step(kind, T):
    if T == 0:  # outputs [0, ...] and the initial state; its gradients pass straight through
        x, state = inputs(kind, torch.float64, T=0)
        out, final, grads = gradients(make_layer(kind, "triton", learnable="all"), x, state)
        assert out.shape == (0, 3, 37)
        assert all(torch.equal(a, b) for a, b in zip(final, state, strict=True))
        return
    compare(kind, "super", "all", (37,), T=1)


@pytest.mark.parametrize("kind", ["adex", "lif", "li"])
def test_input_broadcast_over_time_and_the_gradient_of_a_plain_sum(kind):
    """Strided inputs: x broadcast over T (time stride 0) and the gradient of ``out.sum()`` (one
    value for every neuron and step: both strides 0)."""
    leaf = torch.rand(3, 37, dtype=torch.float64) * 6 - 1
    results = []
    for backend in ("eager", "triton"):
        x = leaf.clone().requires_grad_()
        layer = make_layer(kind, backend, learnable="all", shape=(37,))
        out, _ = layer(x.unsqueeze(0).expand(6, 3, 37))
        out.sum().backward()
        results.append(
            {"out": out, "x": x.grad, **{n: p.grad for n, p in layer.named_parameters()}}
        )
    ref, got = results
    assert torch.equal(got.pop("out"), ref.pop("out"))
    assert_close_gradients(ref, got, 1e-10)


def test_non_contiguous_input():
    x, state = inputs("lif", torch.float64)
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)  # neurons not contiguous within a step
    with torch.no_grad():
        ref, _ = make_layer("lif", "eager")(x, LIF.state_class(*state))
        out, _ = make_layer("lif", "triton")(xt, LIF.state_class(*state))
    assert torch.equal(out, ref)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", ["adex", "lif", "li"])
def test_half_inputs_run_in_float32(kind, dtype):
    """float16/bfloat16 inputs with float32 state and accumulation: the eager loop in float32 on the
    same values (time constants and parameters exact in both dtypes), rounded to the input's dtype
    (within one ulp for bfloat16 and for AdEx: see the module docstring)."""
    params = {
        "tau_mem_inv": 128.0,
        "tau_syn_inv": 256.0,
        "v_th": 1.0,
        "v_reset": 0.0,
        "v_leak": 0.0,
    }
    if kind == "adex":
        params.update(
            tau_ada_inv=64.0, adaptation_current=4.0, adaptation_spike=0.0625, delta_T=0.5
        )
    if kind != "li":
        params.update(method="super", alpha=8.0)
    dt = 2.0**-10  # dt tau^-1 exact: c_mem = 1/8, c_syn = -1/4
    fields = LAYERS[kind][1]._fields
    p = LAYERS[kind][1](
        **{
            k: v if isinstance(v, str) or k == "alpha" else torch.tensor(v)
            for k, v in params.items()
            if k in fields
        }
    )
    x, state = inputs(kind, torch.float32)
    x = (x * 4).to(dtype)
    state = [s.to(dtype) for s in state]
    results = []
    for backend, run_dtype in (("python", torch.float32), ("triton", dtype)):
        xb = x.to(run_dtype).requires_grad_()
        sb = [s.to(run_dtype).requires_grad_() for s in state]
        out, final = integrate(kind, backend, xb, LAYERS[kind][0].state_class(*sb), p, dt)
        weighted_loss(out.float(), [f.float() for f in final]).backward()
        results.append((out, final, [xb.grad] + [s.grad for s in sb]))
    (ref_out, ref_final, ref_grads), (out, final, grads) = results
    assert out.dtype == dtype and all(f.dtype == dtype for f in final)
    if kind != "li":
        assert 0 < ref_out.mean() < 1
    eps = torch.finfo(dtype).eps
    for a, b in zip([out, *final], [ref_out, *ref_final], strict=True):  # spikes: 0 or 1, exact
        if dtype == torch.float16 and kind != "adex":
            assert torch.equal(a, b.to(dtype))
        else:
            assert ((a.float() - b).abs() <= eps * b.abs()).all()
    for g, r in zip(grads, ref_grads, strict=True):
        assert g.dtype == dtype
        # float32 gradients within 1e-6, then one rounding to the input's dtype
        assert (g.float() - r).abs().max() <= (eps + 1e-6) * r.abs().max()


def test_half_inputs_with_learnable_parameters_give_gradients_of_the_parameters_dtype():
    x, state = inputs("adex", torch.float32)
    layer = make_layer("adex", "triton", learnable="all", shape=(37,), dtype=torch.bfloat16)
    out, final, grads = gradients(
        layer, x.to(torch.bfloat16), [s.to(torch.bfloat16) for s in state]
    )
    for name, p in layer.named_parameters():
        assert grads[name].dtype == torch.bfloat16 and grads[name].shape == p.shape, name
    assert grads["v_th_raw"].abs().max() > 0


def test_cpu_without_the_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(
        ValueError,
        match="backend='triton' cannot run this lif layer: on the CPU .*TRITON_INTERPRET=1",
    ):
        make_layer("lif", "triton")(torch.rand(2, 3, 4, dtype=torch.float64))
    assert resolve("auto", "lif", (torch.zeros(2, 3),), KernelOptions("super")).name in ("cpp", "python")


def test_unsupported_dtype_is_a_clear_error():
    """float8 passes the layers' floating-point check but no Triton kernel takes it."""
    x = torch.zeros(2, 3, dtype=torch.float8_e4m3fn)
    with pytest.raises(
        ValueError, match="float16, bfloat16, float32 and float64 inputs, got torch.float8"
    ):
        resolve("triton", "lif", (x,), KernelOptions("super"))


def test_auto_does_not_pick_triton_on_the_cpu():
    """Even with the interpreter requested: it is for tests."""
    assert resolve("auto", "adex", (torch.zeros(2, 3),), KernelOptions("super")).name in ("cpp", "python")


def test_user_registered_surrogate_is_refused_by_triton_and_auto_takes_python(monkeypatch):
    """The rule of every explicit backend: one that cannot run the case raises, ``auto`` falls back
    (silently: choosing ``python`` for a user surrogate is what ``auto`` is for)."""
    monkeypatch.setitem(
        SURROGATES, "test_gauss", lambda x, a: a / math.sqrt(math.pi) * torch.exp(-((a * x) ** 2))
    )
    x = torch.zeros(2, 3)
    cuda = types.SimpleNamespace(device=torch.device("cuda"), dtype=torch.float32, layout=torch.strided)
    monkeypatch.setattr(trust, "require", lambda device, backend: None)  # no GPU to run the first-use check on
    with pytest.raises(ValueError, match="backend='triton' cannot run this adex layer: .*not 'test_gauss'"):
        resolve("triton", "adex", (x,), KernelOptions("test_gauss"))
    with pytest.raises(ValueError, match="not 'test_gauss'. Use backend='auto' or 'python'"):
        make_layer("lif", "triton", method="test_gauss")(torch.rand(2, 3, 4, dtype=torch.float64))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve("auto", "adex", (cuda,), KernelOptions("test_gauss")).name == "python"
        assert resolve("auto", "adex", (cuda,), KernelOptions("super")).name == "triton"
    # An overwritten built-in name is not the kernels' surrogate either.
    monkeypatch.setitem(SURROGATES, "super", SURROGATES["test_gauss"])
    with pytest.raises(ValueError, match="not 'super'"):
        resolve("triton", "lif", (x,), KernelOptions("super"))


def test_importing_snn_neurons_does_not_import_triton():
    code = (
        "import sys, torch; import snn.neurons; from snn.neurons import LIF; "
        "LIF(backend='auto')(torch.rand(3, 2, 4)); print('triton' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_kernels_on_the_gpu():
    """tests/neurons/fused/triton_gpu_checks.py in a process of its own (no interpreter): forward bit-identical
    to the eager loop on the GPU, gradients within 1e-5 / 1e-10, auto picks triton, bfloat16."""
    script = os.path.join(os.path.dirname(__file__), "triton_gpu_checks.py")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    result = subprocess.run(
        [sys.executable, script], capture_output=True, text=True, env=env, timeout=900
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_the_gpu_checks_run_through_the_interpreter():
    """The GPU checks script itself, on the CPU (``--interpret``: smaller sizes, fewer surrogates,
    AdEx states within numpy's exp): what a GPU would first run is tested where no GPU is. About a
    minute on a loaded 2-core machine."""
    script = os.path.join(os.path.dirname(__file__), "triton_gpu_checks.py")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    result = subprocess.run([sys.executable, script, "--interpret"], capture_output=True, text=True, env=env,
                            timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "first-use check passed: cpu" in result.stdout and "all GPU checks passed" in result.stdout
