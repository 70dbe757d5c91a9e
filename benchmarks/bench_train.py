"""End to end: the training step of the default ``model=adex`` and its peak memory against T.

The model is composed from ``conf/`` exactly as ``train.py`` builds it (``dataset=fashion_mnist``:
batch ``[128, 1, 28, 28]``, the default T of ``conf/model/adex.yaml``), with
``model.neuron.backend`` set to each backend in turn. A training step is what Lightning runs per
batch, without Lightning's bookkeeping: forward, cross-entropy, backward, AdamW step.

``norse`` is the same network assembled from norse 1.1.0 modules: our (copied) constant-current
encoder, conv encoder and Linear layers around ``norse.torch.LIFAdEx`` and ``norse.torch.LI`` with
the config's neuron constants. Steps run interleaved (each round one step of every variant, in a
rotating order); samples/s is the batch size over the median step time.

Memory: each (backend, T) runs one training step in a fresh process; reported are the peak
resident set size during the step (Linux's VmHWM, reset just before the step through
``/proc/self/clear_refs``) and its growth over the resident size just before the step.
``--limit-mb`` also runs every case under an address-space limit of that many MB above the
process's size before the step (``RLIMIT_AS``), to show which variants fit in a given memory.

    python benchmarks/bench_train.py                       # speed, then memory for T in 50..400
    python benchmarks/bench_train.py --memory-only --limit-mb 256
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

warnings.filterwarnings("ignore")  # norse's torch.jit deprecation warnings

CONF = str(Path(__file__).resolve().parents[1] / "conf")


def model_config(backend: str, T: int | None = None):
    overrides = ["dataset=fashion_mnist", f"model.neuron.backend={backend}"]
    if T is not None:
        overrides.append(f"model.T={T}")
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


def build(backend: str, T: int | None = None, seed: int = 0):
    """``(model, batch size, input shape, num_classes, T)`` for ``backend`` or "norse"."""
    cfg = model_config("eager" if backend == "norse" else backend, T)
    torch.manual_seed(seed)
    model = instantiate(cfg.model)
    if backend == "norse":
        model = NorseClassifier(model, cfg.model)
    return model, cfg.dataset.batch_size, tuple(cfg.model.input_shape), cfg.model.num_classes, cfg.model.T


class NorseClassifier(nn.Module):
    """``model``'s encoder, conv encoder and Linear layers around norse's LIFAdEx and LI."""

    def __init__(self, model: nn.Module, cfg):
        super().__init__()
        from norse.torch import LI, LIFAdEx, LIFAdExParameters, LIParameters

        if len(model.linear) != 1 or not model.encoder.static:
            raise ValueError("NorseClassifier mirrors one hidden layer with constant-current coding.")
        model = copy.deepcopy(model)
        self.T, self.decoder = model.T, model.decoder
        self.encoder, self.conv, self.dropout = model.encoder, model.conv, model.dropout
        self.linear, self.output = model.linear[0], model.output
        neuron = {k: v for k, v in cfg.neuron.items() if k not in ("kind", "learnable", "backend", "integrator")}
        if cfg.neuron.get("integrator", "euler") != "euler":  # norse steps AdEx by forward Euler only
            raise ValueError("NorseClassifier mirrors integrator='euler' only (norse's AdEx step).")
        fields = {k: (v if k == "method" or k == "alpha" else torch.tensor(float(v))) for k, v in neuron.items()}
        self.hidden = LIFAdEx(LIFAdExParameters(**fields), dt=model.dt)
        readout = {k: torch.tensor(float(v)) for k, v in cfg.readout.items() if k not in ("learnable", "backend")}
        self.readout = LI(LIParameters(**readout), dt=model.dt)

    def forward(self, x):
        features = self.linear(self.dropout(self.conv(self.encoder(x)[0]).flatten(1)))  # [B, hidden]
        current = features.unsqueeze(0).expand(self.T, *features.shape)  # [T, B, hidden]
        z, _ = self.hidden(current)
        v, _ = self.readout(self.output(z))  # [T, B, num_classes]
        return v.amax(0) if self.decoder == "max" else v.mean(0)


def make_step(model, batch, input_shape, num_classes, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((batch, *input_shape), generator=g)
    y = torch.randint(num_classes, (batch,), generator=g)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    model.train()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def speed(variants, budget_s, min_rounds=5):
    steps, batch = {}, None
    for name, backend in variants.items():
        model, batch, shape, classes, T = build(backend)
        steps[name] = make_step(model, batch, shape, classes)
        steps[name]()  # warm-up (builds kernels, compiles)
    names = list(steps)
    times = {name: [] for name in names}
    start = time.perf_counter()
    r = 0
    while r < min_rounds or time.perf_counter() - start < budget_s:
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - t0)
        r += 1
    return batch, T, times


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def reset_peak_rss() -> None:
    """Starts a new peak-RSS (VmHWM) measurement from the current resident size."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def vm_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")


def memory_child(backend: str, T: int, limit_mb: float | None) -> dict:
    """One training step at ``T`` in this (fresh) process: peak RSS, or the error under a limit."""
    torch.set_num_threads(2)
    model, batch, shape, classes, T = build(backend, T)
    small, *_ = build(backend, 2)
    make_step(small, 2, shape, classes)()  # threads, kernels, lazy imports: not the step's memory
    step = make_step(model, batch, shape, classes)
    before = rss_mb()
    reset_peak_rss()
    if limit_mb is not None:
        limit = vm_bytes() + int(limit_mb * 2**20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    try:
        step()
    except (RuntimeError, MemoryError) as error:
        return {"ok": False, "error": str(error).splitlines()[0][:80]}
    peak = peak_rss_mb()
    return {"ok": True, "peak_mb": peak, "growth_mb": peak - before}


def memory(variants, Ts, limit_mb):
    rows = []
    for T in Ts:
        for name, backend in variants.items():
            args = [sys.executable, __file__, "--memory-child", backend, str(T)]
            if limit_mb is not None:
                args += ["--limit-mb", str(limit_mb)]
            out = subprocess.run(args, capture_output=True, text=True)
            lines = out.stdout.strip().splitlines()
            result = json.loads(lines[-1]) if out.returncode == 0 and lines else {
                "ok": False, "error": f"exit {out.returncode}: {out.stderr.strip().splitlines()[-1:]}"}
            rows.append((T, name, result))
            print(f"| {T} | {name} | " + (f"{result['peak_mb']:.0f} | {result['growth_mb']:.0f} |" if result["ok"]
                                          else f"- | failed: {result['error']} |"), flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="seconds of interleaved rounds")
    parser.add_argument("--variants", nargs="+", default=["eager", "auto", "python", "norse"])
    parser.add_argument("--T", nargs="+", type=int, default=[50, 100, 200, 400], help="for the memory table")
    parser.add_argument("--limit-mb", type=float, default=None)
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--memory-child", nargs=2, metavar=("BACKEND", "T"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        print(json.dumps(memory_child(args.memory_child[0], int(args.memory_child[1]), args.limit_mb)))
        return
    torch.set_num_threads(2)
    variants = {name: name for name in args.variants}
    print(f"torch {torch.__version__}, 2 threads, load average {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    if not args.memory_only:
        batch, T, times = speed(variants, args.budget)
        print(f"\ntraining step, batch {batch}, T = {T}; load average after: {os.getloadavg()[0]:.1f}\n")
        print("| model | step ms (median) | samples/s | vs eager | vs norse | rounds |")
        print("|---|---|---|---|---|---|")
        for name, ts in times.items():
            vs = [f"{statistics.median(a / b for a, b in zip(times[ref], ts, strict=True)):.2f}x"
                  if ref in times else "-" for ref in ("eager", "norse")]
            median = statistics.median(ts)
            print(f"| {name} | {median * 1e3:.1f} | {batch / median:.0f} | {vs[0]} | {vs[1]} | {len(ts)} |")
    if not args.speed_only:
        limit = f", address space limited to {args.limit_mb:.0f} MB above the pre-step size" if args.limit_mb else ""
        print(f"\npeak memory of one training step{limit}\n")
        print("| T | model | peak RSS MB | growth in the step MB |")
        print("|---|---|---|---|")
        memory({k: v for k, v in variants.items() if k in ("eager", "auto", "python", "norse")}, args.T, args.limit_mb)


if __name__ == "__main__":
    main()
