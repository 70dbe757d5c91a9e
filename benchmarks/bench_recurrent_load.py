"""Recurrent layers beside busy neighbours: forward + backward of ``LIFAdExRecurrent`` on ``cpp`` and
``python``, on a quiet machine and beside CPU-bound processes this script starts itself.

The neighbours (``--neighbours`` processes) run for the whole script and are paused (SIGSTOP) for
the quiet rounds and resumed (SIGCONT) for the loaded ones: ``matmul`` neighbours multiply
``[128, 256] x [256, 256]`` in a loop with 2 intra-op threads each (another torch job, with its own
short parallel regions), ``spin`` neighbours run a pure-Python loop (one busy thread each). Each
round times every implementation once per condition, conditions and implementations in a rotating
order, so the load changes of a shared machine hit all of them alike; a time is the median over
rounds, a ratio the median over rounds of the per-round ratio to ``python`` in the same condition.

Implementations: ``python`` and ``cpp`` as the layers pick their threads, plus (``--pinned``)
``cpp@1`` and ``cpp@all``: ``cpp`` with the whole call on one thread and on all of
``torch.get_num_threads()`` (``SNN_STEP_THREADS`` and torch's threads set around the call), what
the layers choose between. ``cpp@all`` beside neighbours takes 10-100x the others: leave it out of
long cases.

    python benchmarks/bench_recurrent_load.py --pinned cpp@1              # 3 cases, 2 matmul neighbours
    python benchmarks/bench_recurrent_load.py --cases 200,32,256 --neighbour spin
    python benchmarks/bench_recurrent_load.py --quick       # tiny sizes: checks that it runs
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
import warnings

import torch
from bench_layers import forward_backward

from snn.neurons import LIFAdExRecurrent, LIFRecurrent

warnings.filterwarnings("ignore")

OURS = {"adex": LIFAdExRecurrent, "lif": LIFRecurrent}
INPUT_SCALE = 4.0  # as bench_recurrent.py: a few percent of the neurons spike per step
CASES = ((2000, 32, 256), (784, 128, 128), (784, 128, 256))  # (T, B, N), F = 1
NEIGHBOURS = {
    "matmul": "import torch\ntorch.set_num_threads(2)\na, b = torch.rand(128, 256), torch.rand(256, 256)\n"
              "while True:\n    a @ b\n",
    "spin": "while True:\n    pass\n",
}


@contextlib.contextmanager
def neighbours(kind: str, count: int):
    """``count`` neighbour processes, started paused; yields ``pause(bool)``; killed on exit."""
    procs = [subprocess.Popen([sys.executable, "-c", NEIGHBOURS[kind]], stdin=subprocess.DEVNULL)
             for _ in range(count)]

    def pause(paused: bool) -> None:
        for p in procs:
            os.kill(p.pid, signal.SIGSTOP if paused else signal.SIGCONT)
        time.sleep(0.2)  # resumed: its threads running again; paused: its last time slice over

    pause.pids = [p.pid for p in procs]
    try:
        time.sleep(1.0 if count else 0.0)  # imports done before the first pause
        pause(True)
        yield pause
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGCONT)
            p.kill()
            p.wait()


@contextlib.contextmanager
def step_threads_env(value: int | None):
    """The body with ``SNN_STEP_THREADS`` (and torch's intra-op threads) set to ``value``; None:
    as they are."""
    if value is None:
        yield
        return
    before, threads = os.environ.get("SNN_STEP_THREADS"), torch.get_num_threads()
    os.environ["SNN_STEP_THREADS"] = str(value)
    torch.set_num_threads(value)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        if before is None:
            os.environ.pop("SNN_STEP_THREADS", None)
        else:
            os.environ["SNN_STEP_THREADS"] = before


def implementations(kind, F, N, pinned=("cpp@1", "cpp@all")):
    """``{name: (layer, SNN_STEP_THREADS value)}`` with the same weights."""
    torch.manual_seed(0)
    reference = OURS[kind](F, N)
    w_in, w_rec = reference.input_weights.detach(), reference.recurrent_weights.detach()

    def layer(backend):
        return OURS[kind](F, N, input_weights=w_in, recurrent_weights=w_rec, backend=backend)

    impls = {"python": (layer("python"), None), "cpp": (layer("cpp"), None)}
    threads = {"cpp@1": 1, "cpp@all": torch.get_num_threads()}
    for name in pinned:
        impls[name] = (layer("cpp"), threads[name])
    return impls


def run_case(kind, T, B, F, N, pause, rounds, budget_s, pinned=("cpp@1", "cpp@all"), conditions=("quiet", "loaded")):
    """``{condition: {name: [seconds per round]}}``."""
    torch.manual_seed(1)
    x = torch.rand(T, B, F) * INPUT_SCALE
    impls = implementations(kind, F, N, pinned)
    for layer, env in impls.values():
        with step_threads_env(env):
            forward_backward(layer, x)  # warm-up: the library, the threads, the buffers
    names = list(impls)
    times = {c: {name: [] for name in names} for c in conditions}
    start = time.perf_counter()
    for r in range(rounds):
        if r >= 2 and time.perf_counter() - start > budget_s:
            break
        for c in conditions[r % len(conditions):] + conditions[:r % len(conditions)]:
            pause(c == "quiet")
            for name in names[r % len(names):] + names[:r % len(names)]:
                layer, env = impls[name]
                with step_threads_env(env):
                    t0 = time.perf_counter()
                    forward_backward(layer, x)
                    times[c][name].append(time.perf_counter() - t0)
    pause(True)
    return times


def print_rows(kind, T, B, N, times):
    for condition, by_name in times.items():
        for name, ts in by_name.items():
            ratio = statistics.median(a / b for a, b in zip(ts, by_name["python"], strict=True))
            print(f"| {kind} | {T} | {B} | {N} | {condition} | {name} | {statistics.median(ts) * 1e3:.0f} "
                  f"| {min(ts) * 1e3:.0f}-{max(ts) * 1e3:.0f} | {ratio:.2f} | {len(ts)} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs")
    parser.add_argument("--kind", choices=sorted(OURS), default="adex")
    parser.add_argument("--neighbour", choices=sorted(NEIGHBOURS), default="matmul")
    parser.add_argument("--neighbours", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=120.0, help="seconds of rounds per case")
    parser.add_argument("--pinned", nargs="*", choices=["cpp@1", "cpp@all"], default=["cpp@1", "cpp@all"],
                        help="cpp with pinned threads beside python and cpp (none: --pinned alone)")
    parser.add_argument("--cases", nargs="+", help="T,B,N triples (default: the three of the module docstring)")
    args = parser.parse_args(argv)
    # SIGTERM (and SIGINT, which a shell's background job ignores) end the run through the
    # neighbours' clean-up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    torch.set_num_threads(args.threads)
    cases = [tuple(map(int, c.split(","))) for c in args.cases] if args.cases else CASES
    if args.quick:
        cases, args.rounds, args.neighbours = [(20, 4, 16)], 2, min(args.neighbours, 1)
    load = " ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} cores "
          f"({len(os.sched_getaffinity(0))} usable), {args.neighbours} {args.neighbour} neighbours, "
          f"load average {load} at the start\n")
    print("| layer | T | B | N | condition | implementation | median ms | range ms | / python | rounds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    results = []
    with neighbours(args.neighbour, args.neighbours) as pause:
        for T, B, N in cases:
            times = run_case(args.kind, T, B, 1, N, pause, args.rounds, args.budget, args.pinned)
            print_rows(args.kind, T, B, N, times)
            results.append(((T, B, N), times))
    print(f"\nload average at the end: {' '.join(f'{v:.1f}' for v in os.getloadavg())}")
    return results


if __name__ == "__main__":
    main()
