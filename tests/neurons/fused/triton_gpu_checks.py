"""The compiled Triton kernels on a CUDA GPU against the eager loop on the same GPU.

Run by tests/neurons/fused/test_triton.py::test_compiled_kernels_on_the_gpu in a process of its own (without
TRITON_INTERPRET), and by benchmarks/gpu_check.sh; exits non-zero with the failed check's message.

- The first-use check of the backend (snn.neurons.fused.triton.trust) passes on this GPU.
- Forward bit-identical for every neuron type (and AdEx's symplectic integrator) in float32 and
  float64, AdEx with ``delta_T = 0.37`` (not a power of two: an approximate division or exponential
  would show; the kernels use ``tl.div_rn`` and libdevice's exp, as torch's CUDA kernels round,
  and no fused multiply-adds); gradients within 1e-5 (float32) / 1e-10 (float64) of the largest;
  ``auto`` picks ``triton``; bfloat16 inputs give bfloat16 outputs and finite gradients.
- The same for the recurrent AdEx and LIF layers, with inputs and weights in multiples of 1/64, so
  that every current is exact and the triton loops' input GEMM over all steps
  (:mod:`snn.neurons.fused.triton.recurrent`) cannot round differently from the eager loop's
  per-step products: states bit-identical too.
- Mixed precision: ``Linear`` -> ``LIFAdExRecurrent`` under ``torch.autocast(DEVICE, bfloat16)``,
  triton against eager (spikes equal; the layer's weight gradients within 1e-4 of the largest, the
  linear layer's, through a bfloat16 product, within 2 bfloat16 ulps; the issue's reproduction).
- With two GPUs or more: a layer on ``cuda:1`` while ``cuda:0`` is current runs there and equals
  the eager loop (the launches' device guard).

``--interpret`` runs the same checks on the CPU through Triton's interpreter at smaller sizes and
with fewer surrogates (tests/neurons/fused/test_triton.py runs it, so that the script itself is
tested where no GPU is): there AdEx's exponential is numpy's, one ulp from torch's, so AdEx's
states are compared within 1e-6 (float32) / 1e-14 (float64) of the largest instead of bit for
bit. ``--quick`` (benchmarks/gpu_check.sh): the surrogates ``super`` and ``heaviside`` only (each
combination of constants is a kernel to compile); with ``--interpret``, float32 only.
"""

from __future__ import annotations

import os
import sys

INTERPRET = "--interpret" in sys.argv[1:]
QUICK = "--quick" in sys.argv[1:]
if INTERPRET:
    os.environ["TRITON_INTERPRET"] = "1"  # before the kernels load

import torch  # noqa: E402

from snn.neurons import (  # noqa: E402
    LI,
    LIF,
    LIFAdEx,
    LIFAdExParameters,
    LIFAdExRecurrent,
    LIFParameters,
    LIFRecurrent,
    LIParameters,
)
from snn.neurons.fused import KernelOptions  # noqa: E402
from snn.neurons.fused.registry import resolve  # noqa: E402

DEVICE = "cpu" if INTERPRET else "cuda"
EXP_TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-14}  # AdEx states under the interpreter
METHODS = ["super", "heaviside"] if INTERPRET or QUICK else ["super", "triangle", "sigmoid", "atan", "tanh",
                                                                        "heaviside"]
# --interpret --quick (benchmarks/gpu_check.sh --dry-run): float32 only
DTYPES = (torch.float32,) if INTERPRET and QUICK else (torch.float32, torch.float64)

LAYERS = {
    "adex": (LIFAdEx, LIFAdExParameters),
    "lif": (LIF, LIFParameters),
    "li": (LI, LIParameters),
}
# Gradients, of the largest: float32 backward sums in another order than autograd's, and over 50
# steps with inputs up to 5 that is 1.4e-6 here under the interpreter already (T = 6).
TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}
DELTA_T = 0.37  # not a power of two


def dyadic(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to a multiple of 1/64: products and sums of such values are exact."""
    return torch.round(t * 64) / 64


def run(kind, backend, method, dtype, x, state, learnable, integrator=None):
    layer_class, params_class = LAYERS[kind]
    kwargs = (
        {}
        if kind == "li"
        else {"method": method, "alpha": 7.0 if method in ("triangle", "sigmoid", "tanh") else 30.0}
    )
    if integrator is not None:
        kwargs.update(integrator=integrator, v_reset=-0.2)
    if kind == "adex":
        kwargs.update(delta_T=DELTA_T)
    fields = [f for f in params_class._fields if f not in ("method", "alpha", "integrator")] if learnable else ()
    layer = layer_class(
        params_class(**kwargs),
        learnable=fields,
        shape=(x.shape[-1],) if learnable else None,
        backend=backend,
    ).to(device=DEVICE, dtype=dtype)
    xb = x.clone().requires_grad_()
    sb = [s.clone().requires_grad_() for s in state]
    out, final = layer(xb, layer.state_class(*sb))
    g = torch.Generator(device=DEVICE).manual_seed(2)
    loss = (out * torch.randn(out.shape, generator=g, device=DEVICE, dtype=dtype)).sum()
    for s in final:
        loss = loss + (s * torch.randn(s.shape, generator=g, device=DEVICE, dtype=dtype)).sum()
    loss.backward()
    grads = [xb.grad, *(s.grad for s in sb), *(p.grad for p in layer.parameters())]
    return out, final, grads


RECURRENT = {"adex": (LIFAdExRecurrent, LIFAdExParameters), "lif": (LIFRecurrent, LIFParameters)}


def run_recurrent(kind, backend, method, dtype, x, state, learnable, N, integrator=None):
    """A recurrent layer of N neurons (fixed weights from seed 0) on x from state: outputs, final
    state and the gradients of a weighted loss (x, the initial state, weights, parameters)."""
    layer_class, params_class = RECURRENT[kind]
    alpha = 7.0 if method in ("triangle", "sigmoid", "tanh") else 30.0
    fields = [f for f in params_class._fields if f not in ("method", "alpha", "integrator")] if learnable else ()
    g = torch.Generator().manual_seed(0)
    F = x.shape[-1]
    extra = {} if integrator is None else {"integrator": integrator}
    if kind == "adex":
        extra.update(delta_T=DELTA_T)
    layer = layer_class(
        F,
        N,
        params_class(method=method, alpha=alpha, **extra),
        learnable=fields,
        input_weights=dyadic((torch.rand(N, F, generator=g) * 2 + 0.5) * 0.4 / F),
        recurrent_weights=dyadic(torch.randn(N, N, generator=g) * 2 / N**0.5),
        backend=backend,
    ).to(device=DEVICE, dtype=dtype)
    xb = x.clone().requires_grad_()
    sb = [s.clone().requires_grad_() for s in state]
    out, final = layer(xb, layer.state_class(*sb))
    g = torch.Generator(device=DEVICE).manual_seed(2)
    loss = (out * torch.randn(out.shape, generator=g, device=DEVICE, dtype=dtype)).sum()
    for s in final:
        loss = loss + (s * torch.randn(s.shape, generator=g, device=DEVICE, dtype=dtype)).sum()
    loss.backward()
    return out, final, [xb.grad, *(s.grad for s in sb), *(p.grad for p in layer.parameters())]


def recurrent_checks():
    for dtype in DTYPES:
        for kind, integrator in (("adex", None), ("adex", "symplectic"), ("lif", None)):
            for method in METHODS if INTERPRET or QUICK else ("super", "sigmoid", "heaviside"):
                for learnable in (False, True):
                    T, B, F, N = (5, 2, 5, 40) if INTERPRET else (30, 4, 5, 300)  # several programs
                    x = dyadic(torch.rand(T, B, F, device=DEVICE, dtype=dtype) * 3)
                    state = [(torch.rand(B, N, device=DEVICE, dtype=dtype) > 0.6).to(dtype)] + [
                        torch.rand(B, N, device=DEVICE, dtype=dtype) for _ in range(2 if kind == "lif" else 3)
                    ]
                    ref = run_recurrent(kind, "eager", method, dtype, x, state, learnable, N, integrator)
                    got = run_recurrent(kind, "triton", method, dtype, x, state, learnable, N, integrator)
                    case = f"recurrent {kind} {integrator or ''} {method} {dtype} learnable={learnable}"
                    check(0 < ref[0].float().mean() < 1, f"no or all spikes: {case}")
                    check(torch.equal(got[0], ref[0]), f"outputs differ: {case}")
                    for a, b in zip(got[1], ref[1], strict=True):
                        check(same_state(kind, a, b), f"final state differs: {case}")
                    for a, b in zip(got[2], ref[2], strict=True):
                        if b is None:
                            continue
                        error, scale = (a - b).abs().max().item(), b.abs().max().item()
                        check(
                            error <= TOLERANCE[dtype] * scale,
                            f"gradient error {error:.3g} at scale {scale:.3g}: {case}",
                        )
    x, w_in, w_rec = (torch.zeros(shape, device=DEVICE) for shape in ((20, 4, 5), (8, 5), (8, 8)))
    check(INTERPRET or resolve("auto", "adex", (x, w_in, w_rec), KernelOptions("super")).name == "triton",
          "auto did not pick triton for a recurrent layer")
    x = torch.rand(20, 4, 5, device=DEVICE, dtype=torch.bfloat16) * 3
    zeros = [torch.zeros(4, 30, device=DEVICE, dtype=torch.bfloat16)] * 4
    out, final, grads = run_recurrent("adex", "triton", "super", torch.bfloat16, x, zeros, True, 30)
    check(
        out.dtype == torch.bfloat16
        and all(f.dtype == torch.float32 for f in final)  # half inputs: the state in float32
        and all(torch.isfinite(g.float()).all() for g in grads if g is not None),
        "recurrent bfloat16 run",
    )


def autocast_checks():
    """The issue's reproduction on the GPU: Linear -> LIFAdExRecurrent under bfloat16 autocast."""
    results = []
    x = torch.rand(6, 3, 16, device=DEVICE)
    for backend in ("eager", "triton"):
        torch.manual_seed(3)
        linear = torch.nn.Linear(16, 64).to(DEVICE)
        layer = LIFAdExRecurrent(64, 48, LIFAdExParameters(delta_T=DELTA_T), backend=backend).to(DEVICE)
        with torch.autocast(DEVICE, dtype=torch.bfloat16):
            z, state = layer(linear(x) * 4)
        weights = torch.randn(z.shape, generator=torch.Generator(device=DEVICE).manual_seed(4), device=DEVICE)
        (z.float() * weights).sum().backward()
        results.append((z, state, [linear.weight.grad, layer.input_weights.grad, layer.recurrent_weights.grad]))
    (ref, ref_state, ref_grads), (z, state, grads) = results
    check(z.dtype == torch.bfloat16 and state.v.dtype == torch.float32, "autocast: dtypes")
    check(0 < ref.float().mean() < 1, "autocast: no or all spikes")
    check(torch.equal(z, ref), "autocast: spikes differ")
    # float32 currents from bfloat16 activations that are not dyadic: the input GEMM may round apart
    error = (state.v - ref_state.v).abs().max().item()
    check(error <= 1e-6 * ref_state.v.abs().max().item(), f"autocast: states differ by {error:.3g}")
    # The layer's weights within 1e-4 (the triton loops' currents round apart from the eager loop's
    # in the last bit, and the surrogate's slope amplifies that: 2.8e-5 under the interpreter); the
    # Linear's through a bfloat16 product, whose float32 input gradient may round to the
    # neighbouring bfloat16 value: 2 bfloat16 ulps.
    bounds = [2 * torch.finfo(torch.bfloat16).eps, 1e-4, 1e-4]
    for a, b, bound, name in zip(grads, ref_grads, bounds, ("linear", "input_weights", "recurrent_weights"),
                                 strict=True):
        error, scale = (a - b).abs().max().item(), b.abs().max().item()
        check(error <= bound * scale, f"autocast: {name} gradient error {error:.3g} at scale {scale:.3g}")


def device_checks():
    """The first-use check passed here; with two GPUs, a layer on cuda:1 runs there."""
    from snn.neurons.fused.triton import trust

    LIF(backend="triton").to(DEVICE)(torch.rand(3, 2, 5, device=DEVICE))
    answers = trust.results()
    check(answers and all(v is None for v in answers.values()), f"first-use check: {answers}")
    print("first-use check passed:", ", ".join(answers))
    if INTERPRET or torch.cuda.device_count() < 2:
        print("one GPU: the cuda:1 check is skipped")
        return
    torch.cuda.set_device(0)
    x = torch.rand(20, 4, 300, device="cuda:1") * 3
    ref = LIFAdEx(backend="eager").to("cuda:1")(x)[0]
    out = LIFAdEx(backend="triton").to("cuda:1")(x)[0]
    check(out.device == torch.device("cuda:1") and torch.equal(out, ref), "cuda:1 while cuda:0 is current")


def same_state(kind, a, b) -> bool:
    """Bit for bit; AdEx under the interpreter within EXP_TOLERANCE (numpy's exp)."""
    if INTERPRET and kind == "adex":
        return bool((a - b).abs().max() <= EXP_TOLERANCE[a.dtype] * b.abs().max())
    return torch.equal(a, b)


def check(condition, message):
    if not condition:
        print("FAILED:", message)
        sys.exit(1)


def main():
    where = ("the CPU (Triton's interpreter)" if INTERPRET else
             f"{torch.cuda.get_device_name()} (sm_{''.join(map(str, torch.cuda.get_device_capability()))})")
    print(f"torch {torch.__version__}, triton {__import__('triton').__version__}, {where}")
    device_checks()
    torch.manual_seed(0)
    for dtype in DTYPES:
        for kind, integrator in (("adex", None), ("adex", "symplectic"), ("lif", None), ("li", None)):
            methods = [None] if kind == "li" else METHODS
            for method in methods:
                for learnable in (False, True):
                    T, B, N = (6, 2, 700) if INTERPRET else (50, 4, 1000)  # several programs, the last partial
                    x = torch.rand(T, B, N, device=DEVICE, dtype=dtype) * 6 - 1
                    state = [
                        torch.rand(B, N, device=DEVICE, dtype=dtype)
                        for _ in LAYERS[kind][0].state_class._fields
                    ]
                    ref = run(kind, "eager", method, dtype, x, state, learnable, integrator)
                    got = run(kind, "triton", method, dtype, x, state, learnable, integrator)
                    case = f"{kind} {integrator or ''} {method} {dtype} learnable={learnable}"
                    check(torch.equal(got[0], ref[0]), f"outputs differ: {case}")
                    for a, b in zip(got[1], ref[1], strict=True):
                        check(same_state(kind, a, b), f"final state differs: {case}")
                    for a, b in zip(got[2], ref[2], strict=True):
                        if b is None:
                            continue
                        error, scale = (a - b).abs().max().item(), b.abs().max().item()
                        check(
                            error <= TOLERANCE[dtype] * scale,
                            f"gradient error {error:.3g} at scale {scale:.3g}: {case}",
                        )
    if not INTERPRET:  # auto tries cpp on the CPU
        check(
            resolve("auto", "adex", (torch.zeros(2, 3, device=DEVICE),), KernelOptions("super")).name == "triton",
            "auto did not pick triton",
        )
    x = torch.rand(6, 4, 300, device=DEVICE, dtype=torch.bfloat16)
    out, final, grads = run(
        "adex",
        "triton",
        "super",
        torch.bfloat16,
        x,
        [torch.zeros(4, 300, device=DEVICE, dtype=torch.bfloat16)] * 3,
        True,
    )
    check(
        out.dtype == torch.bfloat16
        and all(torch.isfinite(g.float()).all() for g in grads if g is not None),
        "bfloat16 run",
    )
    recurrent_checks()
    autocast_checks()
    print("all GPU checks passed")


if __name__ == "__main__":
    main()
