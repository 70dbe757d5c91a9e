"""The compiled Triton kernels on a CUDA GPU against the eager loop on the same GPU.

Run by tests/test_triton.py::test_compiled_kernels_on_the_gpu in a process of its own (without
TRITON_INTERPRET); exits non-zero with the failed check's message. Forward bit-identical for every
neuron type (and AdEx's symplectic integrator) in float32 and float64 (the kernels use libdevice's
exp, as torch's CUDA exp, and no fused multiply-adds); gradients within 1e-6 (float32) / 1e-10
(float64) of the largest; ``auto`` picks ``triton``; bfloat16 inputs give bfloat16 outputs and
finite gradients.
"""

from __future__ import annotations

import sys

import torch

from snn.neurons import LI, LIF, LIFAdEx, LIFAdExParameters, LIFParameters, LIParameters
from snn.neurons.fused.function import resolve_backend

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
        resolve_backend("auto", "adex", torch.zeros(2, 3, device="cuda"), "super") == "triton",
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
    print("all GPU checks passed")


if __name__ == "__main__":
    main()
