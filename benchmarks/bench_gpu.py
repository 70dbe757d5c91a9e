"""GPU benchmark: forward + backward of Linear + spiking layer, a recurrent layer, and the default
training step.

Open Neuromorphic's library benchmark (open-neuromorphic.org, "SNN library benchmarks"): one
``Linear(N, N)`` followed by a LIF layer, batch B = 16, T = 500 steps, N = 4096 / 8192 / 16384,
loss ``outputs.sum()``, forward + backward. The same with AdEx (``LIFAdEx``); a recurrent AdEx
layer (``LIFAdExRecurrent(64, N)``, N = 256 / 1024, the per-step launches of the recurrent loops);
and the default recipe model's training step (conf/, as benchmarks/bench_train.py builds it).
Ours with the ``triton``, ``python`` and ``compile`` backends (``compile``: feed-forward only);
norse, snntorch (``Leaky``) and spikingjelly (``LIFNode``, its ``cupy`` backend, else ``torch``)
when installed, norse through ``torch.compile`` only with ``--compile-norse`` (minutes of
compilation). Every implementation runs on the same input in the same process, interleaved (each
round times each once, in a rotating order, CUDA-synchronised); a time is the median over rounds
after one warm-up call, peak memory is ``torch.cuda.max_memory_allocated`` over one call beyond
what was allocated before it. Our backends start from the same weights, and the ``check`` column
compares each one's outputs of the warm-up call with the ``python`` backend's (``same``, or how
many values differ; spikes can differ only where a voltage lies within rounding of the
threshold). The header names the GPU, torch, CUDA and Triton.

    python benchmarks/bench_gpu.py                      # everything (about 10 minutes)
    python benchmarks/bench_gpu.py --quick              # the first size of each case, 2 s per case
    python benchmarks/bench_gpu.py --cases lif --sizes 4096 8192 --backends triton python
    python benchmarks/bench_gpu.py --device cpu --quick --backends python --sizes 64 ...  # a dry run

Needs one CUDA GPU (``--device cpu`` runs the same code on the CPU, for a dry run of the script:
no timings worth reporting); exits with a message on a machine without one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch

warnings.filterwarnings("ignore")  # norse's torch.jit deprecation warnings

CASES = ("lif", "adex", "recurrent", "train")
BACKENDS = ("triton", "python", "compile")
RECURRENT_INPUTS = 64  # input features of the recurrent case
DEVICE = "cuda"  # main() sets it from --device


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


def spiking_layers(kind: str, backends, compile_norse: bool = False) -> dict:
    """``{name: factory() -> layer}`` for a neuron type: ours, then the other libraries found."""
    from snn.neurons import LIF, LIFAdEx

    ours = {"lif": LIF, "adex": LIFAdEx}[kind]
    factories = {b: (lambda b=b: ours(backend=b)) for b in backends}
    try:
        from norse.torch import LIF as NorseLIF
        from norse.torch import LIFAdEx as NorseLIFAdEx

        norse = {"lif": NorseLIF, "adex": NorseLIFAdEx}[kind]
        factories["norse"] = norse
        if compile_norse:
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
            model = model.to(DEVICE)
            optimizer = torch.optim.Adam(model.parameters(), 1e-3)
            x = torch.rand(B, *shape, device=DEVICE)
            y = torch.randint(0, 10, (B,), device=DEVICE)

            def step():
                optimizer.zero_grad(set_to_none=True)
                logits = model(x)
                torch.nn.functional.cross_entropy(logits, y).backward()
                optimizer.step()
                return logits

            return step

        return make

    factories = {b: factory(b) for b in backends if b != "compile"}
    try:
        import norse  # noqa: F401

        factories["norse"] = factory("norse")
    except ImportError:
        pass
    return factories


def synchronize() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed(step) -> float:
    synchronize()
    t0 = time.perf_counter()
    step()
    synchronize()
    return time.perf_counter() - t0


def peak_bytes(step) -> float:
    """Peak memory allocated during one call beyond what was allocated before it (NaN off CUDA)."""
    if DEVICE != "cuda":
        step()
        return float("nan")
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


def layer_steps(kind: str, N: int, B: int, T: int, backends, compile_norse: bool = False) -> dict:
    """``{name: step() -> outputs}``: forward + backward of Linear + ``kind`` on one shared input,
    every model from the same seed (ours then have the same weights)."""
    torch.manual_seed(0)
    x = torch.rand(T, B, N, device=DEVICE)
    steps = {}
    for name, factory in spiking_layers(kind, backends, compile_norse).items():
        torch.manual_seed(1)
        model = LinearThen(N, factory()).to(DEVICE)

        def step(model=model):
            model.zero_grad(set_to_none=True)
            out = model(x)
            out.sum().backward()
            return out

        steps[getattr(model.layer, "name", name)] = step
    return steps


def recurrent_steps(N: int, B: int, T: int, backends) -> dict:
    """``{name: step() -> spikes}``: forward + backward of ``LIFAdExRecurrent(64, N)`` on one
    shared input (``[T, B, 64]``, rates that make it spike), ours on each recurrent backend."""
    from snn.neurons import LIFAdExRecurrent

    torch.manual_seed(0)
    x = torch.rand(T, B, RECURRENT_INPUTS, device=DEVICE) * 2
    steps = {}
    for backend in (b for b in backends if b != "compile"):  # compile: feed-forward only
        torch.manual_seed(1)
        layer = LIFAdExRecurrent(RECURRENT_INPUTS, N, backend=backend).to(DEVICE)

        def step(layer=layer):
            layer.zero_grad(set_to_none=True)
            z, _ = layer(x)
            z.sum().backward()
            return z

        steps[backend] = step
    return steps


def check(out: torch.Tensor, reference: torch.Tensor | None) -> str:
    """``same`` as the python backend's outputs, or how many values differ (and by how much)."""
    if reference is None:
        return ""
    if out.shape != reference.shape:
        return f"shape {list(out.shape)}"
    differ = int((out != reference).sum())
    if differ == 0:
        return "same"
    return f"{differ} of {out.numel()} differ (max {float((out - reference).abs().max()):.2g})"


def run(case: str, N: int, B: int, T: int, backends, budget_s: float, compile_norse: bool = False) -> list[tuple]:
    """Rows ``(name, median seconds, peak MiB, x python, check)`` for one case; failures are rows too."""
    if case == "train":
        steps = {name: make() for name, make in train_step_models(backends).items()}
    elif case == "recurrent":
        steps = recurrent_steps(N, B, T, backends)
    else:
        steps = layer_steps(case, N, B, T, backends, compile_norse)
    ok, rows, outputs = {}, [], {}
    for name, step in steps.items():
        try:
            outputs[name] = step().detach()  # warm-up (and compilation)
            ok[name] = (step, peak_bytes(step))
        except Exception as error:  # one library failing must not hide the others
            rows.append((name, float("nan"), float("nan"), f"failed: {type(error).__name__}: {error}"[:120], ""))
    times = interleaved({n: s for n, (s, _) in ok.items()}, budget_s)
    python = statistics.median(times["python"]) if "python" in times else None
    reference = outputs.get("python")
    for name, (_, peak) in ok.items():
        t = statistics.median(times[name])
        ratio = f"{python / t:.1f}x" if python else ""
        ours = name in BACKENDS
        rows.append((name, t, peak / 2**20, ratio, check(outputs[name], reference) if ours else ""))
    return rows


def versions() -> str:
    """The device, torch (and its CUDA) and Triton, for the header."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "not installed"
    if DEVICE == "cuda":
        major, minor = torch.cuda.get_device_capability()
        device = f"{torch.cuda.get_device_name()} (sm_{major}{minor})"
    else:
        device = "CPU (dry run: times not comparable)"
    return f"{device}, torch {torch.__version__} (CUDA {torch.version.cuda}), triton {triton_version}"


def main(argv=None) -> list[tuple]:
    """Prints the table; returns its rows ``(case, N, name, seconds, peak MiB, ratio, check)``."""
    global DEVICE
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--sizes", nargs="+", type=int, default=[4096, 8192, 16384])
    parser.add_argument("--recurrent-sizes", nargs="+", type=int, default=[256, 1024],
                        help="neurons N of the recurrent case")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=500, help="time steps T")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--budget", type=float, default=5.0, help="seconds of rounds per case")
    parser.add_argument("--quick", action="store_true", help="the first size of each case, 2 s of rounds")
    parser.add_argument("--compile-norse", action="store_true", help="also norse through torch.compile (slow)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="cpu: a dry run of the script")
    args = parser.parse_args(argv)
    DEVICE = args.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        sys.exit(
            "bench_gpu.py needs a CUDA GPU (torch.cuda.is_available() is False here); "
            "run it on a machine with one NVIDIA GPU (or --device cpu for a dry run)."
        )
    sizes = args.sizes[:1] if args.quick else args.sizes
    recurrent_sizes = args.recurrent_sizes[:1] if args.quick else args.recurrent_sizes
    budget = min(args.budget, 2.0) if args.quick else args.budget
    print(f"# {versions()}, B={args.batch}, T={args.steps}, fwd+bwd, medians of interleaved rounds")
    print("| case | N | implementation | ms | peak MiB | vs python | check |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    table = []
    for case in args.cases:
        case_sizes = {"train": [None], "recurrent": recurrent_sizes}.get(case, sizes)
        for N in case_sizes:
            for name, t, peak, ratio, checked in run(case, N, args.batch, args.steps, args.backends, budget,
                                                     args.compile_norse):
                table.append((case, N, name, t, peak, ratio, checked))
                print(f"| {case} | {N or '-'} | {name} | {t * 1e3:.1f} | {peak:.0f} | {ratio} | {checked} |",
                      flush=True)
    return table


if __name__ == "__main__":
    main()
