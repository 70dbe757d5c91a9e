"""The recurrent layers' thread policy against pinned ``SNN_STEP_THREADS`` (issue 33): is the default
ever slower than the best pinned count?

Variants: ``default`` (``SNN_STEP_THREADS`` unset: the policy of ``snn.neurons.fused.threads``),
``SNN_STEP_THREADS=1`` and ``=2`` (torch's own intra-op threads left as they are). Scenarios:

* ``layer``: ``LIFAdExRecurrent`` (T = 784, B = 128, F = 1, N = 128 and 256, input scale 16: the
  recipes' spike rates) forward + backward alone, interleaved rounds in one process, wall time;
* ``neighbours``: the same beside two CPU-bound processes (``bench_recurrent_load.py``'s ``matmul``
  neighbours, two torch threads each, running throughout);
* ``after-norse``: in fresh processes (one per variant and repeat, in a rotating order), our layer
  warmed up on a short input, then norse's layer of the same size run once (other torch work on all
  threads in the same process), then our layer timed: the first call right after, and the median
  of three more;
* ``train``: real ``experiment=sfmnist_adex`` training through ``python -m snn.train`` (Fashion-MNIST
  from the machine's files, Lightning, AdamW), one process per variant and run in a rotating order;
  steps per second over 40 steps after 6 warm-up steps, timed by a callback (:class:`StepTimer`).

A ratio is a variant's time over the best pinned variant's, the one with the lowest median (the
median of per-round ratios where rounds are interleaved, else the ratio of medians); the default is
within 5 % of the best pinned count when it is <= 1.05.

    python benchmarks/bench_thread_policy.py                          # every scenario
    python benchmarks/bench_thread_policy.py --scenarios layer train --runs 4
    python benchmarks/bench_thread_policy.py --quick                  # tiny sizes: checks that it runs
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from bench_layers import forward_backward, interleaved_calls

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {"default": None, "SNN_STEP_THREADS=1": "1", "SNN_STEP_THREADS=2": "2"}
SCENARIOS = ("layer", "neighbours", "after-norse", "train")
INPUT_SCALE = 16.0


@contextlib.contextmanager
def step_threads(value: str | None):
    """The body with ``SNN_STEP_THREADS`` set to ``value`` (None: unset)."""
    before = os.environ.get("SNN_STEP_THREADS")
    if value is None:
        os.environ.pop("SNN_STEP_THREADS", None)
    else:
        os.environ["SNN_STEP_THREADS"] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("SNN_STEP_THREADS", None)
        else:
            os.environ["SNN_STEP_THREADS"] = before


def our_layer(N: int):
    from snn.neurons import LIFAdExRecurrent

    torch.manual_seed(0)
    return LIFAdExRecurrent(1, N, backend="cpp")


def ratio_rows(times: dict[str, list[float]], interleaved: bool) -> list[tuple[str, float, float]]:
    """``(variant, median s, / best pinned)`` rows. The best pinned variant is the one with the
    lowest median; interleaved rounds give the median of the per-round ratios to it (not to the
    faster of the pinned ones in each round: the minimum of two noisy times is biased low, by 8 %
    beside busy neighbours), else the ratio of medians."""
    medians = {v: statistics.median(t) for v, t in times.items()}
    best = min((v for v in times if v != "default"), key=medians.get)
    if interleaved:
        return [(v, medians[v], statistics.median(t / b for t, b in zip(times[v], times[best], strict=True)))
                for v in times]
    return [(v, medians[v], medians[v] / medians[best]) for v in times]


def print_table(title: str, rows, count_name: str, counts) -> None:
    print(f"\n{title}\n")
    print(f"| variant | median | / best pinned | {count_name} |")
    print("|---|---|---|---|")
    for (variant, seconds, ratio), count in zip(rows, counts, strict=True):
        print(f"| {variant} | {seconds * 1e3:.1f} ms | {ratio:.3f}x | {count} |", flush=True)


def layer_times(T: int, B: int, N: int, budget_s: float) -> dict[str, list[float]]:
    """Interleaved forward + backward wall times of our layer per variant."""
    layer = our_layer(N)
    x = torch.rand(T, B, 1, generator=torch.Generator().manual_seed(1)) * INPUT_SCALE

    def call(value):
        with step_threads(value):
            forward_backward(layer, x)

    return interleaved_calls({v: (lambda v=value: call(v)) for v, value in VARIANTS.items()}, budget_s)


def scenario_layer(T, B, sizes, budget_s, neighbours: int) -> None:
    context = contextlib.nullcontext()
    if neighbours:
        from bench_recurrent_load import neighbours as start_neighbours

        context = start_neighbours("matmul", neighbours)
    with context as pause:
        if pause is not None:
            pause(False)  # running for all rounds
        for N in sizes:
            times = layer_times(T, B, N, budget_s)
            where = f"beside {neighbours} busy processes" if neighbours else "alone"
            print_table(f"LIFAdExRecurrent T = {T}, B = {B}, N = {N}, forward + backward, {where} "
                        f"(interleaved rounds, wall time)", ratio_rows(times, True), "rounds",
                        [len(t) for t in times.values()])


def after_norse_child(T: int, B: int, N: int, calls: int) -> dict:
    """This (fresh) process: our layer warmed up, norse's run once, then ours timed ``calls`` times."""
    from bench_recurrent import norse_layer

    layer = our_layer(N)
    forward_backward(layer, torch.rand(8, B, 1) * INPUT_SCALE)  # the library loaded, first allocations
    norse = norse_layer("adex", 1, N, layer.input_weights.detach(), layer.recurrent_weights.detach())
    if norse is None:
        return {"error": "norse is not installed"}
    x = torch.rand(T, B, 1, generator=torch.Generator().manual_seed(1)) * INPUT_SCALE
    forward_backward(norse, x)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        forward_backward(layer, x)
        times.append(time.perf_counter() - t0)
    return {"first": times[0], "later": statistics.median(times[1:])}


def scenario_after_norse(T, B, N, repeats: int, threads: int) -> None:
    results = {v: [] for v in VARIANTS}
    names = list(VARIANTS)
    for r in range(repeats):
        for variant in names[r % len(names):] + names[: r % len(names)]:
            env = {k: v for k, v in os.environ.items() if k != "SNN_STEP_THREADS"}
            if VARIANTS[variant] is not None:
                env["SNN_STEP_THREADS"] = VARIANTS[variant]
            out = subprocess.run([sys.executable, __file__, "--after-norse-child", str(T), str(B), str(N),
                                  "--threads", str(threads)], env=env, capture_output=True, text=True, check=True)
            answer = json.loads(out.stdout.strip().splitlines()[-1])
            if "error" in answer:
                print(f"\nafter-norse: skipped ({answer['error']})")
                return
            results[variant].append(answer)
    for key, label in (("first", "the first call right after norse's"), ("later", "the next three (median)")):
        times = {v: [a[key] for a in results[v]] for v in VARIANTS}
        print_table(f"LIFAdExRecurrent T = {T}, B = {B}, N = {N} in a fresh process after norse's layer: {label} "
                    f"(medians over processes)", ratio_rows(times, False), "processes",
                    [len(t) for t in times.values()])
        print("\nper process (ms): " + "; ".join(f"{v}: " + ", ".join(f"{t * 1e3:.0f}" for t in times[v])
                                                 for v in VARIANTS))


class StepTimer(L.Callback):
    """Writes the ``time.perf_counter()`` at the end of every training batch to ``path`` (JSON)."""

    def __init__(self, path: str):
        self.path, self.ends = path, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.ends.append(time.perf_counter())
        Path(self.path).write_text(json.dumps(self.ends))


def scenario_train(runs: int, steps: int, warmup: int, threads: int, overrides: list[str]) -> None:
    names = list(VARIANTS)
    rates = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(runs):
            for variant in names[r % len(names):] + names[: r % len(names)]:
                env = {k: v for k, v in os.environ.items() if k != "SNN_STEP_THREADS"}
                if VARIANTS[variant] is not None:
                    env["SNN_STEP_THREADS"] = VARIANTS[variant]
                env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT), env.get("PYTHONPATH", "")])
                path = Path(tmp) / f"steps-{r}-{names.index(variant)}.json"
                command = [sys.executable, "-m", "snn.train", "experiment=sfmnist_adex", f"threads={threads}",
                           f"trainer.max_steps={warmup + steps}", "test=false", "logger=none",
                           "optimized_metric=train/loss",  # no validation within these steps
                           f"hydra.run.dir={tmp}/run-{r}-{names.index(variant)}",
                           "+callbacks.step_timer._target_=bench_thread_policy.StepTimer",
                           f"+callbacks.step_timer.path={path}", *overrides]
                done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True)
                if done.returncode:
                    raise SystemExit(f"training failed ({' '.join(command)}):\n{done.stderr[-3000:]}")
                ends = json.loads(path.read_text())
                rates[variant].append(steps / (ends[warmup + steps - 1] - ends[warmup - 1]))
    seconds = {v: [1 / s for s in rates[v]] for v in VARIANTS}
    rows = ratio_rows(seconds, False)
    print(f"\nexperiment=sfmnist_adex training through python -m snn.train, threads={threads}: steps {warmup + 1}-"
          f"{warmup + steps} of each run (one process per run, variants in a rotating order)\n")
    print("| variant | steps/s (median) | steps/s per run | time per step / best pinned |")
    print("|---|---|---|---|")
    for variant, step_s, ratio in rows:
        per_run = ", ".join(f"{s:.2f}" for s in rates[variant])
        print(f"| {variant} | {1 / step_s:.2f} | {per_run} | {ratio:.3f}x |", flush=True)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--sizes", nargs="+", type=int, default=[128, 256])
    parser.add_argument("--budget", type=float, default=30.0, help="seconds of interleaved rounds per size")
    parser.add_argument("--repeats", type=int, default=4, help="processes per variant (after-norse)")
    parser.add_argument("--runs", type=int, default=3, help="training runs per variant")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks that the script runs")
    parser.add_argument("--after-norse-child", nargs=3, type=int, metavar=("T", "B", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.after_norse_child:
        print(json.dumps(after_norse_child(*args.after_norse_child, calls=4)))
        return
    T, B = (20, 16) if args.quick else (784, 128)
    sizes = [16] if args.quick else args.sizes
    budget = 0.5 if args.quick else args.budget
    load = os.getloadavg()
    print(f"machine: {os.uname().machine}, {os.cpu_count()} cores, {args.threads} torch threads, torch "
          f"{torch.__version__}; load average at the start {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    if "layer" in args.scenarios:
        scenario_layer(T, B, sizes, budget, neighbours=0)
    if "neighbours" in args.scenarios:
        scenario_layer(T, B, sizes, budget, neighbours=2)
    if "after-norse" in args.scenarios:
        scenario_after_norse(T, B, sizes[-1], 1 if args.quick else args.repeats, args.threads)
    if "train" in args.scenarios:
        quick = ["model.hidden=[8]", "dataset.batch_size=4"] if args.quick else []
        scenario_train(1 if args.quick else args.runs, 2 if args.quick else 40, 2 if args.quick else 6,
                       args.threads, quick)
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
