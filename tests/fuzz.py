"""The fuzz tests' shared tools (tests/neurons/fused/test_fused_safety.py, test_fused_recurrent_safety.py):
drawing tensors of every dtype and layout, comparing a backend's gradients with eager's, and the
subprocess that runs the drawn cases.

A fuzz test runs its own module as ``python -m <module> SEED CASES`` (:func:`run_worker`); the
module's ``__main__`` calls :func:`worker`, which prints a line before (``START``) and after
(``DONE``) each case, so a crash (a signal from the kernels) fails the test naming the case that
was running instead of killing pytest. ``EAGER <index> ok|error`` says how the eager reference
ended, ``FAIL`` lines are the problems found.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import traceback
from collections.abc import Callable

import pytest
import torch

from tests.helpers import ROOT

METHODS = ["super", "triangle", "sigmoid", "atan", "tanh", "heaviside"]


def draw_dtype(rng: random.Random, like: torch.dtype | None = None, p_same: float = 0.0) -> torch.dtype:
    if like is not None and rng.random() < p_same:
        return like
    return rng.choice([torch.float32, torch.float64] * 3 + [torch.float16, torch.bfloat16, torch.int64])


LAYOUTS = ["contiguous"] * 6 + ["transposed", "expanded", "sliced", "offset", "negated", "sparse"]


def make_tensor(rng, g, shape, dtype, device="cpu", layout="contiguous", low=-1.0, high=1.0, grad=False):
    """A tensor of ``shape`` with values in [low, high) in the given layout; returns
    ``(leaf, tensor)``: with ``grad`` the leaf requires grad and ``tensor`` is a view of it."""
    shape = tuple(shape)
    if device != "cpu" and layout == "sparse":
        layout = "contiguous"  # torch has no sparse meta tensors
    values = lambda s: torch.rand(s, generator=g, dtype=torch.float64) * (high - low) + low  # noqa: E731
    if layout == "transposed" and len(shape) >= 2:
        base = values(shape[:-2] + (shape[-1], shape[-2]))
        make = lambda t: t.transpose(-1, -2)  # noqa: E731
    elif layout == "expanded" and len(shape) >= 1:
        dim = rng.randrange(len(shape))
        base = values(shape[:dim] + (1,) + shape[dim + 1:])
        make = lambda t: t.expand(shape)  # noqa: E731
    elif layout == "sliced" and len(shape) >= 1:
        base = values(shape[:-1] + (2 * shape[-1],))
        make = lambda t: t[..., ::2]  # noqa: E731
    elif layout == "offset" and len(shape) >= 1:
        base = values((shape[0] + 1,) + shape[1:])
        make = lambda t: t[1:]  # noqa: E731
    elif layout == "negated" and dtype in (torch.float32, torch.float64):
        base = values(shape)
        # A lazily negated view: the values in memory are -x, the tensor reads x.
        make = lambda t: torch.complex(torch.zeros_like(t), -t).conj().imag  # noqa: E731
    elif layout == "sparse" and len(shape) >= 1:
        base = values(shape)
        make = lambda t: t.to_sparse()  # noqa: E731
    else:
        base = values(shape)
        make = lambda t: t  # noqa: E731
    if dtype.is_floating_point:
        base = base.to(dtype)
    else:
        base = (base * 3).round().to(dtype)
    if device != "cpu":
        base = base.to(device)
    leaf = base.requires_grad_(grad and dtype.is_floating_point)
    return leaf, make(leaf)


def dtype_of(name: str) -> torch.dtype:
    return getattr(torch, name.split(".")[-1])


def compare_gradients(grads, ref_grads, tolerance: float) -> str | None:
    """Why the gradients ``grads`` (a tuple, one per input) are not eager's ``ref_grads``, or None:
    within ``tolerance`` times the larger of 1 and the largest reference value; None on one side
    only where the other is zero (no path from that input: heaviside)."""
    for k, (a, b) in enumerate(zip(grads, ref_grads, strict=True)):
        if a is None or b is None:
            other = b if a is None else a
            if other is not None and other.count_nonzero() > 0:
                return f"gradient {k}: None on one side, nonzero on the other"
            continue
        if a.numel() == 0 or not torch.isfinite(b).all():
            continue
        if a.shape != b.shape or a.dtype != b.dtype:
            return f"gradient {k}: {a.dtype} {list(a.shape)}, eager {b.dtype} {list(b.shape)}"
        scale = max(1.0, b.abs().max().item())
        if not (a - b).abs().max().item() <= tolerance * scale:
            return f"gradient {k} differs from eager's by {(a - b).abs().max().item()} (scale {scale})"
    return None


def worker(seed: int, cases: int, draw_case: Callable, run_case: Callable) -> None:
    """Draws ``cases`` cases from ``seed`` and runs each: ``run_case(rng, case, problems)`` appends
    what it finds wrong to ``problems``; any other exception it raises is a problem too."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    for index in range(cases):
        case = draw_case(rng, index)
        print("START " + json.dumps(case), flush=True)
        problems = []
        try:
            run_case(rng, case, problems)
        except Exception as error:  # any other exception is a failure too: not a clear error
            frames = [f"{os.path.basename(f.filename)}:{f.lineno}" for f in traceback.extract_tb(error.__traceback__)
                      if "/snn/" in f.filename or "/tests/" in f.filename]
            problems.append(f"{type(error).__name__}: {str(error)[:500]} (at {' < '.join(reversed(frames))})")
        for problem in problems:
            print(f"FAIL case {index} {json.dumps(case)}: {problem}", flush=True)
        print(f"DONE {index}", flush=True)


def run_worker(module: str, seed: int, cases: int, threads: int = 2) -> list[str]:
    """Runs ``python -m module seed cases`` from the repository root (OMP_NUM_THREADS=threads) and
    fails the calling test on a crash (naming the case), on any FAIL line, or when cases are
    missing; returns each case's eager outcome (``ok`` or ``error``). The timeout is a hang guard."""
    result = subprocess.run([sys.executable, "-m", module, str(seed), str(cases)], cwd=ROOT, capture_output=True,
                            text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    started, failures, done, eager = None, [], 0, []
    for line in result.stdout.splitlines():
        if line.startswith("START "):
            started = line[6:]
        elif line.startswith("EAGER "):
            eager.append(line.split()[2])
        elif line.startswith("FAIL "):
            failures.append(line[5:])
        elif line.startswith("DONE "):
            done += 1
            started = None
    if result.returncode != 0:
        pytest.fail(f"the fuzz subprocess ended with {result.returncode} (a negative code is a signal) "
                    f"in case {started}\n{result.stderr[-3000:]}")
    assert not failures, "\n".join(failures[:20])
    assert done == cases, result.stdout[-2000:] + result.stderr[-2000:]
    return eager
