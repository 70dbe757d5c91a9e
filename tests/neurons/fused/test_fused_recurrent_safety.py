"""Memory safety of the ``cpp`` recurrent loops (snn.neurons.fused.cpp.recurrent): every
argument, however odd, gives the eager loop's result or a clear exception, never a signal.

As in test_fused_safety.py, the drawn cases run in a subprocess (``python -m
tests.neurons.fused.test_fused_recurrent_safety SEED CASES``, see tests/fuzz.py) that prints a line
before and after each case, so a crash fails the test naming its case. Each case draws a recurrent
AdEx or LIF layer (sizes with T = 0, single neurons and batches, N beyond a tile), an input, weights
given to the constructor and a state of any dtype and layout (transposed, broadcast, sliced, offset,
lazily negated, sparse; right or wrong shape) and runs it

* through the layer on ``cpp`` and ``auto`` against ``eager``: both raise a ValueError/TypeError
  (``cpp`` may also refuse what it does not cover, by name), or both return the same spikes, final
  state (bit for bit; within rounding where the state comes transposed or broadcast, see
  ``compare``) and gradients;
* through the loops' ``forward``/``backward`` directly (the native one-call loops, whose C++ runs
  BLAS's GEMM on the memory it is handed, and the per-step ones), with tensors of any dtype,
  device, shape and layout in every argument (strides drawn at random too: overlapping, zero,
  wider than the shape): a ValueError or a result.
"""

from __future__ import annotations

import os
import random
import sys

import torch

from snn.neurons import LIFAdExRecurrent, LIFAdExState, LIFRecurrent, LIFState
from snn.neurons.fused.spec import NEURON_SPECS
from tests.fuzz import LAYOUTS, METHODS, compare_gradients, draw_dtype, dtype_of, make_tensor, run_worker, worker

SEED = 20261127
CASES = 120
CLEAR = (ValueError, TypeError)
SPIKE_PRODUCTS = "SNN_SPIKE_PRODUCTS"  # snn.neurons.fused.cpp.recurrent.ENV
LAYERS = {"adex": (LIFAdExRecurrent, LIFAdExState), "lif": (LIFRecurrent, LIFState)}


def test_fuzz_cpp_recurrent_gives_the_eager_result_or_a_clear_error():
    """On one thread, where the loops and the eager loop run their products alike (bit for bit;
    on more threads the eager loop's products may round otherwise, see test_fused_recurrent.py)."""
    eager = run_worker(__name__, SEED, CASES, threads=1)
    ran = eager.count("ok")
    assert 0.25 < ran / CASES < 0.9, f"{ran} of {CASES} cases ran in eager: a degenerate draw"


def test_fuzz_cpp_recurrent_with_forced_sparse_products(monkeypatch):
    """The same draws (another seed) with ``SNN_SPIKE_PRODUCTS=sparse``: every forward step's
    ``W_rec z`` by gather-add and every weight-gradient chunk by scatter-add (on two threads, the
    columns split), and ``weight_gradient`` called directly on drawn tensors. Spikes equal eager's;
    states within rounding of them (the sums run in another order); gradients as before."""
    monkeypatch.setenv(SPIKE_PRODUCTS, "sparse")
    eager = run_worker(__name__, SEED + 1, CASES, threads=2)
    assert 0.25 < eager.count("ok") / CASES < 0.9


# ---------------------------------------------------------------- the subprocess


def draw_case(rng: random.Random, index: int) -> dict:
    kind = rng.choice(list(LAYERS))
    T, B, F, N = rng.choice([0, 1, 2, 6]), rng.choice([1, 3]), rng.choice([1, 4]), rng.choice([1, 7, 300])
    dtype = draw_dtype(rng, torch.float32, 0.6)

    def tensor(shape, p_good=0.85, like=dtype):
        good = rng.random() < p_good
        if not good:
            shape = rng.choice([[*shape[:-1], shape[-1] + 1], [1], [*shape, 2]])
        return (shape, str(like if good else draw_dtype(rng, like, 0.5)), rng.choice(LAYOUTS))

    case = {"index": index, "seed": rng.randrange(2**31), "kind": kind, "sizes": [T, B, F, N],
            "x": tensor([T, B, F], p_good=0.95), "w_in": tensor([N, F]), "w_rec": tensor([N, N]),
            "autapses": rng.random() < 0.5, "method": rng.choice(METHODS), "grad": rng.random() < 0.7,
            "learnable": rng.random() < 0.3, "module_dtype": rng.choice([None] * 3 + ["torch.float64"])}
    fields = NEURON_SPECS[kind].state
    case["state"] = None if rng.random() < 0.4 else [tensor([B, N], p_good=0.9) for _ in ("z", *fields)]
    return case


def materialise(rng, g, spec, low=0.0, high=1.0, grad=False):
    shape, dtype, layout = spec
    return make_tensor(rng, g, shape, dtype_of(dtype), "cpu", layout, low, high, grad)


def build(case: dict, backend: str):
    rng, g = random.Random(case["seed"]), torch.Generator().manual_seed(case["seed"])
    layer_class, state_class = LAYERS[case["kind"]]
    T, B, F, N = case["sizes"]
    leaf, x = materialise(rng, g, case["x"], 0.0, 4.0, case["grad"])
    w_in = materialise(rng, g, case["w_in"], 0.0, 1.0)[1]
    w_rec = materialise(rng, g, case["w_rec"], -0.5, 0.5)[1]
    state = None
    if case["state"] is not None:
        fields = [materialise(rng, g, spec)[1] for spec in case["state"]]
        state = state_class(*fields)
    kwargs = {"learnable": ["tau_mem_inv", "v_th"]} if case["learnable"] else {}
    p = getattr(__import__("snn.neurons", fromlist=["x"]),
                "LIFAdExParameters" if case["kind"] == "adex" else "LIFParameters")(method=case["method"])
    layer = layer_class(F, N, p, autapses=case["autapses"], input_weights=w_in, recurrent_weights=w_rec,
                        backend=backend, **kwargs)
    if case["module_dtype"] is not None:
        layer = layer.to(dtype_of(case["module_dtype"]))
    return layer, leaf, x, state


def run_layer(case: dict, backend: str):
    try:
        layer, leaf, x, state = build(case, backend)
        out, final = layer(x, state)
    except CLEAR as error:
        return ("error", type(error).__name__, str(error))
    terms = [t for t in (out.sum() * 1.5, *(s.sum() * (k + 2) for k, s in enumerate(final))) if t.requires_grad]
    inputs = [leaf] * leaf.requires_grad + list(layer.parameters())
    grads = torch.autograd.grad(sum(terms), inputs, allow_unused=True) if terms else None
    return ("ok", out.detach(), tuple(s.detach() for s in final), grads)


def compare(case: dict, backend: str, ref, got) -> str | None:
    if got[0] == "error" and not got[2].strip():
        return f"{got[1]} without a message"
    if ref[0] == "error":
        return None if got[0] == "error" else f"eager raised {ref[1]}: {ref[2]!r}; {backend} returned a result"
    if got[0] == "error":
        if backend == "cpp" and "backend='cpp'" in got[2]:
            return None  # outside what the C++ kernels cover (a dtype, a surrogate): refused by name
        return f"eager returned a result; {backend} raised {got[1]}: {got[2]!r}"
    _, out, final, grads = got
    _, ref_out, ref_final, ref_grads = ref
    # A state handed in column-major (transposed) or broadcast makes the eager step's spikes come
    # out in that layout, and BLAS rounds W_rec z in another layout otherwise; the loops multiply
    # z row-major (as for every state the layers make): the states then agree within rounding.
    relayout = case["state"] is not None and any(spec[2] in ("transposed", "expanded") for spec in case["state"])
    relayout = relayout or os.environ.get(SPIKE_PRODUCTS) == "sparse"  # the sums of W_rec z in another order
    for what, a, b in [("spikes", out, ref_out), *((f"state[{k}]", s, r) for k, (s, r)
                                                   in enumerate(zip(final, ref_final, strict=True)))]:
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"{what}: {a.dtype} {list(a.shape)}, eager {b.dtype} {list(b.shape)}"
        if a.dtype not in (torch.float32, torch.float64) or torch.equal(a.nan_to_num(), b.nan_to_num()):
            continue
        tolerance = 1e3 * torch.finfo(a.dtype).eps * max(1.0, b.nan_to_num().abs().max().item())
        if not relayout or what == "spikes" or (a - b).nan_to_num().abs().max() > tolerance:
            return f"{what} differ from eager's by {(a - b).abs().max().item()}"
    if grads is None or ref_grads is None or out.dtype not in (torch.float32, torch.float64):
        return None
    return compare_gradients(grads, ref_grads, 1e-8 if out.dtype == torch.float64 else 2e-3)


def run_loops(rng: random.Random, g: torch.Generator, kind: str) -> str | None:
    """The loops' forward and backward with every argument drawn from the whole range of tensors."""
    from snn.neurons.fused.cpp import recurrent as cpp_recurrent_loops
    from snn.neurons.fused.spec import KernelOptions

    options = KernelOptions("super", 2.0)

    spec = NEURON_SPECS[kind]
    T, B, F, N = rng.choice([0, 1, 3]), rng.choice([1, 2]), rng.choice([1, 3]), rng.choice([1, 5, 300])
    dtype = draw_dtype(rng, torch.float32, 0.5)

    # Mostly right arguments in odd layouts (the C++ then runs on them), or many wrong ones.
    p_right = rng.choice([0.8, 0.98])

    def arg(shape, p_good=None):
        good = rng.random() < (p_right if p_good is None else p_good)
        wrong = [[1], [], [*shape, 2]] + ([[*shape[:-1], shape[-1] + 1]] if shape else [])
        shape = list(shape) if good else rng.choice(wrong)
        dt = dtype if good else draw_dtype(rng)
        device = "cpu" if good or rng.random() < 0.7 else "meta"
        layout = "contiguous" if good and rng.random() < 0.6 else rng.choice(LAYOUTS)
        if rng.random() < 0.03 and dt.is_floating_point:  # no memory at all (data_ptr 0)
            return torch._efficientzerotensor(shape, dtype=dt, device=device)
        if rng.random() < 0.15 and shape:  # any strides: overlapping, zero, larger than the shape's
            strides = [rng.choice([0, 1, 2, 3, 7, 40]) for _ in shape]
            offset = rng.choice([0, 1, 5])
            size = offset + sum((n - 1) * st for n, st in zip(shape, strides, strict=True)) + 1
            size = max(size, 1) if min(shape) > 0 else offset
            base = make_tensor(rng, g, [size + rng.choice([0, 0, 3])], dt, device, "contiguous", 0.0, 1.0)[1]
            return base.as_strided(shape, strides, offset)
        return make_tensor(rng, g, shape, dt, device, layout, 0.0, 1.0)[1]

    x, w_in, w_rec, z0 = arg([T, B, F]), arg([N, F]), arg([N, N]), arg([B, N])
    state = [arg([B, N]) for _ in spec.state]
    P = [arg(rng.choice([[], [N], [B, N]])) for _ in spec.params]
    # The native loops (one C++ call, BLAS from C++) or the per-step ones, on the same draws.
    native = rng.random() < 0.7
    forward = cpp_recurrent_loops.forward if native else cpp_recurrent_loops.forward_per_step
    backward = cpp_recurrent_loops.backward if native else cpp_recurrent_loops.backward_per_step
    try:
        with torch.no_grad():
            out, final, saved = forward(kind, x, w_in, w_rec, z0, state, P, save=True,
                                        save_extra=rng.random() < 0.5, options=options)
    except ValueError as error:
        return None if str(error).strip() else "ValueError without a message"
    param_grads = len(saved) > 1
    gout = arg([T, B, N]) if rng.random() < 0.9 else None
    gz = arg([B, N]) if rng.random() < 0.5 else None
    gstate = [arg([B, N]) for _ in spec.state]
    saved = [s if rng.random() < 0.8 else arg(list(s.shape)) for s in saved]
    try:
        with torch.no_grad():
            gc = backward(kind, gout, gz, gstate, saved, arg([B, N]), w_rec if rng.random() < 0.8 else arg([N, N]), P,
                          options, param_grads)[0]
    except ValueError as error:
        return None if str(error).strip() else "ValueError without a message"
    # The sparse weight gradient (C++ reading g_c, the saved voltages, z0 and v_th) on drawn tensors,
    # inside the backward loop and on its own, drawn from a generator of this case's own: the later
    # cases' draws stay those of before.
    rng = random.Random(int(torch.randint(2**31, (1,), generator=g)))
    try:
        with torch.no_grad():
            backward(kind, gout, gz, gstate, saved, arg([B, N]), w_rec, P, options, param_grads,
                     None if rng.random() < 0.3 else arg([B, N]), True)
            cpp_recurrent_loops.weight_gradient(gc if rng.random() < 0.7 else arg([T, B, N]),
                                                saved[0] if rng.random() < 0.8 else arg([T, B, N]),
                                                None if rng.random() < 0.3 else arg([B, N]),
                                                arg(rng.choice([[], [N], [B, N]])))
    except ValueError as error:
        return None if str(error).strip() else "ValueError without a message"
    return None


def run_case(rng: random.Random, case: dict, problems: list[str]) -> None:
    index = case["index"]
    ref = run_layer(case, "eager")
    print(f"EAGER {index} {ref[0]}", flush=True)
    for backend in ("cpp", "auto"):
        problem = compare(case, backend, ref, run_layer(case, backend))
        if problem:
            problems.append(f"{backend}: {problem}")
    print(f"STEP {index} loops", flush=True)
    problem = run_loops(rng, torch.Generator().manual_seed(case["seed"]), case["kind"])
    if problem:
        problems.append(f"loops: {problem}")


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), draw_case, run_case)
