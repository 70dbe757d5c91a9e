"""The fused time loops (snn.neurons.fused) against the eager step-by-step loop.

Forward: spikes/voltages and final states bit-identical (float32 and float64). Backward: input,
initial-state and parameter gradients (learnable, scalar and per-neuron) equal to autograd through
the step functions within 1e-10 relative in float64, for every backend, surrogate and neuron type.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from snn.neurons import LI, LIF, SURROGATES, LIFAdEx, LIFAdExParameters, LIFAdExRecurrent, LIFParameters, LIParameters
from snn.neurons.fused import BACKENDS, KernelOptions, threads
from snn.neurons.fused import registry as fused_registry
from snn.neurons.fused.cpp.feed_forward import CppLoops
from snn.neurons.fused.python import feed_forward as python_loops
from snn.neurons.fused.registry import resolve
from tests.helpers import require_cpp_kernels, weighted_loss

# triton runs on the CPU only under its interpreter: tests/neurons/fused/test_triton.py runs it there.
CPU_BACKENDS = [b for b in BACKENDS if b != "triton"]

LAYERS = {"adex": (LIFAdEx, LIFAdExParameters), "lif": (LIF, LIFParameters), "li": (LI, LIParameters)}
BUILTIN = ["super", "triangle", "sigmoid", "atan", "tanh", "heaviside"]


@pytest.fixture(scope="session")
def cpp_library():
    """Builds the C++ kernels once per session (cached across sessions in the extensions dir)."""
    return require_cpp_kernels()


def needs(backend, request):
    if backend == "cpp":
        request.getfixturevalue("cpp_library")


def make_layer(kind, backend, method="super", learnable=(), shape=None, dtype=torch.float64, seed=0, **params):
    """``params``: more fields of the parameters (AdEx's integrator, say)."""
    layer_class, params_class = LAYERS[kind]
    fields = [f for f in params_class._fields if f not in ("method", "alpha", "integrator")]
    kwargs = {}
    if kind != "li":
        kwargs = {"method": method, "alpha": 7.0 if method in ("triangle", "sigmoid", "tanh") else 30.0}
    p = params_class(**kwargs, **params)
    if shape is None and learnable:
        shape = ()  # one shared learnable value
    layer = layer_class(p, learnable=fields if learnable == "all" else learnable, shape=shape, backend=backend)
    layer = layer.to(dtype)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # perturb learnable per-neuron values so every neuron differs
        for name in layer.learnable:
            value = getattr(layer, name)
            setattr(layer, name, value * (1 + 0.2 * torch.rand(value.shape, generator=g, dtype=dtype)))
    return layer


def inputs(kind, dtype, T=12, B=3, N=37, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, N, generator=g, dtype=dtype) * 6 - 1)
    fields = {"adex": ("v", "i", "a"), "lif": ("v", "i"), "li": ("v", "i")}[kind]
    state = [torch.rand(B, N, generator=g, dtype=dtype) for _ in fields]
    if kind == "adex":
        state[0][0, :5] = torch.tensor([12.0, 11.0, 1.2, 0.9, -3.0])  # exp argument clamped at 20 for the first two
    return x, state


def run(layer, x, state):
    state_class = layer.state_class
    return layer(x, state_class(*state))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("kind", ["adex", "lif", "li"])
def test_forward_bit_identical(kind, backend, dtype, request):
    needs(backend, request)
    x, state = inputs(kind, dtype, T=40, B=4, N=300)
    ref_out, ref_state = run(make_layer(kind, "eager", dtype=dtype), x, state)
    out, final = run(make_layer(kind, backend, dtype=dtype), x, state)
    if kind != "li":
        assert 0 < ref_out.mean() < 1, "the input must make some, not all, neurons spike"
    assert torch.equal(out, ref_out)
    for a, b in zip(final, ref_state, strict=True):
        assert torch.equal(a, b)


def test_python_backend_runs_small_steps_on_one_thread_and_restores_threads(monkeypatch):
    """Steps of at most ATen's grain size run with one intra-op thread (see serial_steps); larger
    ones keep the caller's threads, and the caller's setting is restored afterwards."""
    seen = []
    original = python_loops.TorchLoops._forward

    def spy(self, *args):
        seen.append(torch.get_num_threads())
        return original(self, *args)

    monkeypatch.setattr(python_loops.TorchLoops, "_forward", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        layer = make_layer("adex", "python", dtype=torch.float32)
        layer(torch.rand(3, 2, 100))
        layer(torch.rand(3, 2, threads.GRAIN_SIZE))
        assert seen == [1, 2]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_forward_bit_identical_per_neuron_parameters(kind, backend, request):
    needs(backend, request)
    x, state = inputs(kind, torch.float32, T=30, B=2, N=301)
    ref = make_layer(kind, "eager", learnable="all", shape=(301,), dtype=torch.float32)
    fused = make_layer(kind, backend, learnable="all", shape=(301,), dtype=torch.float32)
    with torch.no_grad():
        ref_out, ref_state = run(ref, x, state)
        out, final = run(fused, x, state)
    assert torch.equal(out, ref_out)
    assert all(torch.equal(a, b) for a, b in zip(final, ref_state, strict=True))


def assert_gradients_equal(kind, backend, method, learnable, shape, **params):
    x, state = inputs(kind, torch.float64)
    results = []
    for b in ("eager", backend):
        layer = make_layer(kind, b, method, learnable, shape, **params)
        xb = x.clone().requires_grad_()
        sb = [s.clone().requires_grad_() for s in state]
        out, final = run(layer, xb, sb)
        weighted_loss(out, final).backward()
        grads = {"x": xb.grad, **{f"state{k}": s.grad for k, s in enumerate(sb)}}
        grads.update({name: p.grad for name, p in layer.named_parameters()})
        results.append(grads)
    ref, got = results
    assert ref.keys() == got.keys()
    for name in ref:
        if ref[name] is None:  # no path to it in the eager graph (heaviside: v_th only feeds the spike)
            assert got[name] is None or not got[name].any(), name
            continue
        assert got[name] is not None and got[name].shape == ref[name].shape, name
        scale = ref[name].abs().max()
        error = (got[name] - ref[name]).abs().max()
        assert error <= 1e-10 * scale, f"{name}: error {error:.3g} at scale {scale:.3g}"
        if name == "x" and kind != "li" and method != "heaviside":
            assert scale > 0


@pytest.mark.parametrize("method", BUILTIN)
@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_gradients_per_neuron_parameters(kind, backend, method, request):
    needs(backend, request)
    assert_gradients_equal(kind, backend, method, "all", (37,))


@pytest.mark.parametrize("method", BUILTIN)
@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_gradients_fixed_parameters(kind, backend, method, request):
    """The backward loops without parameter gradients (the python backend's block-wise one)."""
    needs(backend, request)
    assert_gradients_equal(kind, backend, method, (), None)


@pytest.mark.parametrize("method", ["super", "sigmoid"])
@pytest.mark.parametrize("kind", ["adex", "lif"])
def test_python_backward_in_blocks_of_steps(kind, method, monkeypatch):
    """The python backend's backward runs blocks of steps: blocks of 5, 5 and 2 of the 12 steps
    (3 x 37 neurons each) must give the gradients of one block."""
    monkeypatch.setattr(python_loops, "BLOCK_VALUES", 5 * 3 * 37)
    assert python_loops._block(12, 3 * 37) == 5
    assert_gradients_equal(kind, "python", method, (), None)


@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("kind", ["adex", "lif", "li"])
def test_gradients_scalar_and_fixed_parameters(kind, backend, request):
    needs(backend, request)
    assert_gradients_equal(kind, backend, "super", "all", None)  # 0-dim learnable parameters
    assert_gradients_equal(kind, backend, "super", (), None)  # no parameter gradients


@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_gradients_li_per_neuron_parameters(backend, request):
    needs(backend, request)
    assert_gradients_equal("li", backend, None, "all", (37,))


LAYOUTS = {
    # input x [T, B, N] from a leaf, and the loss on the outputs (its gradient's layout)
    "broadcast over time, sum": (lambda leaf, T: leaf.unsqueeze(0).expand(T, *leaf.shape), (3, 41),
                                 lambda out, w: out.sum()),  # gradient: one value, strides (0, 0)
    "broadcast over time, weighted": (lambda leaf, T: leaf.unsqueeze(0).expand(T, *leaf.shape), (3, 41),
                                      lambda out, w: (out * w).sum()),  # gradient w over T: (0, 1)
    "transposed": (lambda leaf, T: leaf.transpose(1, 2), (20, 41, 3), lambda out, w: (out * w).sum()),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("kind", ["adex", "lif", "li"])
def test_strided_inputs_and_output_gradients(kind, backend, layout, request):
    """A time-broadcast input (constant-current coding), a non-contiguous one, and output gradients
    that are broadcasts (``outputs.sum()``): outputs as the eager loop's, gradients within 1e-10."""
    needs(backend, request)
    make_x, leaf_shape, loss_fn = LAYOUTS[layout]
    g = torch.Generator().manual_seed(3)
    base = torch.rand(leaf_shape, generator=g, dtype=torch.float64) * 6 - 1
    w = torch.randn(3, 41, generator=g, dtype=torch.float64)
    results = []
    for b in ("eager", backend):
        leaf = base.clone().requires_grad_()
        x = make_x(leaf, 20)
        assert x.shape == (20, 3, 41) and not x.is_contiguous()
        out, final = make_layer(kind, b)(x)
        (loss_fn(out, w) + final.v.sum()).backward()
        results.append((out.detach(), leaf.grad))
    (ref_out, ref_grad), (out, grad) = results
    assert torch.equal(out, ref_out)
    assert ref_grad.abs().max() > 0
    assert (grad - ref_grad).abs().max() <= 1e-10 * ref_grad.abs().max()


# ---------------------------------------------------------------- the symplectic integrator
# AdEx with its adaptation driven by the voltage after the reset; v_reset != v_leak and a stronger
# coupling, so that the reset's part in the adaptation shows.
SYMPLECTIC = {"integrator": "symplectic", "adaptation_current": 2.0, "v_reset": -0.2}
SYMPLECTIC_BACKENDS = ["python", "cpp"]


@pytest.mark.parametrize("per_neuron", [False, True], ids=["fixed", "per-neuron"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("backend", SYMPLECTIC_BACKENDS)
def test_symplectic_forward_bit_identical(backend, dtype, per_neuron, request):
    needs(backend, request)
    x, state = inputs("adex", dtype, T=40, B=4, N=300)
    learnable, shape = ("all", (300,)) if per_neuron else ((), None)
    with torch.no_grad():
        ref_out, ref_state = run(make_layer("adex", "eager", learnable=learnable, shape=shape, dtype=dtype,
                                            **SYMPLECTIC), x, state)
        out, final = run(make_layer("adex", backend, learnable=learnable, shape=shape, dtype=dtype, **SYMPLECTIC),
                         x, state)
        _, euler = run(make_layer("adex", "eager", learnable=learnable, shape=shape, dtype=dtype,
                                  **{**SYMPLECTIC, "integrator": "euler"}), x, state)
    assert 0 < ref_out.mean() < 1, "the input must make some, not all, neurons spike"
    assert torch.equal(out, ref_out)
    assert all(torch.equal(a, b) for a, b in zip(final, ref_state, strict=True))
    assert not torch.equal(euler.a, ref_state.a)  # the integrators differ


@pytest.mark.parametrize("learnable, method", [("per-neuron", m) for m in BUILTIN]
                         + [(learn, m) for learn in ("scalar", "fixed") for m in ("super", "sigmoid")])
@pytest.mark.parametrize("backend", SYMPLECTIC_BACKENDS)
def test_symplectic_gradients(backend, learnable, method, request):
    """Input, initial-state and parameter gradients within 1e-10 of autograd through the step
    function, through the per-step backward (parameter gradients) and the python backend's
    regrouped one (fixed parameters)."""
    needs(backend, request)
    learn, shape = {"per-neuron": ("all", (37,)), "scalar": ("all", None), "fixed": ((), None)}[learnable]
    assert_gradients_equal("adex", backend, method, learn, shape, **SYMPLECTIC)


def test_symplectic_auto_runs_the_cpp_kernels(cpp_library, monkeypatch):
    """auto on CPU runs AdEx's symplectic integrator on the cpp backend, as it runs euler."""
    ran = []
    real = fused_registry.REGISTRY["cpp"]
    recording = type("Recording", (), {"why_not": lambda self, *a: real.why_not(*a),
                                       "forward": lambda self, *a: ran.append(a[-1]) or real.forward(*a),
                                       "backward": lambda self, *a: real.backward(*a)})()
    monkeypatch.setitem(fused_registry.REGISTRY, "cpp", recording)
    x, state = inputs("adex", torch.float64)
    out, _ = run(make_layer("adex", "auto", **SYMPLECTIC), x.requires_grad_(), state)
    assert type(out.grad_fn).__name__ == "FusedTimeLoopBackward"
    assert [options.integrator for options in ran] == ["symplectic"]


def test_symplectic_python_backward_in_blocks_of_steps(monkeypatch):
    """The regrouped backward's coefficients for blocks of 5, 5 and 2 steps (see
    test_python_backward_in_blocks_of_steps) with the symplectic integrator."""
    monkeypatch.setattr(python_loops, "BLOCK_VALUES", 5 * 3 * 37)
    assert_gradients_equal("adex", "python", "super", (), None, **SYMPLECTIC)


@pytest.mark.slow
def test_compile_backend_symplectic():
    """As test_compile_backend for AdEx, with the symplectic integrator."""
    torch._dynamo.reset()
    x, state = inputs("adex", torch.float64)
    ref_out, ref_state = run(make_layer("adex", "eager", **SYMPLECTIC), x, state)
    out, final = run(make_layer("adex", "compile", **SYMPLECTIC), x, state)
    assert (out != ref_out).float().mean() < 1e-3
    torch.testing.assert_close(final, tuple(ref_state), rtol=1e-12, atol=1e-12)
    assert_gradients_equal("adex", "compile", "super", "all", (37,), **SYMPLECTIC)


def saved_bytes(layer, x, state=None):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = layer(x, state)
    return total, out


@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("kind", ["adex", "lif", "li"])
def test_saved_bytes_at_most_four_per_neuron_and_step(kind, backend, request):
    needs(backend, request)
    T, B, N = 50, 4, 256
    x = torch.rand(T, B, N, requires_grad=True)
    total, _ = saved_bytes(make_layer(kind, backend, dtype=torch.float32), x)
    per_neuron_step = total / (T * B * N)
    eager, _ = saved_bytes(make_layer(kind, "eager", dtype=torch.float32), x)
    if kind == "li":  # linear: nothing per step, as in eager autograd
        assert total <= eager
    else:  # v_d per step, the parameters (a few scalars), nothing for the rest state
        assert 4.0 <= per_neuron_step <= 4.0 + 64 / (T * B * N)
        assert eager >= 2 * total


@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_saved_initial_voltage_only_when_given(backend, request):
    """From rest (state=None) the initial voltage is one broadcast value; an explicit state costs
    one more voltage per neuron (4 / T bytes per neuron and step)."""
    needs(backend, request)
    T, B, N = 50, 4, 256
    layer = make_layer("adex", backend, dtype=torch.float32)
    x = torch.rand(T, B, N, requires_grad=True)
    from_rest, out = saved_bytes(layer, x)
    total, out_given = saved_bytes(layer, x, layer.initial_state(x))
    assert torch.equal(out, out_given)
    assert total - from_rest == 4 * B * N - 4
    grads = [torch.autograd.grad((o * torch.arange(o.numel()).view_as(o).sin()).sum(), x)[0]
             for o in (out, out_given)]
    assert torch.equal(grads[0], grads[1])  # backward reads the same initial voltage


def test_unknown_backend_lists_valid_ones():
    with pytest.raises(ValueError, match="valid backends: auto, cpp, triton, compile, python, eager"):
        LIFAdEx(backend="fast")


def test_backend_is_checked_when_set_not_on_every_call(monkeypatch):
    """A layer's backend is checked when it is built or assigned; its calls do not check again
    (_integrate, for direct callers, checks its argument)."""
    from snn.neurons import LIFRecurrent, constants
    from snn.neurons.fused.feed_forward import _integrate as integrate

    layer = LIF(backend="python")
    with pytest.raises(ValueError, match="valid backends"):
        layer.backend = "fast"
    assert layer.backend == "python"
    with pytest.raises(ValueError, match="Recurrent layers have the backends"):
        LIFRecurrent(3, 4).backend = "compile"
    calls = []
    real_check = constants.check_backend
    monkeypatch.setattr("snn.neurons.fused.feed_forward.check_backend",
                        lambda b: calls.append(b) or real_check(b))
    layer(torch.ones(3, 2, 4))
    assert calls == []
    with pytest.raises(ValueError, match="valid backends"):
        integrate("lif", "fast", torch.ones(3, 2), LIF().initial_state(torch.ones(3, 2)),
                  LIFParameters(), 1e-3)
    assert calls == ["fast"]


def test_auto_picks_cpp_on_cpu(cpp_library):
    x = torch.zeros(2, 3)
    assert resolve("auto", "adex", (x,), KernelOptions("super")).name == "cpp"
    assert resolve("auto", "lif", (x.double(),), KernelOptions("atan")).name == "cpp"
    assert resolve("auto", "lif", (x.to(torch.bfloat16),), KernelOptions("super")).name == "python"


def test_cpp_needs_mkl_vml_only_for_adex_and_the_sigmoid_and_tanh_surrogates(cpp_library, monkeypatch):
    assert cpp_library.vml_available() == 1  # torch's MKL exports VML here
    no_vml = type("Library", (), {"vml_available": staticmethod(lambda: 0)})()
    monkeypatch.setattr("snn.neurons.fused.cpp.load_library", lambda: no_vml)
    cpp, x = fused_registry.REGISTRY["cpp"], torch.zeros(2, 3)
    assert "AdEx also needs torch with MKL" in cpp.why_not("adex", (x,), KernelOptions("super"))
    assert cpp.why_not("lif", (x,), KernelOptions("sigmoid")) is not None
    assert cpp.why_not("lif", (x,), KernelOptions("super")) is None
    assert cpp.why_not("li", (x.double(),), KernelOptions()) is None
    assert resolve("auto", "adex", (x,), KernelOptions("super")).name == "python"


def test_cpp_kernels_take_the_integrator_by_name(cpp_library):
    """What the C++ entry points receive: the index of a known integrator, else a ValueError."""
    loops = CppLoops()
    x, state = inputs("adex", torch.float64)
    P = [torch.tensor(c, dtype=torch.float64) for c in (0.1, -0.2, 0.002, 2.0, 0.02, 0.5, 0.0, 1.0, -0.2)]
    runs = {i: loops.forward("adex", x, state, P, True, False, KernelOptions("super", 100.0, i))
            for i in ("euler", "symplectic")}
    assert torch.equal(runs["euler"][0][0], runs["symplectic"][0][0])  # the first step's spikes: a not used yet
    assert not torch.equal(runs["euler"][1][2], runs["symplectic"][1][2])
    with pytest.raises(ValueError, match="Unknown integrator 'rk4'; valid integrators: euler, symplectic"):
        KernelOptions("super", 100.0, "rk4")  # checked where the options are built


def test_custom_surrogate_runs_in_python_and_cpp_refuses_it():
    SURROGATES["test_gauss"] = lambda x, a: a / math.sqrt(math.pi) * torch.exp(-(a * x) ** 2)
    try:
        x = torch.zeros(2, 3)
        assert resolve("auto", "adex", (x,), KernelOptions("test_gauss")).name == "python"
        with pytest.raises(ValueError, match="backend='cpp' cannot run this adex layer: .*built-in surrogates"):
            resolve("cpp", "adex", (x,), KernelOptions("test_gauss"))
        layer_check = make_layer("adex", "eager", "test_gauss")  # the registry accepts it
        assert layer_check.surrogate["method"] == "test_gauss"
        assert_gradients_equal("adex", "python", "test_gauss", "all", (37,))
    finally:
        del SURROGATES["test_gauss"]


@pytest.mark.parametrize("backend, recurrent", [(b, False) for b in ("cpp", "triton", "compile", "python", "auto")]
                         + [(b, True) for b in ("cpp", "triton", "python", "auto")])  # compile: feed-forward only
def test_user_registered_surrogate_rule_is_the_same_on_every_backend(backend, recurrent, monkeypatch):
    """A backend whose kernels lack a user-registered surrogate (cpp, triton) raises a ValueError
    naming it when chosen explicitly, for feed-forward and recurrent layers alike; those that run
    it (python, compile) are taken; ``auto`` takes python, without a warning."""
    if backend == "triton":
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")  # else the CPU itself is the reason
    monkeypatch.setitem(SURROGATES, "test_gauss", lambda x, a: a / math.sqrt(math.pi) * torch.exp(-(a * x) ** 2))
    x = torch.rand(4, 2, 3)
    tensors = (x, torch.rand(5, 3), torch.rand(5, 5)) if recurrent else (x,)
    options = KernelOptions("test_gauss", 3.0)
    if backend in ("cpp", "triton"):
        with pytest.raises(ValueError, match=rf"backend='{backend}' cannot run this adex layer: .*'test_gauss'"):
            resolve(backend, "adex", tensors, options)
        layer = (LIFAdExRecurrent(3, 5, LIFAdExParameters(method="test_gauss"), backend=backend) if recurrent
                 else make_layer("adex", backend, "test_gauss", dtype=torch.float32))
        with pytest.raises(ValueError, match="'test_gauss'.*Use backend='auto' or 'python'"):
            layer(x)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve(backend, "adex", tensors, options).name == ("python" if backend == "auto" else backend)


def test_backend_names_are_exposed():
    assert set(BACKENDS) == {"auto", "cpp", "triton", "compile", "python", "eager"}
    assert "backend='auto'" in repr(LIFAdEx())


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["adex", "lif", "li"])
def test_compile_backend(kind):
    """torch.compile of the step bodies: LIF and LI bit-identical; AdEx's exponential is
    inductor's own (not MKL's), so its states may differ by rounding: spikes must agree almost
    everywhere and gradients to 1e-10 where the trajectories agree."""
    torch._dynamo.reset()
    x, state = inputs(kind, torch.float64)
    ref_out, ref_state = run(make_layer(kind, "eager"), x, state)
    out, final = run(make_layer(kind, "compile"), x, state)
    if kind == "adex":
        assert (out != ref_out).float().mean() < 1e-3
        torch.testing.assert_close(final, tuple(ref_state), rtol=1e-12, atol=1e-12)
    else:
        assert torch.equal(out, ref_out)
        assert all(torch.equal(a, b) for a, b in zip(final, ref_state, strict=True))
    assert_gradients_equal(kind, "compile", "super" if kind != "li" else None, "all", (37,))


def test_cpp_kernels_give_back_mkl_thread_setting(cpp_library):
    """The kernels ask MKL for one thread per OpenMP thread while they run (its nested regions
    serialised them) and restore the caller's setting afterwards."""
    import ctypes
    import os

    path = os.path.join(os.path.dirname(torch.__file__), "lib", "libtorch_cpu.so")
    mkl = ctypes.CDLL(path) if os.path.exists(path) else None
    if mkl is None or not hasattr(mkl, "MKL_Get_Max_Threads"):
        pytest.skip("this torch's MKL exports no service functions")
    before = mkl.MKL_Get_Max_Threads()
    x, state = inputs("adex", torch.float32)
    run(make_layer("adex", "cpp", dtype=torch.float32), x.requires_grad_(), state)[0].sum().backward()
    assert mkl.MKL_Get_Max_Threads() == before


# ---------------------------------------------------------------- what reaches the kernels
MISMATCHED_STATES = {  # input dtype, state dtype, state device
    "float64 input, float32 state": (torch.float64, torch.float32, "cpu"),  # segfaulted in cpp
    "float32 input, float16 state": (torch.float32, torch.float16, "cpu"),  # corrupted the heap
    "float32 input, float64 state": (torch.float32, torch.float64, "cpu"),  # garbage (LI off by 3e30)
    "state on another device": (torch.float32, torch.float32, "meta"),  # segfaulted
}


@pytest.mark.parametrize("case", list(MISMATCHED_STATES))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kind", ["adex", "lif", "li"])
def test_state_of_another_dtype_or_device_is_the_same_clear_error_on_every_backend(kind, backend, case):
    x_dtype, state_dtype, device = MISMATCHED_STATES[case]
    layer = make_layer(kind, backend, dtype=torch.float32)
    x = torch.rand(6, 3, 5, dtype=x_dtype)
    state = layer.state_class(*(torch.zeros(3, 5, dtype=state_dtype, device=device) for _ in layer.state_class._fields))
    message = (rf"state\.v is {state_dtype} on {device} but the input is {x_dtype} on cpu; pass state=None "
               r"to start from rest, or convert the state to the input x: \w+\(\*\(s\.to\(x\) for s in state\)\)")
    with pytest.raises(ValueError, match=message):
        layer(x, state)
    # One field off is named, and the conversion the message suggests works.
    fields = [torch.zeros(3, 5, dtype=x_dtype) for _ in layer.state_class._fields]
    fields[1] = fields[1].to(state_dtype).to(device)
    with pytest.raises(ValueError, match=rf"state\.i is {state_dtype} on {device}"):
        layer(x, layer.state_class(*fields))
    if device == "cpu":
        out, _ = layer(x, layer.state_class(*(s.to(x) for s in fields)))
        assert out.dtype == x_dtype


@pytest.mark.parametrize("given", [False, True], ids=["from rest", "given state"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("kind", ["adex", "lif", "li"])
def test_no_time_steps_give_no_outputs_and_the_initial_state(kind, backend, given):
    """T = 0 on every backend: outputs [0, B, N] and the initial state (as new tensors; gradients
    pass straight through). Before: an empty result on cpp, an IndexError on python, a RuntimeError
    on eager."""
    layer = make_layer(kind, backend, dtype=torch.float64)
    x = torch.rand(0, 3, 5, dtype=torch.float64, requires_grad=True)
    state = None
    if given:
        state = layer.state_class(*(torch.rand(3, 5, dtype=torch.float64, requires_grad=True)
                                    for _ in layer.state_class._fields))
    out, final = layer(x, state)
    assert out.shape == (0, 3, 5) and out.dtype == torch.float64
    assert type(final) is layer.state_class
    expected = state if given else layer.initial_state(x)
    for a, b in zip(final, expected, strict=True):
        assert torch.equal(a, b) and a is not b and a.is_contiguous()
    if given:
        grads = torch.autograd.grad(sum((s * (k + 1)).sum() for k, s in enumerate(final)), state)
        assert all(torch.equal(g, torch.full_like(g, k + 1.0)) for k, g in enumerate(grads))


@pytest.mark.parametrize("backend", ["cpp", "python", "compile"])
@pytest.mark.parametrize("kind", ["adex", "lif", "li"])
def test_integrate_with_no_time_steps(kind, backend, request):
    """The fused loops without a layer in front (_integrate) with T = 0, backward included."""
    from snn.neurons.fused.feed_forward import _integrate as integrate

    needs(backend, request)
    layer = make_layer(kind, "eager")
    x = torch.rand(0, 2, 4, dtype=torch.float64, requires_grad=True)
    state = layer.state_class(*(torch.rand(2, 4, dtype=torch.float64, requires_grad=True)
                                for _ in layer.state_class._fields))
    out, final = integrate(kind, backend, x, state, layer.neuron_parameters(x), layer.dt)
    assert out.shape == (0, 2, 4)
    assert all(torch.equal(a, b) for a, b in zip(final, state, strict=True))
    grads = torch.autograd.grad(sum(s.sum() for s in final) + out.sum(), (x, *state))
    assert grads[0].shape == (0, 2, 4) and all(torch.equal(g, torch.ones_like(g)) for g in grads[1:])


@pytest.mark.parametrize("backend", ["cpp", "python"])
def test_integrate_checks_direct_callers_state_and_casts_their_parameters(backend, request):
    from snn.neurons import LIFFeedForwardState
    from snn.neurons.fused.feed_forward import _integrate as integrate

    needs(backend, request)
    x = torch.rand(6, 3, 5) * 3
    with pytest.raises(ValueError, match=r"state\.i is torch\.float16 on cpu but the input is torch\.float32"):
        integrate("lif", backend, x, LIFFeedForwardState(torch.zeros(3, 5), torch.zeros(3, 5).half()),
                  LIFParameters(), 1e-3)
    with pytest.raises(ValueError, match=r"state\.v must be a dense tensor of shape \[3, 5\]"):
        integrate("lif", backend, x, LIFFeedForwardState(torch.zeros(5), torch.zeros(3, 5)), LIFParameters(), 1e-3)
    with pytest.raises(ValueError, match="'v_th' of shape \\[4\\] does not broadcast"):
        integrate("lif", backend, x, LIFFeedForwardState(torch.zeros(3, 5), torch.zeros(3, 5)),
                  LIFParameters(v_th=torch.ones(4)), 1e-3)
    # Numbers and float64 parameters with a float32 input: computed in float32, as a layer does.
    p = LIFParameters(tau_mem_inv=100.0, v_th=torch.tensor(0.5, dtype=torch.float64))
    state = LIFFeedForwardState(torch.zeros(3, 5), torch.zeros(3, 5))
    out, final = integrate("lif", backend, x, state, p, 1e-3)
    ref_out, ref_final = LIF(p, backend="eager")(x, state)
    assert torch.equal(out, ref_out) and all(torch.equal(a, b) for a, b in zip(final, ref_final, strict=True))


def test_cpp_kernels_refuse_what_they_cannot_read(cpp_library):
    """The last check before C++: the backend's forward and backward, called directly, refuse
    every tensor whose memory the kernels would misread, and copy strided ones."""
    loops, options = CppLoops(), KernelOptions("super", 2.0)
    x, (v, i) = torch.rand(4, 2, 3) * 3, (torch.zeros(2, 3), torch.zeros(2, 3))
    P = [torch.tensor(c) for c in (0.1, -0.2, 0.0, 1.0, 0.0)]
    out, final, saved = loops.forward("lif", x, (v, i), P, save=True, save_extra=False, options=options)
    bad_forward = {
        "a float16 state": dict(state=(v.half(), i)),
        "a state on another device": dict(state=(v, i.to("meta"))),
        "a state of another size": dict(state=(v[:1], i)),
        "a float16 input": dict(x=x.half()),
        "an input on another device": dict(x=x.to("meta")),
        "a sparse input": dict(x=x.to_sparse()),
        "a float64 parameter": dict(P=[P[0].double(), *P[1:]]),
        "a parameter of another size": dict(P=[torch.ones(4), *P[1:]]),
        "a parameter on another device": dict(P=[P[0].to("meta"), *P[1:]]),
        "a missing parameter": dict(P=P[:4]),
        "an input without memory": dict(x=torch._efficientzerotensor(4, 2, 3)),  # data_ptr() == 0
        "a parameter without memory": dict(P=[torch._efficientzerotensor(()), *P[1:]]),
    }
    for what, change in bad_forward.items():
        args = {"x": x, "state": (v, i), "P": P, **change}
        with pytest.raises(ValueError, match=r"snn's C\+\+ kernels"):
            loops.forward("lif", args["x"], args["state"], args["P"], save=True, save_extra=False, options=options)
            pytest.fail(f"{what} was accepted")
    # Strided views, broadcasts and lazy negations are read as the values they show.
    xs = (torch.rand(3, 2, 4) * 3).permute(2, 1, 0)
    strided = loops.forward("lif", xs, (v.t().contiguous().t(), i[:1].expand(2, 3)), [p.expand(2, 3) for p in P],
                            True, False, options)
    contiguous = loops.forward("lif", xs.contiguous(), (v, i), P, True, False, options)
    assert torch.equal(strided[0], contiguous[0]) and 0 < strided[0].mean() < 1
    if hasattr(torch, "_neg_view"):
        negated = loops.forward("lif", torch._neg_view(-x), (v, i), P, True, False, options)
        assert torch.equal(negated[0], out)
    g = torch.ones_like(out)
    bad_backward = {
        "a float16 saved voltage": dict(saved=[saved[0].half()]),
        "a saved voltage of another size": dict(saved=[saved[0][:2]]),
        "an initial voltage of another size": dict(v0=v[:1]),
        "an output gradient without time": dict(gout=torch.tensor(1.0)),
        "an output gradient on another device": dict(gout=g.to("meta")),
        "a float16 state gradient": dict(gstate=[v.half(), i]),
    }
    for what, change in bad_backward.items():
        args = {"gout": g, "gstate": [v, i], "saved": saved, "v0": v, **change}
        with pytest.raises(ValueError, match=r"snn's C\+\+ kernels"):
            loops.backward("lif", args["gout"], args["gstate"], args["saved"], args["v0"], P, options, False)
            pytest.fail(f"{what} was accepted")


@pytest.mark.parametrize("backend", ["python", "cpp"])
def test_saved_tensor_hooks_cannot_hand_the_kernels_another_dtype(backend, request):
    """Saved tensors come back through autograd's hooks: one that stores them in float16 (to save
    memory) and forgets to convert back gets a clear error, not a misread buffer."""
    needs(backend, request)
    layer = make_layer("lif", backend, dtype=torch.float32)
    x = (torch.rand(5, 2, 3) * 3).requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t.half(), lambda t: t):
        out, _ = layer(x)
    with pytest.raises(ValueError, match="got a torch.float16 tensor on cpu back: a saved_tensors_hooks unpack hook"):
        out.sum().backward()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t.half(), lambda t: t.float()):
        out, _ = layer(x)
    out.sum().backward()  # converted back: fine (float16-rounded voltages)
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("backend", ["auto", "python", "eager"])
@pytest.mark.parametrize("name", ["LIFRecurrent", "LIFAdExRecurrent"])
def test_recurrent_layers_with_no_time_steps_or_a_mismatched_state(name, backend):
    import snn.neurons

    layer = getattr(snn.neurons, name)(3, 4, backend=backend)
    out, final = layer(torch.rand(0, 2, 3))
    assert out.shape == (0, 2, 4)
    assert all(torch.equal(a, b) for a, b in zip(final, layer.initial_state(torch.rand(1, 2, 3)), strict=True))
    state = layer.state_class(*(torch.zeros(2, 4, dtype=torch.float64) for _ in layer.state_class._fields))
    with pytest.raises(ValueError, match=r"state\.z is torch\.float64 on cpu but the input is torch\.float32"):
        layer(torch.rand(5, 2, 3), state)
