"""Forward + backward time, saved bytes and peak memory of the recurrent AdEx and LIF layers.

Each case runs ``layer(x)`` on ``x = rand(T, B, F) * scale`` (float32, requires grad), loss
``spikes.sum()``, backward, for our ``LIFAdExRecurrent`` on each backend and norse 1.1.0's
``LIFAdExRecurrent`` with the same weights (``LIFRecurrent`` for ``--kind lif``), interleaved in one
process as in ``bench_layers.py`` (rounds in a rotating order; a ratio is the median over rounds of
the per-round ratio). "same spikes" says whether an implementation's spikes equal eager's.

The floor: the recurrent matrix products alone, ``2 T`` products ``[B, N] x [N, N]`` (forward
``z W_rec^T``, backward ``g_c W_rec``) and the ``[N, T B] x [T B, N]`` weight gradient, timed
on this machine with the same threads: no implementation that computes them densely can be faster.

Memory: one forward + backward at each T in a fresh process; peak resident set size during the
call (VmHWM, reset just before it) and its growth over the size before it (see ``bench_train.py``).

    python benchmarks/bench_recurrent.py             # the issue's case, the T x N grid, memory vs T
    python benchmarks/bench_recurrent.py --quick     # tiny sizes: checks that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import warnings

import torch
from bench_layers import forward_backward, interleaved_times, saved_bytes
from bench_train import peak_rss_mb, reset_peak_rss, rss_mb

from snn.neurons import LIFAdExRecurrent, LIFRecurrent

warnings.filterwarnings("ignore")  # norse's torch.jit deprecation warnings

OURS = {"adex": LIFAdExRecurrent, "lif": LIFRecurrent}
INPUT_SCALE = (
    4.0  # x in [0, 4): with He-initialised W_in a few percent of the neurons spike per step
)


def norse_layer(kind, F, N, w_in, w_rec):
    """norse's recurrent layer with the given weights, or None when norse is not installed."""
    try:
        from norse.torch import LIFAdExRecurrent as NorseAdEx
        from norse.torch import LIFRecurrent as NorseLIF
    except ImportError:
        return None
    cls = NorseAdEx if kind == "adex" else NorseLIF
    # norse zeroes the diagonal of the weights it is given in place (no autapses): copies.
    return cls(
        F,
        N,
        input_weights=torch.nn.Parameter(w_in.clone()),
        recurrent_weights=torch.nn.Parameter(w_rec.clone()),
    )


def implementations(kind, F, N, backends, norse=True):
    torch.manual_seed(0)
    reference = OURS[kind](F, N)
    w_in, w_rec = reference.input_weights.detach(), reference.recurrent_weights.detach()
    layers = {
        b: OURS[kind](F, N, input_weights=w_in, recurrent_weights=w_rec, backend=b)
        for b in backends
    }
    theirs = norse_layer(kind, F, N, w_in, w_rec) if norse else None
    if theirs is not None:
        layers["norse"] = theirs
    return layers


def matmul_floor(T, B, N, repeats=3):
    """Seconds of the dense recurrent products of one forward + backward (the module docstring)."""
    z, w = torch.rand(B, N), torch.randn(N, N)
    gc, zs = torch.randn(T * B, N), torch.rand(T * B, N)
    out = torch.empty(B, N)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(2 * T):
            torch.mm(z, w, out=out)
        gc.t() @ zs
        best = min(best, time.perf_counter() - t0)
    return best


def run_case(kind, T, B, F, N, backends, budget_s, norse=True):
    """Rows ``(name, median s, {reference: ratio}, saved bytes per neuron and step, spike rate,
    same spikes as eager)``."""
    torch.manual_seed(1)
    x = torch.rand(T, B, F) * INPUT_SCALE
    layers = implementations(kind, F, N, backends, norse)
    with torch.no_grad():
        spikes = {name: layer(x)[0] for name, layer in layers.items()}
    times = interleaved_times(layers, x, budget_s)
    rows = []
    for name, layer in layers.items():
        ratios = {
            ref: statistics.median(a / b for a, b in zip(times[ref], times[name], strict=True))
            for ref in ("norse", "eager")
            if ref in times
        }
        same = torch.equal(spikes[name], spikes["eager"]) if "eager" in spikes else None
        rows.append(
            (
                name,
                statistics.median(times[name]),
                ratios,
                saved_bytes(layer, x) / (T * B * N),
                spikes[name].mean().item(),
                same,
            )
        )
    return rows


def print_rows(kind, T, B, F, N, rows, floor):
    for name, seconds, ratios, saved, rate, same in rows:
        vs = [f"{ratios[r]:.2f}x" if r in ratios else "-" for r in ("norse", "eager")]
        print(
            f"| {kind} | {T} | {B} | {F} | {N} | {name} | {seconds * 1e3:.1f} | {vs[0]} "
            f"| {vs[1]} | "
            f"{saved:.1f} | {rate:.3f} | {same} | {seconds / floor:.1f}x |",
            flush=True,
        )


def memory_child(kind, name, T, B, F, N):
    """One forward + backward at ``T`` in this (fresh) process: peak RSS and its growth (MB)."""
    torch.set_num_threads(2)
    backends = [] if name == "norse" else [name]
    layer = implementations(kind, F, N, backends, norse=name == "norse")[name]
    forward_backward(layer, torch.rand(2, B, F))  # threads, lazy imports: not the call's memory
    x = torch.rand(T, B, F) * INPUT_SCALE
    before = rss_mb()
    reset_peak_rss()
    forward_backward(layer, x)
    peak = peak_rss_mb()
    return {"peak_mb": peak, "growth_mb": peak - before}


def memory(kind, names, Ts, B, F, N):
    print(f"\npeak memory of one forward + backward, {kind}, B = {B}, F = {F}, N = {N}\n")
    print("| T | implementation | peak RSS MB | growth MB | growth bytes per neuron and step |")
    print("|---|---|---|---|---|")
    for T in Ts:
        for name in names:
            args = [
                sys.executable,
                __file__,
                "--memory-child",
                kind,
                name,
                str(T),
                str(B),
                str(F),
                str(N),
            ]
            out = subprocess.run(args, capture_output=True, text=True)
            lines = out.stdout.strip().splitlines()
            if out.returncode != 0 or not lines:
                print(
                    f"| {T} | {name} | - | failed: exit {out.returncode} "
                    f"{out.stderr.strip()[-80:]} | |"
                )
                continue
            r = json.loads(lines[-1])
            per = r["growth_mb"] * 2**20 / (T * B * N)
            print(
                f"| {T} | {name} | {r['peak_mb']:.0f} | {r['growth_mb']:.0f} | {per:.1f} |",
                flush=True,
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes: checks that the script runs"
    )
    parser.add_argument("--kind", choices=sorted(OURS), default="adex")
    parser.add_argument("--backends", nargs="+", default=["eager", "python", "cpp"])
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of rounds per case")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--grid-norse-max",
        type=float,
        default=784 * 128 * 256,
        help="largest T*B*N of the grid that norse and eager run on",
    )
    parser.add_argument("--memory-child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        kind, name, *sizes = args.memory_child
        print(json.dumps(memory_child(kind, name, *map(int, sizes))))
        return
    torch.set_num_threads(args.threads)
    B, F = (8, 1) if args.quick else (128, 1)
    main_case = (50, 32) if args.quick else (784, 256)
    grid = [
        (T, N)
        for T in ((20,) if args.quick else (100, 784))
        for N in ((16, 48) if args.quick else (128, 256, 512, 1024))
    ]
    budget = 0.0 if args.quick else args.budget
    print(
        f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores, load average "
        f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}\n"
    )
    print(
        "| layer | T | B | F | N | implementation | fwd+bwd ms | vs norse | vs eager "
        "| saved B/neuron/step | spike rate | same spikes | / matmul floor |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for T, N in [main_case] + grid:
        small = T * B * N <= args.grid_norse_max
        backends = args.backends if small else [b for b in args.backends if b != "eager"]
        rows = run_case(args.kind, T, B, F, N, backends, budget, norse=small)
        print_rows(args.kind, T, B, F, N, rows, matmul_floor(T, B, N))
    Ts = (20, 40) if args.quick else (250, 500, 1000, 2000)
    memory(args.kind, [b for b in args.backends if b != "auto"] + ["norse"], Ts, B, F, main_case[1])
    print(f"\nload average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
