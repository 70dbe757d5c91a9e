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

``--floor-table``: the ``cpp`` backend's native loops (the whole time loop in one C++ call), its
per-step loops (one C++ call per step, the products by torch between them), norse and the floor
itself, each a round's entry, interleaved in rotating order; a ratio to the floor is the median over
rounds of the per-round ratio (the floor measured beside it), the spread the lowest and highest.

    python benchmarks/bench_recurrent.py             # the issue's case, the T x N grid, memory vs T
    python benchmarks/bench_recurrent.py --quick     # tiny sizes: checks that it runs
    python benchmarks/bench_recurrent.py --floor-table --sizes 128 256 --budget 120
    python benchmarks/bench_recurrent.py --floor-table --scales 16 32 --products auto dense --no-norse
    python benchmarks/bench_recurrent.py --crossover --sizes 128 256 --threads 1
    python benchmarks/bench_recurrent.py --train-step --budget 120
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
from bench_layers import forward_backward, interleaved_calls, interleaved_times, saved_bytes
from bench_train import peak_rss_mb, reset_peak_rss, rss_mb

from snn.neurons import LIFAdExRecurrent, LIFRecurrent
from snn.neurons.fused import registry
from snn.neurons.fused.cpp import CppBackend, step_threads
from snn.neurons.fused.cpp import recurrent as cpp_recurrent

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


class PerStepCpp(CppBackend):
    """The ``cpp`` backend with its per-step recurrent loops (one C++ call per step)."""

    def recurrent_forward(self, kind, x, w_in, w_rec, z0, state, P, save, save_extra, options):
        with step_threads(w_rec, z0):
            return cpp_recurrent.forward_per_step(kind, x, w_in, w_rec, z0, state, P, save, save_extra, options)

    def recurrent_backward(self, kind, gout, gz, gstate, saved, v0, w_rec, P, options, param_grads, z0=None,
                           w_rec_grad=False):
        with step_threads(w_rec, v0):
            return cpp_recurrent.backward_per_step(kind, gout, gz, gstate, saved, v0, w_rec, P, options, param_grads,
                                                   z0, w_rec_grad)


class PerStepLayer(torch.nn.Module):
    """A ``cpp`` layer whose calls run the per-step loops: the autograd node keeps the backend its
    forward resolved, so swapping the registry's entry during forward covers backward too."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x, state=None):
        native = registry.REGISTRY["cpp"]
        registry.REGISTRY["cpp"] = PerStepCpp()
        try:
            return self.layer(x, state)
        finally:
            registry.REGISTRY["cpp"] = native


class Floor(torch.nn.Module):
    """The floor (:func:`matmul_floor`'s products, once) as a layer: its call runs them and returns
    ``x`` for the benchmark's backward."""

    def __init__(self, T, B, N):
        super().__init__()
        self.T = T
        self.z, self.w = torch.rand(B, N), torch.randn(N, N)
        self.gc, self.zs, self.out = torch.randn(T * B, N), torch.rand(T * B, N), torch.empty(B, N)

    def forward(self, x, state=None):
        for _ in range(2 * self.T):
            torch.mm(self.z, self.w, out=self.out)
        self.gc.t() @ self.zs
        return x * 1, None


class ProductsLayer(torch.nn.Module):
    """A layer whose calls run with ``SNN_SPIKE_PRODUCTS=mode``: forward, and backward through a
    hook on the output that sets the mode again (the backward reads it when it runs)."""

    def __init__(self, layer, mode):
        super().__init__()
        self.layer, self.mode = layer, mode

    def forward(self, x, state=None):
        with SpikeProducts(self.mode):
            out, final = self.layer(x, state)
        if out.requires_grad:
            out = ModeInBackward.apply(out, self.mode)
        return out, final


class ModeInBackward(torch.autograd.Function):
    """Identity whose backward sets ``SNN_SPIKE_PRODUCTS`` for the rest of the backward pass (the
    benchmark's backward runs nothing else; the next call sets its own mode)."""

    @staticmethod
    def forward(ctx, out, mode):
        ctx.mode = mode
        return out.view_as(out)

    @staticmethod
    def backward(ctx, g):
        os.environ[cpp_recurrent.ENV] = ctx.mode
        return g, None


def floor_rows(kind, T, B, F, N, budget_s, norse=True, scale=INPUT_SCALE, products=("auto",),
               clock=time.perf_counter):
    """``{name: (median s, (min, max) s, median ratio to the floor, (min, max) ratio)}`` for the
    native and per-step ``cpp`` loops (the native one in each ``SNN_SPIKE_PRODUCTS`` mode of
    ``products``), norse and the floor, interleaved (module docstring); and the spike rate."""
    torch.manual_seed(1)
    x = torch.rand(T, B, F) * scale
    ours = implementations(kind, F, N, ["cpp"], norse)
    with torch.no_grad():
        rate = ours["cpp"](x)[0].mean().item()
    per_step = PerStepLayer(implementations(kind, F, N, ["cpp"], False)["cpp"])
    natives = {f"cpp native ({mode})": ProductsLayer(ours["cpp"], mode) for mode in products}
    layers = {**natives, "cpp per-step": ProductsLayer(per_step, "dense"),
              **({"norse": ours["norse"]} if "norse" in ours else {}), "floor": Floor(T, B, N)}
    before = os.environ.get(cpp_recurrent.ENV)
    try:
        times = interleaved_times(layers, x, budget_s, clock=clock)
    finally:
        if before is None:
            os.environ.pop(cpp_recurrent.ENV, None)
        else:
            os.environ[cpp_recurrent.ENV] = before
    rows = {}
    for name, seconds in times.items():
        ratios = [a / b for a, b in zip(seconds, times["floor"], strict=True)]
        rows[name] = (statistics.median(seconds), (min(seconds), max(seconds)), statistics.median(ratios),
                      (min(ratios), max(ratios)), len(seconds))
    return rows, rate


def floor_table(kind, T, B, F, sizes, budget_s, scales=(INPUT_SCALE,), products=("auto",), norse=True,
                clock=time.perf_counter):
    what = "CPU time of this process" if clock is time.process_time else "wall time"
    print(f"\n{kind}, T = {T}, B = {B}, F = {F}: forward + backward ({what}), interleaved rounds\n")
    print("| N | input scale | spike rate | implementation | median ms | min-max ms | / floor (median) "
          "| / floor min-max | rounds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for N in sizes:
        for scale in scales:
            rows, rate = floor_rows(kind, T, B, F, N, budget_s, norse, scale, products, clock)
            for name, (med, (lo, hi), ratio, (rlo, rhi), n) in rows.items():
                print(f"| {N} | {scale:g} | {rate:.3f} | {name} | {med * 1e3:.0f} | {lo * 1e3:.0f}-{hi * 1e3:.0f} "
                      f"| {ratio:.2f}x | {rlo:.2f}-{rhi:.2f}x | {n} |", flush=True)


class SpikeProducts:
    """``SNN_SPIKE_PRODUCTS`` (``dense``/``sparse``/``auto``) set for the body, restored after it."""

    def __init__(self, mode):
        self.mode = mode

    def __enter__(self):
        self.before = os.environ.get(cpp_recurrent.ENV)
        os.environ[cpp_recurrent.ENV] = self.mode

    def __exit__(self, *exc):
        if self.before is None:
            os.environ.pop(cpp_recurrent.ENV, None)
        else:
            os.environ[cpp_recurrent.ENV] = self.before


def summary(times, name, reference):
    """``median ms (min ms)`` of ``name`` and the median over rounds of its time over ``reference``'s."""
    ratio = statistics.median(a / b for a, b in zip(times[name], times[reference], strict=True))
    return f"{statistics.median(times[name]) * 1e3:.1f} ({min(times[name]) * 1e3:.1f})", ratio


def crossover(kind, T, B, sizes, scales, rates, budget_s):
    """The spike rate at which the sparse products overtake the dense ones (``--crossover``).

    Forward: the layer's forward (no autograd) with ``SNN_SPIKE_PRODUCTS=dense`` and ``=sparse``
    (every step's ``W_rec z`` by gather-add), interleaved, at input scales that set the rate (the
    rate column: the layer's mean spike rate). Weight gradient: ``cpp.recurrent.weight_gradient``
    forced sparse (every chunk by scatter-add) against the dense node's ``g_c^T z_{t-1}`` (the
    spikes recomputed by ``spikes_before``, one GEMM), on random ``g_c`` and voltages whose share
    ``rate`` is above threshold."""
    from snn.neurons.fused.recurrent import spikes_before

    print(f"\nforward, {kind}, T = {T}, B = {B}, F = 1 (median ms, (min)), interleaved\n")
    print("| N | input scale | spike rate | dense ms | sparse ms | sparse / dense (median) | rounds |")
    print("|---|---|---|---|---|---|---|")
    for N in sizes:
        torch.manual_seed(0)
        layer = OURS[kind](1, N, backend="cpp")
        for scale in scales:
            x = torch.rand(T, B, 1) * scale

            def run(mode, x=x, layer=layer):
                with SpikeProducts(mode), torch.no_grad():
                    return layer(x)[0]

            rate = run("dense").mean().item()
            times = interleaved_calls({m: (lambda m=m: run(m)) for m in ("dense", "sparse")}, budget_s)
            (d, _), (sp, ratio) = summary(times, "dense", "dense"), summary(times, "sparse", "dense")
            print(f"| {N} | {scale:g} | {rate:.3f} | {d} | {sp} | {ratio:.2f}x | {len(times['dense'])} |",
                  flush=True)
    print(f"\nweight gradient, T = {T}, B = {B} (median ms, (min)), interleaved\n")
    print("| N | spike rate | dense ms | sparse ms | sparse / dense (median) | rounds |")
    print("|---|---|---|---|---|---|")
    for N in sizes:
        g = torch.Generator().manual_seed(0)
        gc = torch.randn(T, B, N, generator=g)
        for rate in rates:
            vd = torch.rand(T, B, N, generator=g) - (1 - rate)  # v_d > 0 with probability rate
            v_th = torch.zeros(())

            def dense(gc=gc, vd=vd, v_th=v_th):
                zprev = spikes_before(vd, 0.0, v_th)
                return gc.flatten(0, 1).t() @ zprev.flatten(0, 1)

            def sparse(gc=gc, vd=vd, v_th=v_th):
                with SpikeProducts("sparse"):
                    return cpp_recurrent.weight_gradient(gc, vd, None, v_th)

            times = interleaved_calls({"dense": dense, "sparse": sparse}, budget_s)
            (d, _), (sp, ratio) = summary(times, "dense", "dense"), summary(times, "sparse", "dense")
            print(f"| {N} | {rate:.2f} | {d} | {sp} | {ratio:.2f}x | {len(times['dense'])} |", flush=True)


def sfmnist_step_times(budget_s, threads_variants=("auto", "1", "2"), seed=0):
    """Training steps of ``experiment=sfmnist_adex``'s model (composed from ``conf/`` as train.py
    does: one recurrent AdEx population of 128, B = 128, T = 784) on a synthetic batch (no data
    files here): half the pixels 0, the others uniform in [0, 1), times the recipe's input scale,
    random labels. A step: forward, cross-entropy, backward, AdamW. Variants, interleaved:
    ``SNN_SPIKE_PRODUCTS`` dense and auto (the policy's threads), and auto with ``SNN_STEP_THREADS``
    pinned to each of ``threads_variants`` but ``auto``. Returns ``({name: [seconds]}, spike rate)``."""
    from pathlib import Path

    import torch.nn.functional as F
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=sfmnist_adex", "model.neuron.backend=cpp"])
    g = torch.Generator().manual_seed(seed)
    B, shape = cfg.dataset.batch_size, tuple(cfg.model.input_shape)
    x = torch.rand((B, *shape), generator=g) * (torch.rand((B, *shape), generator=g) > 0.5)
    x = x * float(cfg.dataset.pixels.scale)
    y = torch.randint(cfg.model.num_classes, (B,), generator=g)
    variants = {"dense": ("dense", None), "auto": ("auto", None),
                **{f"auto, SNN_STEP_THREADS={t}": ("auto", t) for t in threads_variants if t != "auto"}}
    steps = {}
    for name, (mode, threads) in variants.items():
        torch.manual_seed(seed)
        model = instantiate(cfg.model)
        optimizer = torch.optim.AdamW(model.parameters(), lr=float(cfg.optimizer.lr))

        def step(model=model, optimizer=optimizer, mode=mode, threads=threads):
            before = os.environ.get("SNN_STEP_THREADS")
            if threads is not None:
                os.environ["SNN_STEP_THREADS"] = threads
            try:
                with SpikeProducts(mode):
                    optimizer.zero_grad(set_to_none=True)
                    F.cross_entropy(model(x), y).backward()
                    optimizer.step()
            finally:
                if before is None:
                    os.environ.pop("SNN_STEP_THREADS", None)
                else:
                    os.environ["SNN_STEP_THREADS"] = before

        steps[name] = step
    stats = dict(cpp_recurrent.STATS)
    times = interleaved_calls(steps, budget_s)
    spikes = cpp_recurrent.STATS["forward_spikes"] - stats["forward_spikes"]
    counted = cpp_recurrent.STATS["forward_steps"] - stats["forward_steps"]
    return times, spikes / max(1, counted) / (B * cfg.model.hidden[0])


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
    parser.add_argument("--floor-table", action="store_true",
                        help="only the native and per-step cpp loops, norse and the floor, interleaved")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256],
                        help="N of --floor-table and --crossover")
    parser.add_argument("--crossover", action="store_true",
                        help="only the sparse against the dense recurrent products, by spike rate")
    parser.add_argument("--steps", type=int, default=200, help="T of --crossover")
    parser.add_argument("--scales", type=float, nargs="+", default=[INPUT_SCALE],
                        help="input scales of --floor-table (they set the spike rate)")
    parser.add_argument("--train-step", action="store_true",
                        help="only sfmnist_adex training steps: dense vs sparse products, pinned threads")
    parser.add_argument("--cpu-time", action="store_true",
                        help="--floor-table in this process's CPU time (use with --threads 1 on a loaded machine)")
    parser.add_argument("--no-norse", action="store_true", help="--floor-table without norse")
    parser.add_argument("--products", nargs="+", default=["auto"], choices=cpp_recurrent.MODES,
                        help="SNN_SPIKE_PRODUCTS modes of the native loop in --floor-table")
    parser.add_argument("--memory-child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        kind, name, *sizes = args.memory_child
        print(json.dumps(memory_child(kind, name, *map(int, sizes))))
        return
    torch.set_num_threads(args.threads)
    if args.train_step:
        print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores, load average "
              f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        times, rate = sfmnist_step_times(0.0 if args.quick else args.budget)
        print(f"\nsfmnist_adex training step (synthetic batch), hidden spike rate {rate:.3f}\n")
        print("| variant | median ms | min ms | steps/s (median) | / dense (median) | rounds |")
        print("|---|---|---|---|---|---|")
        for name, ts in times.items():
            ratio = statistics.median(a / b for a, b in zip(ts, times["dense"], strict=True))
            print(f"| {name} | {statistics.median(ts) * 1e3:.0f} | {min(ts) * 1e3:.0f} "
                  f"| {1 / statistics.median(ts):.2f} | {ratio:.2f}x | {len(ts)} |")
        print(f"\nload average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        return
    if args.crossover:
        print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores, load average "
              f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        T, B = (20, 8) if args.quick else (args.steps, 128)
        crossover(args.kind, T, B, args.sizes, (4, 8, 16, 32, 64, 128), (0.02, 0.05, 0.1, 0.2, 0.3, 0.5),
                  0.0 if args.quick else args.budget)
        print(f"\nload average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        return
    if args.floor_table:
        print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores, load average "
              f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        T, B = (20, 8) if args.quick else (784, 128)
        floor_table(args.kind, T, B, 1, args.sizes, 0.0 if args.quick else args.budget, args.scales, args.products,
                    not args.no_norse, time.process_time if args.cpu_time else time.perf_counter)
        print(f"\nload average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
        return
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
