"""Forward + backward time and saved-for-backward memory of the AdEx, LIF and LI layers.

Each case runs ``layer(x)`` on ``x = rand(T, B, N) * 4`` (float32, requires grad), loss
``outputs.sum()``, backward; median wall time of repeated runs after warm-up, every implementation
on the same tensor in the same process, so the ratios are robust to a shared, noisy machine. Saved
bytes are counted with ``torch.autograd.graph.saved_tensors_hooks``. norse 1.1.0 (``pip install
--no-deps norse==1.1.0``) and snntorch (``Leaky``, next to LIF) are measured when installed.

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


def median_time(layer, x, budget_s):
    forward_backward(layer, x)  # warm-up (and compilation)
    times = []
    start = time.perf_counter()
    while len(times) < 3 or (time.perf_counter() - start < budget_s and len(times) < 50):
        t0 = time.perf_counter()
        forward_backward(layer, x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run_case(kind, T, B, N, backends, budget_s):
    torch.manual_seed(0)
    x = torch.rand(T, B, N) * 4
    rows = []
    for name, layer in implementations(kind, backends).items():
        seconds = median_time(layer, x, budget_s)
        rows.append((name, seconds, saved_bytes(layer, x) / (T * B * N)))
    return rows


def first_call_seconds():
    """Seconds to build (cold, empty extensions dir) and to load (warm cache) the C++ kernels,
    each in a fresh process."""
    code = ("import time; t = time.perf_counter(); from snn.neurons.fused import cpp_loops; "
            "cpp_loops.load_library(); print(time.perf_counter() - t)")
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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{args.threads} threads, torch {torch.__version__}, "
          f"CPU capability {torch.backends.cpu.get_cpu_capability()}")
    if "cpp" in args.backends:
        cold, warm = first_call_seconds()
        print(f"cpp kernels: first build {cold:.1f} s, cached load in a new process {warm:.2f} s\n")

    cases = [] if args.grid_only else [(100, 32, 1024)]
    if not args.quick:
        cases += [(T, 32, N) for T in (25, 100, 400) for N in (256, 4096)]
    print("| layer | T | B | N | implementation | fwd+bwd ms | vs norse | saved B/neuron/step |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in args.kinds:
        for T, B, N in cases:
            rows = run_case(kind, T, B, N, args.backends, args.budget)
            reference = dict((name, s) for name, s, _ in rows).get("norse")
            for name, seconds, per_step in rows:
                ratio = f"{reference / seconds:.1f}x" if reference else "-"
                print(f"| {kind} | {T} | {B} | {N} | {name} | {seconds * 1e3:.1f} | {ratio} | {per_step:.2f} |",
                      flush=True)


if __name__ == "__main__":
    main()
