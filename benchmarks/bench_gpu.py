"""GPU benchmark: forward + backward of Linear + spiking layer, and the default training step.

Open Neuromorphic's library benchmark (open-neuromorphic.org, "SNN library benchmarks"): one
``Linear(N, N)`` followed by a LIF layer, batch B = 16, T = 500 steps, N = 4096 / 8192 / 16384,
loss ``outputs.sum()``, forward + backward. The same with AdEx (``LIFAdEx``), and the default
recipe model's training step (conf/, as benchmarks/bench_train.py builds it). Ours with the
``triton``, ``python`` and ``compile`` backends; norse (and norse through ``torch.compile``),
snntorch (``Leaky``) and spikingjelly (``LIFNode``, its ``cupy`` backend, else ``torch``) when
installed. Every implementation runs on the same input in the same process, interleaved (each
round times each once, in a rotating order, CUDA-synchronised); a time is the median over rounds
after one warm-up call, peak memory is ``torch.cuda.max_memory_allocated`` over one call beyond
what was allocated before it.

    python benchmarks/bench_gpu.py                      # everything
    python benchmarks/bench_gpu.py --quick              # N = 4096 only
    python benchmarks/bench_gpu.py --cases lif --sizes 4096 8192 --backends triton python

Needs one CUDA GPU; exits with a message on a machine without one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch

warnings.filterwarnings("ignore")  # norse's torch.jit deprecation warnings

CASES = ("lif", "adex", "train")
BACKENDS = ("triton", "python", "compile")


class LinearThen(torch.nn.Module):
    """``Linear(N, N)`` on every step, then a layer ``[T, B, N] -> (outputs, state)``."""

    def __init__(self, N: int, layer: torch.nn.Module):
        super().__init__()
        self.linear = torch.nn.Linear(N, N)
        self.layer = layer

    def forward(self, x):
        out = self.layer(self.linear(x))
        return out[0] if isinstance(out, tuple) else out


class SpikingJellyLIF(torch.nn.Module):
    """spikingjelly's multi-step LIFNode (its fused ``cupy`` kernel when available)."""

    def __init__(self):
        super().__init__()
        from spikingjelly.activation_based import neuron

        try:
            self.node = neuron.LIFNode(step_mode="m", backend="cupy")
        except Exception:  # no cupy: its torch backend
            self.node = neuron.LIFNode(step_mode="m", backend="torch")
        self.name = f"spikingjelly ({self.node.backend})"

    def forward(self, x):
        self.node.reset()
        return self.node(x)


def spiking_layers(kind: str, backends) -> dict:
    """``{name: factory() -> layer}`` for a neuron type: ours, then the other libraries found."""
    from snn.neurons import LIF, LIFAdEx

    ours = {"lif": LIF, "adex": LIFAdEx}[kind]
    factories = {b: (lambda b=b: ours(backend=b)) for b in backends}
    try:
        from norse.torch import LIF as NorseLIF
        from norse.torch import LIFAdEx as NorseLIFAdEx

        norse = {"lif": NorseLIF, "adex": NorseLIFAdEx}[kind]
        factories["norse"] = norse
        factories["norse + compile"] = lambda: torch.compile(norse())
    except ImportError:
        pass
    if kind == "lif":
        try:
            import snntorch  # noqa: F401
            from bench_layers import SnnTorchLeaky

            factories["snntorch Leaky"] = SnnTorchLeaky
        except ImportError:
            pass
        try:
            import spikingjelly  # noqa: F401

            factories["spikingjelly"] = SpikingJellyLIF
        except ImportError:
            pass
    return factories


def train_step_models(backends) -> dict:
    """``{name: factory() -> (step(), description)}`` for the default recipe's training step."""
    from bench_train import build

    def factory(variant):
        def make():
            model, B, shape, _, T = build(variant)
            model = model.cuda()
            optimizer = torch.optim.Adam(model.parameters(), 1e-3)
            x = torch.rand(B, *shape, device="cuda")
            y = torch.randint(0, 10, (B,), device="cuda")

            def step():
                optimizer.zero_grad(set_to_none=True)
                torch.nn.functional.cross_entropy(model(x), y).backward()
                optimizer.step()

            return step

        return make

    factories = {b: factory(b) for b in backends}
    try:
        import norse  # noqa: F401

        factories["norse"] = factory("norse")
    except ImportError:
        pass
    return factories


def timed(step) -> float:
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    return time.perf_counter() - t0


def peak_bytes(step) -> int:
    """Peak memory allocated during one call beyond what was allocated before it."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    step()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def interleaved(steps: dict, budget_s: float, min_rounds: int = 3) -> dict:
    """``{name: [seconds per round]}`` (see the module docstring)."""
    names = list(steps)
    times = {name: [] for name in names}
    start = time.perf_counter()
    r = 0
    while r < min_rounds or time.perf_counter() - start < budget_s:
        for name in names[r % len(names) :] + names[: r % len(names)]:
            times[name].append(timed(steps[name]))
        r += 1
    return times


def layer_steps(kind: str, N: int, B: int, T: int, backends) -> dict:
    """``{name: step()}``: forward + backward of Linear + ``kind`` on one shared input."""
    torch.manual_seed(0)
    x = torch.rand(T, B, N, device="cuda")
    steps = {}
    for name, factory in spiking_layers(kind, backends).items():
        model = LinearThen(N, factory()).cuda()

        def step(model=model):
            model.zero_grad(set_to_none=True)
            model(x).sum().backward()

        steps[getattr(model.layer, "name", name)] = step
    return steps


def run(case: str, N: int, B: int, T: int, backends, budget_s: float) -> list[tuple]:
    """Rows ``(name, median seconds, peak MiB, x python)`` for one case; failures are rows too."""
    if case == "train":
        steps = {name: make() for name, make in train_step_models(backends).items()}
    else:
        steps = layer_steps(case, N, B, T, backends)
    ok, rows = {}, []
    for name, step in steps.items():
        try:
            step()  # warm-up (and compilation)
            ok[name] = (step, peak_bytes(step))
        except Exception as error:  # one library failing must not hide the others
            rows.append((name, float("nan"), float("nan"), f"failed: {type(error).__name__}"))
    times = interleaved({n: s for n, (s, _) in ok.items()}, budget_s)
    python = statistics.median(times["python"]) if "python" in times else None
    for name, (_, peak) in ok.items():
        t = statistics.median(times[name])
        ratio = f"{python / t:.1f}x" if python else ""
        rows.append((name, t, peak / 2**20, ratio))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--sizes", nargs="+", type=int, default=[4096, 8192, 16384])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=500, help="time steps T")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--budget", type=float, default=5.0, help="seconds of rounds per case")
    parser.add_argument("--quick", action="store_true", help="N = 4096 only")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        sys.exit(
            "bench_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False here); "
            "run it on a machine with one NVIDIA GPU."
        )
    sizes = args.sizes[:1] if args.quick else args.sizes
    print(
        f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, B={args.batch}, "
        f"T={args.steps}, fwd+bwd, medians of interleaved rounds"
    )
    print("| case | N | implementation | ms | peak MiB | vs python |")
    print("| --- | --- | --- | --- | --- | --- |")
    for case in args.cases:
        for N in sizes if case != "train" else [None]:
            rows = run(case, N, args.batch, args.steps, args.backends, args.budget)
            for name, t, peak, ratio in rows:
                print(
                    f"| {case} | {N or '-'} | {name} | {t * 1e3:.1f} | {peak:.0f} | {ratio} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
