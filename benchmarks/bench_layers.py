"""Forward + backward time and saved-for-backward memory of the AdEx, LIF and LI layers.

Each case runs ``layer(x)`` on ``x = rand(T, B, N) * 4`` (float32, requires grad), loss
``outputs.sum()``, backward. Every implementation runs on the same tensor in the same process,
interleaved: each round times every implementation once, in a rotating order, so a change of the
machine's load hits all of them alike; a ratio is the median over rounds of the per-round ratio,
a time the median over rounds (after one warm-up call each). "memory floor" (beside ``cpp``): torch's
copy kernels moving the bytes the ``cpp`` kernels must read and write (x in; the output and the
saved ``[T, B, N]`` tensors out; backward the saved tensors in, g_x out), timed in the same rounds;
"/ memory floor" a layer's per-round time over the floor's. Saved bytes are counted with
``torch.autograd.graph.saved_tensors_hooks``. norse 1.1.0 (``pip install --no-deps norse==1.1.0``)
and snntorch (``Leaky``, next to LIF) are measured when installed; in the T x N grid, norse only up
to ``--grid-norse-max`` neuron-steps (it needs tens of seconds a call beyond).

    python benchmarks/bench_layers.py                 # the issue's case and the T x N grid
    python benchmarks/bench_layers.py --quick         # the issue's case only
    python benchmarks/bench_layers.py --backends eager python cpp compile
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch

from snn.neurons import LI, LIF, LIFAdEx

warnings.filterwarnings("ignore")  # norse's torch.jit deprecation warnings


def norse_layers():
    try:
        from norse.torch import LI as NorseLI
        from norse.torch import LIF as NorseLIF
        from norse.torch import LIFAdEx as NorseLIFAdEx
    except ImportError:
        return {}
    return {"adex": NorseLIFAdEx, "lif": NorseLIF, "li": NorseLI}


class SnnTorchLeaky(torch.nn.Module):
    """snntorch's Leaky (a LIF without synaptic current) looped over time, its documented usage."""

    def __init__(self):
        super().__init__()
        import snntorch

        self.leaky = snntorch.Leaky(beta=0.9)

    def forward(self, x):
        mem = self.leaky.init_leaky()
        spikes = []
        for x_t in x:
            spk, mem = self.leaky(x_t, mem)
            spikes.append(spk)
        return torch.stack(spikes), mem


class Copies(torch.autograd.Function):
    """Forward: reads x, writes the output and ``saved`` tensors of its shape; backward: reads the
    saved ones, writes g_x. The bytes the ``cpp`` kernels must move, by torch's copy kernels."""

    @staticmethod
    def forward(ctx, x, saved):
        out = torch.empty_like(x).copy_(x)
        kept = [torch.empty_like(x).fill_(1.0) for _ in range(saved)]
        ctx.save_for_backward(*kept)
        return out

    @staticmethod
    def backward(ctx, g):
        kept = ctx.saved_tensors
        if not kept:
            return torch.empty_like(g).copy_(g), None
        gx = torch.empty_like(kept[0]).copy_(kept[0]) if len(kept) == 1 else torch.add(kept[0], kept[1])
        for extra in kept[2:]:
            gx.add_(extra)
        return gx, None


class MemoryFloor(torch.nn.Module):
    """The memory-bandwidth floor of a feed-forward layer: :class:`Copies` of the bytes its ``cpp``
    kernels read and write (x in, the output and each saved ``[T, B, N]`` tensor out; backward the
    saved tensors in, g_x out; the gradient of ``outputs.sum()`` is one broadcast value, not read).
    ``saved``: the ``[T, B, N]`` tensors the layer saves (its saved bytes / 4 per neuron and step)."""

    def __init__(self, saved: int):
        super().__init__()
        self.saved = saved

    def forward(self, x):
        return Copies.apply(x, self.saved), None


def implementations(kind, backends):
    ours = {"adex": LIFAdEx, "lif": LIF, "li": LI}[kind]
    impls = {}
    norse = norse_layers()
    if kind in norse:
        impls["norse"] = norse[kind]()
    if kind == "lif":
        try:
            impls["snntorch Leaky"] = SnnTorchLeaky()
        except ImportError:
            pass
    for backend in backends:
        impls[backend] = ours(backend=backend)
    return impls


def forward_backward(layer, x):
    x = x.detach().requires_grad_()
    out, _ = layer(x)
    out.sum().backward()


def saved_bytes(layer, x):
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    x = x.detach().requires_grad_()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        layer(x)
    return total


def interleaved_calls(calls, budget_s, min_rounds=3, max_rounds=200, clock=time.perf_counter):
    """``{name: [seconds per round]}`` of zero-argument ``calls``: one warm-up call each (and
    compilation), then rounds of one call of each in a rotating order, until ``budget_s`` is spent
    (at least ``min_rounds``). ``clock``: wall time, or ``time.process_time`` (this process's CPU
    time: on one thread, robust to other processes' load)."""
    for call in calls.values():
        call()
    names = list(calls)
    times = {name: [] for name in names}
    start = time.perf_counter()
    for r in range(max_rounds):
        if r >= min_rounds and time.perf_counter() - start > budget_s:
            break
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = clock()
            calls[name]()
            times[name].append(clock() - t0)
    return times


def interleaved_times(layers, x, budget_s, min_rounds=3, max_rounds=100, clock=time.perf_counter):
    """:func:`interleaved_calls` of one forward and backward of every layer on ``x``."""
    calls = {name: (lambda layer=layer: forward_backward(layer, x)) for name, layer in layers.items()}
    return interleaved_calls(calls, budget_s, min_rounds, max_rounds, clock)


def run_case(kind, T, B, N, backends, budget_s, norse=True):
    """Rows ``(name, median seconds, {reference: median per-round ratio}, saved bytes per neuron
    and step, rounds)``."""
    torch.manual_seed(0)
    x = torch.rand(T, B, N) * 4
    layers = implementations(kind, backends)
    if not norse:
        layers.pop("norse", None)
        layers.pop("snntorch Leaky", None)
    if "cpp" in layers:  # the copies of the cpp kernels' bytes (its saved [T, B, N] tensors)
        per_step = saved_bytes(layers["cpp"], x) / (T * B * N * x.element_size())
        layers["memory floor"] = MemoryFloor(round(per_step))
    times = interleaved_times(layers, x, budget_s)
    rows = []
    for name, layer in layers.items():
        ratios = {ref: statistics.median(a / b for a, b in zip(times[ref], times[name], strict=True))
                  for ref in ("norse", "eager") if ref in times}
        if "memory floor" in times:  # this layer's time over the floor's (not its inverse)
            ratios["floor"] = statistics.median(a / b for a, b in zip(times[name], times["memory floor"],
                                                                      strict=True))
        rows.append((name, statistics.median(times[name]), ratios, saved_bytes(layer, x) / (T * B * N),
                     len(times[name])))
    return rows


def first_call_seconds():
    """Seconds to build (cold, empty extensions dir) and to load (warm cache) the C++ kernels,
    each in a fresh process."""
    code = ("import time; t = time.perf_counter(); from snn.neurons.fused.cpp import build; "
            "build.load_library(); print(time.perf_counter() - t)")
    with tempfile.TemporaryDirectory() as directory:
        env = dict(os.environ, TORCH_EXTENSIONS_DIR=directory)
        results = []
        for _ in range(2):
            out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
            results.append(float(out.stdout.strip().splitlines()[-1]))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only T=100, B=32, N=1024")
    parser.add_argument("--grid-only", action="store_true", help="only the T x N grid")
    parser.add_argument("--backends", nargs="+", default=["eager", "python", "cpp"])
    parser.add_argument("--kinds", nargs="+", default=["adex", "lif", "li"])
    parser.add_argument("--budget", type=float, default=2.0, help="seconds of repeats per measurement")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--grid-norse-max", type=float, default=100 * 32 * 4096,
                        help="largest T*B*N of the grid that norse (and snntorch) run on")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{args.threads} threads, torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    if "cpp" in args.backends:
        cold, warm = first_call_seconds()
        print(f"cpp kernels: first build {cold:.1f} s, cached load in a new process {warm:.2f} s\n")

    cases = [] if args.grid_only else [(100, 32, 1024, True)]
    if not args.quick:
        cases += [(T, 32, N, T * 32 * N <= args.grid_norse_max) for T in (25, 100, 400) for N in (256, 4096)]
    print(f"load average at the start: {' '.join(f'{v:.1f}' for v in os.getloadavg())}\n")
    print("| layer | T | B | N | implementation | fwd+bwd ms | vs norse | vs eager | / memory floor "
          "| saved B/neuron/step | rounds | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        for T, B, N, norse in cases:
            rows = run_case(kind, T, B, N, args.backends, args.budget, norse)
            load = f"{os.getloadavg()[0]:.1f}"
            for name, seconds, ratios, per_step, rounds in rows:
                vs = [f"{ratios[ref]:.1f}x" if ref in ratios else "-" for ref in ("norse", "eager")]
                vs.append(f"{ratios['floor']:.2f}x" if "floor" in ratios else "-")
                print(f"| {kind} | {T} | {B} | {N} | {name} | {seconds * 1e3:.1f} | {vs[0]} | {vs[1]} | {vs[2]} | "
                      f"{per_step:.2f} | {rounds} | {load} |", flush=True)


if __name__ == "__main__":
    main()
