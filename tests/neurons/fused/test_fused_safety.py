"""Memory safety of the fused loops: no argument, however odd, reaches the C++ kernels as raw memory
they would misread, and every backend gives the eager loop's result or a clear exception.

The fuzz cases run in a subprocess (``python -m tests.neurons.fused.test_fused_safety SEED CASES``,
see tests/fuzz.py) that prints a line before and after each case: a crash (a signal from the
kernels) then fails the test and names the case that was running, instead of killing pytest. Each
case draws, from a fixed seed, a neuron type, an input (dtype float16/32/64, bfloat16 or int; device
cpu or meta; shapes with zero-size dimensions and single neurons; contiguous, transposed, broadcast,
sliced, offset, lazily negated or sparse), a state (None, or fields of any of those kinds, right or
wrong shape) and parameters (numbers, scalar or per-neuron tensors, wrong shapes, buffers replaced
afterwards by tensors of another dtype, device, layout or shape, learnable ones), and runs it:

* through the layer on ``auto``, ``cpp`` and ``python``, against ``eager``: both raise a
  ValueError/TypeError, or both return the same outputs, final state and gradients (``cpp`` may
  refuse what it does not cover: a dtype other than float32/float64, a device other than the CPU);
* through the fused loops without a layer in front (``snn.neurons.fused.feed_forward._integrate``),
  with the raw parameter values;
* through the ``cpp`` backend's ``forward``/``backward`` directly, with tensors of any dtype,
  device, size and layout (efficient zero tensors without memory included) in every pointer
  argument: a ValueError or a result, never a signal.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from snn.neurons import (
    LI,
    LIF,
    LIFAdEx,
    LIFAdExFeedForwardState,
    LIFAdExParameters,
    LIFFeedForwardState,
    LIFParameters,
    LIParameters,
    LIState,
)
from snn.neurons.fused.feed_forward import _integrate as integrate
from snn.neurons.fused.spec import NEURON_SPECS
from tests.fuzz import LAYOUTS, METHODS, compare_gradients, draw_dtype, dtype_of, make_tensor, run_worker, worker
from tests.helpers import require_cpp_kernels

SEED = 20251127
CASES = 300
CLEAR = (ValueError, TypeError)

LAYERS = {
    "adex": (LIFAdEx, LIFAdExParameters, LIFAdExFeedForwardState),
    "lif": (LIF, LIFParameters, LIFFeedForwardState),
    "li": (LI, LIParameters, LIState),
}
# Valid ranges of the constants (drawn inside them: the constructor refuses the rest).
RANGES = {
    "tau_syn_inv": (50.0, 300.0), "tau_mem_inv": (50.0, 200.0), "tau_ada_inv": (1.0, 100.0),
    "delta_T": (0.2, 1.0), "v_th": (0.5, 1.5), "v_leak": (-0.2, 0.2), "v_reset": (-0.2, 0.2),
    "adaptation_current": (0.0, 5.0), "adaptation_spike": (0.0, 2.0),
}
FLOATS = [torch.float32, torch.float64, torch.float16, torch.bfloat16]


def test_fuzz_every_backend_gives_the_eager_result_or_a_clear_error():
    """A few hundred drawn cases in a subprocess; fails naming the case if one crashes it."""
    eager = run_worker(__name__, SEED, CASES)
    # Not a degenerate draw: plenty of cases run through, plenty are refused.
    assert 0.25 < eager.count("ok") / CASES < 0.75, f"{eager.count('ok')} of {CASES} cases ran in eager"


# ---------------------------------------------------------------- the cached kernel library
# Each scenario damages a copy of this session's build in a temporary TORCH_EXTENSIONS_DIR and
# loads it in a subprocess (the session's own library is never touched): the process must end
# normally, with the library rebuilt or with the python backend and a warning that says why.

PROBE = """
import json, warnings, torch
from snn.neurons import LIF
from snn.neurons.fused import KernelOptions
from snn.neurons.fused.registry import resolve
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    backend = resolve("auto", "lif", (torch.zeros(2, 3),), KernelOptions("super")).name
    z, _ = LIF()(torch.rand(5, 2, 3) * 3)
print("RESULT " + json.dumps({"backend": backend, "warnings": [str(w.message) for w in caught
                                                               if "snn" in str(w.message)]}))
"""


@pytest.fixture(scope="module")
def session_build():
    """This session's built library (building it if needed)."""
    from snn.neurons.fused.cpp import build

    require_cpp_kernels()
    return build.library_location()


@pytest.fixture
def cache_copy(session_build, tmp_path):
    """A copy of the session's build directory in a temporary TORCH_EXTENSIONS_DIR (copied under
    the build's lock, with its timestamps, so that ninja finds it up to date): its location."""
    import shutil

    from filelock import FileLock

    from snn.neurons.fused.cpp import build

    target = tmp_path / "extensions" / session_build.name
    with FileLock(os.path.join(session_build.directory, build.LOCK_NAME)):
        shutil.copytree(session_build.directory, target)
    location = session_build._replace(
        directory=str(target), library=str(target / os.path.basename(session_build.library)),
        record=str(target / os.path.basename(session_build.record)))
    assert build._cache_fault(location.library, location.record, location.key) is None
    return location


def probe(location, **env):
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=900,
                            env={**os.environ, "TORCH_EXTENSIONS_DIR": os.path.dirname(location.directory),
                                 **env})
    assert result.returncode == 0, f"exit {result.returncode} (negative: a signal)\n{result.stderr[-3000:]}"
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def damage(location, how: str) -> None:
    size = os.path.getsize(location.library)
    if how == "truncated":  # an interrupted build or a full disk: the ELF header, little else
        with open(location.library, "r+b") as f:
            f.truncate(4096)
    elif how == "junk":  # the right size, the wrong bytes (a build or copy gone wrong)
        with open(location.library, "wb") as f:
            f.write(random.Random(0).randbytes(size))
    elif how == "flipped":  # one byte changed inside the code: the loader would accept it
        with open(location.library, "r+b") as f:
            f.seek(size // 2)
            byte = f.read(1)
            f.seek(size // 2)
            f.write(bytes([byte[0] ^ 0xFF]))
    elif how == "unrecorded":  # a build interrupted before its record was written
        os.remove(location.record)


@pytest.mark.parametrize("how", ["truncated", "junk", "flipped", "unrecorded"])
def test_damaged_cached_library_is_rebuilt_not_loaded(cache_copy, how):
    """Before: a truncated library killed the process with SIGBUS (even under ``auto``), junk of
    the right size fell back with a warning that the kernels "could not be built"."""
    from snn.neurons.fused.cpp import build

    damage(cache_copy, how)
    result = probe(cache_copy)
    assert result == {"backend": "cpp", "warnings": []}
    assert build._cache_fault(cache_copy.library, cache_copy.record, cache_copy.key) is None
    assert os.path.getsize(cache_copy.library) == os.path.getsize(
        os.path.join(os.path.dirname(cache_copy.library), os.path.basename(cache_copy.library)))


@pytest.mark.parametrize("how", ["truncated", "junk"])
def test_damaged_cached_library_that_cannot_be_rebuilt_falls_back_and_says_why(cache_copy, how):
    damage(cache_copy, how)
    result = probe(cache_copy, CXX=os.path.join(os.path.dirname(cache_copy.directory), "no-such-compiler"))
    assert result["backend"] == "python"
    (warning,) = result["warnings"]
    assert f"the cached C++ kernel library at {cache_copy.library} was unusable" in warning
    assert ("truncated" if how == "truncated" else "SHA-256") in warning
    assert "could not be rebuilt" in warning and "using the 'python' backend" in warning
    assert not os.path.exists(cache_copy.library)  # never left for the next process to map


def test_intact_cached_library_is_loaded_as_it_is(cache_copy):
    before = os.stat(cache_copy.library).st_mtime_ns
    assert probe(cache_copy) == {"backend": "cpp", "warnings": []}
    assert os.stat(cache_copy.library).st_mtime_ns == before  # not even relinked


# ---------------------------------------------------------------- the subprocess


def draw_case(rng: random.Random, index: int) -> dict:
    """The choices of one case (plain values: printed, and used to build every backend's run)."""
    kind = rng.choice(list(LAYERS))
    T, B, N = rng.choice([0, 1, 2, 5, 9]), rng.choice([0, 1, 3]), rng.choice([1, 4, 7, 300])
    extra = [rng.choice([1, 2])] if rng.random() < 0.2 else []
    dtype = draw_dtype(rng, torch.float32, 0.3)
    case = {
        "index": index, "seed": rng.randrange(2**31), "kind": kind, "shape": [T, B, *extra, N],
        "dtype": str(dtype), "device": "meta" if rng.random() < 0.08 else "cpu",
        "layout": rng.choice(LAYOUTS + ["contiguous"] * 4), "grad": rng.random() < 0.5,
        "loss": rng.choice(["weighted", "sum"]),
        "method": rng.choice(METHODS),
    }
    neuron_shape = [B, *extra, N]
    fields = [f for f in LAYERS[kind][1]._fields if f not in ("method", "alpha", "integrator")]
    params = {}
    for name in fields:
        r = rng.random()
        if r < 0.55:
            continue
        low, high = RANGES[name]
        if r < 0.65:
            params[name] = ("number", rng.uniform(low, high))
        elif r < 0.8:
            params[name] = ("tensor", [], str(draw_dtype(rng)), low, high)
        elif r < 0.92:
            params[name] = ("tensor", [N], str(draw_dtype(rng, torch.float64, 0.5)), low, high)
        else:
            wrong = rng.choice([[N + 1], [B + 1, N], [2, *neuron_shape], neuron_shape])
            params[name] = ("tensor", wrong, "torch.float64", low, high)
    case["params"] = params
    case["learnable"] = [f for f in fields if rng.random() < 0.15]
    tampered = {}
    if rng.random() < 0.2:  # a buffer replaced after construction (load_state_dict-like tampering)
        name = rng.choice([f for f in fields if f not in case["learnable"]] or fields)
        if name not in case["learnable"]:
            low, high = RANGES[name]
            tampered[name] = (rng.choice([[], [N], [N + 2], [B, N]]), str(draw_dtype(rng)),
                              "meta" if rng.random() < 0.2 else "cpu", rng.choice(LAYOUTS), low, high)
    case["tampered"] = tampered
    case["module_dtype"] = rng.choice([None] * 4 + ["torch.float64", "torch.float16"])
    # A meta input mostly meets a module moved there too (else: the parameters' device is refused).
    case["module_device"] = case["device"] if rng.random() < 0.8 else "cpu"
    if rng.random() < 0.4:
        case["state"] = None
    else:
        state = {}
        for name in NEURON_SPECS[kind].state:
            shape = neuron_shape if rng.random() < 0.9 else rng.choice([[B + 1, *extra, N], [N], [*neuron_shape, 1]])
            state[name] = (shape, str(draw_dtype(rng, dtype, 0.8)),
                           case["device"] if rng.random() < 0.9 else rng.choice(["cpu", "meta"]),
                           rng.choice(LAYOUTS))
        case["state"] = state
        case["state_type"] = rng.choice(["namedtuple"] * 19 + ["tuple"])
    return case


def build(case: dict, backend: str):
    """The layer, input leaf, input and state of ``case`` (the same values for every backend)."""
    g = torch.Generator().manual_seed(case["seed"])
    rng = random.Random(case["seed"])
    layer_class, params_class, state_class = LAYERS[case["kind"]]
    kwargs = {}
    for name, spec in case["params"].items():
        if spec[0] == "number":
            kwargs[name] = spec[1]
        else:
            _, shape, dtype, low, high = spec
            kwargs[name] = make_tensor(rng, g, shape, dtype_of(dtype), low=low, high=high)[1]
    if case["kind"] != "li":
        kwargs["method"] = case["method"]
    # Learnable constants at the one neuron shape their tensors give (one shared value for numbers);
    # learnable tensors of two different shapes are refused at construction.
    shapes = {tuple(case["params"][f][1]) if case["params"].get(f, ("number",))[0] == "tensor" else ()
              for f in case["learnable"]} - {()}
    shape = () if not shapes else (next(iter(shapes)) if len(shapes) == 1 else None)
    layer = layer_class(params_class(**kwargs), learnable=case["learnable"], backend=backend,
                        shape=shape if case["learnable"] else None)
    if case["module_dtype"] is not None:
        layer = layer.to(dtype_of(case["module_dtype"]))
    layer = layer.to(case["module_device"])
    for name, (shape, dtype, device, layout, low, high) in case["tampered"].items():
        setattr(layer, name, make_tensor(rng, g, shape, dtype_of(dtype), device, layout, low, high)[1].detach())
    dtype = dtype_of(case["dtype"])
    leaf, x = make_tensor(rng, g, case["shape"], dtype, case["device"], case["layout"], -1.0, 5.0, case["grad"])
    state = None
    if case["state"] is not None:
        fields = []
        for shape, field_dtype, device, layout in case["state"].values():
            fields.append(make_tensor(rng, g, shape, dtype_of(field_dtype), device, layout, 0.0, 1.2)[1])
        state = state_class(*fields) if case["state_type"] == "namedtuple" else tuple(fields)
    weights = torch.randn(case["shape"], generator=g, dtype=torch.float64)
    return layer, leaf, x, state, weights


def run_layer(case: dict, backend: str):
    """``("error", type, message)`` or ``("ok", outputs, final state, gradients)``."""
    try:
        layer, leaf, x, state, weights = build(case, backend)
        out, final = layer(x, state)
    except CLEAR as error:
        return ("error", type(error).__name__, str(error))
    grads = None
    # The outputs need no gradient with the heaviside surrogate in eager (the fused loops' do, and
    # it is zero): the loss takes what has one.
    terms = [out.sum() if case["loss"] == "sum" else (out * weights.to(out)).sum()]
    terms += [s.sum() * (k + 2) for k, s in enumerate(final)]
    terms = [t for t in terms if t.requires_grad]
    inputs = [leaf] * leaf.requires_grad + [p for p in layer.parameters()]
    if terms and inputs and out.device.type == "cpu":
        grads = torch.autograd.grad(sum(terms), inputs, allow_unused=True)
    return ("ok", out.detach(), tuple(s.detach() for s in final), grads)


def compare(case: dict, backend: str, ref, got) -> str | None:
    """Why ``got`` (a backend's run) is not ``ref`` (eager's), or None."""
    if got[0] == "error" and not got[2].strip():
        return f"{got[1]} without a message"
    if ref[0] == "error":
        return None if got[0] == "error" else f"eager raised {ref[1]}: {ref[2]!r}; {backend} returned a result"
    if got[0] == "error":
        dtype = dtype_of(case["dtype"])
        uncovered = dtype not in (torch.float32, torch.float64) or case["device"] != "cpu"
        if backend == "cpp" and uncovered and "backend='cpp'" in got[2]:
            return None  # outside what the C++ kernels cover: refused, by name
        return f"eager returned a result; {backend} raised {got[1]}: {got[2]!r}"
    _, out, final, grads = got
    _, ref_out, ref_final, ref_grads = ref
    for what, a, b in [("outputs", out, ref_out), *[(f"state[{k}]", s, r) for k, (s, r)
                                                     in enumerate(zip(final, ref_final, strict=True))]]:
        if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
            return f"{what}: {a.dtype} {list(a.shape)} on {a.device}, eager {b.dtype} {list(b.shape)} on {b.device}"
        if a.device.type == "meta":
            continue
        if a.dtype in (torch.float32, torch.float64):
            same = torch.equal(a, b) or (
                torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num())
            )
            if not same:
                return f"{what} differ from eager's by {(a - b).abs().max().item()}"
        elif not torch.allclose(a.float(), b.float(), rtol=0.05, atol=0.05, equal_nan=True):
            # float16/bfloat16: the same operations, but a different order can round differently
            mismatch = ((a.float() - b.float()).abs() > 0.05).float().mean().item()
            if mismatch > 0.05:
                return f"{what} differ from eager's in {mismatch:.0%} of the values"
    if (grads is None) != (ref_grads is None):  # nothing depends on a leaf in one of them (heaviside)
        some = grads if ref_grads is None else ref_grads
        if any(g is not None and g.count_nonzero() > 0 for g in some):
            return (f"gradients: {backend} {'none' if grads is None else 'some'}, "
                    f"eager {'none' if ref_grads is None else 'some'}")
    elif grads is not None and out.dtype in (torch.float32, torch.float64):
        return compare_gradients(grads, ref_grads, 1e-8 if out.dtype == torch.float64 else 2e-3)
    return None


def run_direct(case: dict, backend: str) -> str | None:
    """``_integrate`` with the raw parameter values: a clear error or a result."""
    layer, leaf, x, state, _ = build(case, "eager")
    kind = case["kind"]
    p = layer.p if hasattr(layer, "p") else None
    if p is None:
        return None
    if state is None and isinstance(x, torch.Tensor) and x.dim() >= 1 and x.is_floating_point() \
            and x.layout == torch.strided:
        try:
            state = layer.rest_state(x.new_zeros(x.shape[1:]))
        except RuntimeError:  # a v_leak that does not broadcast: integrate gets no state at all
            state = None
    try:
        out, final = integrate(kind, backend, x, state, p, 0.001)
    except CLEAR as error:
        return None if str(error).strip() else f"{type(error).__name__} without a message"
    if out.shape != x.shape:
        return f"integrate returned outputs {list(out.shape)} for input {list(x.shape)}"
    return None


def run_kernels(rng: random.Random, g: torch.Generator, kind: str) -> str | None:
    """The cpp backend's forward and backward with each pointer argument drawn from the whole range
    of tensors: a ValueError or a result."""
    from snn.neurons.fused.cpp.feed_forward import CppLoops
    from snn.neurons.fused.spec import KernelOptions

    spec = NEURON_SPECS[kind]
    loops, options = CppLoops(), KernelOptions("super" if spec.spiking else None, 2.0)
    T, N = rng.choice([0, 1, 3]), rng.choice([0, 1, 5, 300])
    dtype = draw_dtype(rng, torch.float32, 0.5)

    def arg(shape, p_good=0.75):
        good = rng.random() < p_good
        shape = list(shape) if good else rng.choice([list(shape[:-1]) + [N + 1], [1], [], list(shape) + [2]])
        dt = dtype if good else draw_dtype(rng)
        device = "cpu" if good or rng.random() < 0.7 else "meta"
        layout = "contiguous" if good and rng.random() < 0.6 else rng.choice(LAYOUTS)
        if rng.random() < 0.03 and dt.is_floating_point:  # no memory at all (data_ptr 0)
            return torch._efficientzerotensor(shape, dtype=dt, device=device)
        return make_tensor(rng, g, shape, dt, device, layout, 0.0, 1.0)[1]

    x = arg([T, 2, N])
    state = [arg([2, N]) for _ in spec.state]
    P = [arg(rng.choice([[], [N], [2, N]])) for _ in spec.params]
    try:
        with torch.no_grad():
            out, final, saved = loops.forward(kind, x, state, P, save=True, save_extra=rng.random() < 0.5,
                                              options=options)
    except ValueError as error:
        return None if str(error).strip() else "ValueError without a message"
    param_grads = len(saved) > spec.spiking
    gout = arg([T, 2, N]) if rng.random() < 0.9 else None
    gstate = [arg([2, N]) for _ in spec.state]
    saved = [s if rng.random() < 0.8 else arg(list(s.shape)) for s in saved]
    v0 = arg([2, N])
    try:
        with torch.no_grad():
            loops.backward(kind, gout, gstate, saved, v0, P, options, param_grads)
    except ValueError as error:
        return None if str(error).strip() else "ValueError without a message"
    return None


def run_case(rng: random.Random, case: dict, problems: list[str]) -> None:
    index = case["index"]
    ref = run_layer(case, "eager")
    print(f"EAGER {index} {ref[0]} {ref[2][:70] if ref[0] == 'error' else ''}", flush=True)
    for backend in ("auto", "cpp", "python"):
        print(f"STEP {index} layer {backend}", flush=True)
        problem = compare(case, backend, ref, run_layer(case, backend))
        if problem:
            problems.append(f"{backend}: {problem}")
    for backend in ("cpp", "python"):
        print(f"STEP {index} integrate {backend}", flush=True)
        problem = run_direct(case, backend)
        if problem:
            problems.append(f"integrate {backend}: {problem}")
    print(f"STEP {index} kernels", flush=True)
    problem = run_kernels(rng, torch.Generator().manual_seed(case["seed"]), case["kind"])
    if problem:
        problems.append(f"kernels: {problem}")


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), draw_case, run_case)
