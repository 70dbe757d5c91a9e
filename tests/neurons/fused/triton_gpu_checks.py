"""The compiled Triton kernels on a CUDA GPU against the eager loop on the same GPU.

Run by tests/neurons/fused/test_triton.py::test_compiled_kernels_on_the_gpu in a process of its own (without
TRITON_INTERPRET); exits non-zero with the failed check's message. Forward bit-identical for every
neuron type (and AdEx's symplectic integrator) in float32 and float64 (the kernels use libdevice's
exp, as torch's CUDA exp, and no fused multiply-adds); gradients within 1e-6 (float32) / 1e-10
(float64) of the largest; ``auto`` picks ``triton``; bfloat16 inputs give bfloat16 outputs and
finite gradients. The same for the recurrent AdEx and LIF layers (one kernel launch per step, the
currents from torch's own products: :mod:`snn.neurons.fused.triton.recurrent`).
"""

from __future__ import annotations

import sys

import torch

from snn.neurons import (
    LI,
    LIF,
    LIFAdEx,
    LIFAdExParameters,
    LIFAdExRecurrent,
    LIFParameters,
    LIFRecurrent,
    LIParameters,
)
from snn.neurons.fused import KernelOptions
from snn.neurons.fused.registry import resolve

LAYERS = {
    "adex": (LIFAdEx, LIFAdExParameters),
    "lif": (LIF, LIFParameters),
    "li": (LI, LIParameters),
}
TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-10}


def run(kind, backend, method, dtype, x, state, learnable, integrator=None):
    layer_class, params_class = LAYERS[kind]
    kwargs = (
        {}
        if kind == "li"
        else {"method": method, "alpha": 7.0 if method in ("triangle", "sigmoid", "tanh") else 30.0}
    )
    if integrator is not None:
        kwargs.update(integrator=integrator, v_reset=-0.2)
    fields = [f for f in params_class._fields if f not in ("method", "alpha", "integrator")] if learnable else ()
    layer = layer_class(
        params_class(**kwargs),
        learnable=fields,
        shape=(x.shape[-1],) if learnable else None,
        backend=backend,
    ).to(device="cuda", dtype=dtype)
    xb = x.clone().requires_grad_()
    sb = [s.clone().requires_grad_() for s in state]
    out, final = layer(xb, layer.state_class(*sb))
    g = torch.Generator(device="cuda").manual_seed(2)
    loss = (out * torch.randn(out.shape, generator=g, device="cuda", dtype=dtype)).sum()
    for s in final:
        loss = loss + (s * torch.randn(s.shape, generator=g, device="cuda", dtype=dtype)).sum()
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
    layer = layer_class(
        F,
        N,
        params_class(method=method, alpha=alpha, **({} if integrator is None else {"integrator": integrator})),
        learnable=fields,
        input_weights=(torch.rand(N, F, generator=g) * 2 + 0.5) * 0.4 / F,
        recurrent_weights=torch.randn(N, N, generator=g) * 2 / N**0.5,
        backend=backend,
    ).to(device="cuda", dtype=dtype)
    xb = x.clone().requires_grad_()
    sb = [s.clone().requires_grad_() for s in state]
    out, final = layer(xb, layer.state_class(*sb))
    g = torch.Generator(device="cuda").manual_seed(2)
    loss = (out * torch.randn(out.shape, generator=g, device="cuda", dtype=dtype)).sum()
    for s in final:
        loss = loss + (s * torch.randn(s.shape, generator=g, device="cuda", dtype=dtype)).sum()
    loss.backward()
    return out, final, [xb.grad, *(s.grad for s in sb), *(p.grad for p in layer.parameters())]


def recurrent_checks():
    for dtype in (torch.float32, torch.float64):
        for kind, integrator in (("adex", None), ("adex", "symplectic"), ("lif", None)):
            for method in ("super", "sigmoid", "heaviside"):
                for learnable in (False, True):
                    T, B, F, N = 30, 4, 5, 300  # 1200 neurons: several programs, the last partial
                    x = torch.rand(T, B, F, device="cuda", dtype=dtype) * 3
                    state = [(torch.rand(B, N, device="cuda", dtype=dtype) > 0.6).to(dtype)] + [
                        torch.rand(B, N, device="cuda", dtype=dtype) for _ in range(2 if kind == "lif" else 3)
                    ]
                    ref = run_recurrent(kind, "eager", method, dtype, x, state, learnable, N, integrator)
                    got = run_recurrent(kind, "triton", method, dtype, x, state, learnable, N, integrator)
                    case = f"recurrent {kind} {integrator or ''} {method} {dtype} learnable={learnable}"
                    check(0 < ref[0].float().mean() < 1, f"no or all spikes: {case}")
                    check(torch.equal(got[0], ref[0]), f"outputs differ: {case}")
                    for a, b in zip(got[1], ref[1], strict=True):
                        check(torch.equal(a, b), f"final state differs: {case}")
                    for a, b in zip(got[2], ref[2], strict=True):
                        if b is None:
                            continue
                        error, scale = (a - b).abs().max().item(), b.abs().max().item()
                        check(
                            error <= TOLERANCE[dtype] * scale,
                            f"gradient error {error:.3g} at scale {scale:.3g}: {case}",
                        )
    x, w_in, w_rec = (torch.zeros(shape, device="cuda") for shape in ((20, 4, 5), (8, 5), (8, 8)))
    check(resolve("auto", "adex", (x, w_in, w_rec), KernelOptions("super")).name == "triton",
          "auto did not pick triton for a recurrent layer")
    x = torch.rand(20, 4, 5, device="cuda", dtype=torch.bfloat16) * 3
    zeros = [torch.zeros(4, 300, device="cuda", dtype=torch.bfloat16)] * 4
    out, final, grads = run_recurrent("adex", "triton", "super", torch.bfloat16, x, zeros, True, 300)
    check(
        out.dtype == torch.bfloat16
        and all(f.dtype == torch.bfloat16 for f in final)
        and all(torch.isfinite(g.float()).all() for g in grads if g is not None),
        "recurrent bfloat16 run",
    )


def check(condition, message):
    if not condition:
        print("FAILED:", message)
        sys.exit(1)


def main():
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for kind, integrator in (("adex", None), ("adex", "symplectic"), ("lif", None), ("li", None)):
            methods = (
                [None]
                if kind == "li"
                else ["super", "triangle", "sigmoid", "atan", "tanh", "heaviside"]
            )
            for method in methods:
                for learnable in (False, True):
                    T, B, N = 50, 4, 1000  # 4000 neurons: several programs, the last partial
                    x = torch.rand(T, B, N, device="cuda", dtype=dtype) * 6 - 1
                    state = [
                        torch.rand(B, N, device="cuda", dtype=dtype)
                        for _ in LAYERS[kind][0].state_class._fields
                    ]
                    ref = run(kind, "eager", method, dtype, x, state, learnable, integrator)
                    got = run(kind, "triton", method, dtype, x, state, learnable, integrator)
                    case = f"{kind} {integrator or ''} {method} {dtype} learnable={learnable}"
                    check(torch.equal(got[0], ref[0]), f"outputs differ: {case}")
                    for a, b in zip(got[1], ref[1], strict=True):
                        check(torch.equal(a, b), f"final state differs: {case}")
                    for a, b in zip(got[2], ref[2], strict=True):
                        if b is None:
                            continue
                        error, scale = (a - b).abs().max().item(), b.abs().max().item()
                        check(
                            error <= TOLERANCE[dtype] * scale,
                            f"gradient error {error:.3g} at scale {scale:.3g}: {case}",
                        )
    check(
        resolve("auto", "adex", (torch.zeros(2, 3, device="cuda"),), KernelOptions("super")).name == "triton",
        "auto did not pick triton",
    )
    x = torch.rand(20, 4, 300, device="cuda", dtype=torch.bfloat16)
    out, final, grads = run(
        "adex",
        "triton",
        "super",
        torch.bfloat16,
        x,
        [torch.zeros(4, 300, device="cuda", dtype=torch.bfloat16)] * 3,
        True,
    )
    check(
        out.dtype == torch.bfloat16
        and all(torch.isfinite(g.float()).all() for g in grads if g is not None),
        "bfloat16 run",
    )
    recurrent_checks()
    print("all GPU checks passed")


if __name__ == "__main__":
    main()
