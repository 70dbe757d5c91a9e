"""Memory-task batches: generated against consumed by the training step.

For a memory-task recipe (default ``experiment=store_recall_adex``) the script reports, in samples/s:

- ``generate``: the training loader alone, ``num_workers=0`` (batches drawn in this process, as in
  the recipes);
- ``step``: the recipe's training step on one batch (forward, cross-entropy, backward, AdamW);
- ``loop w0`` / ``loop w1``: loader and step together, as training runs them, with the batches drawn
  in this process (``w0``) or in one loader process that overlaps with the step (``w1``).

Generation keeps up when ``generate`` is well above ``step`` (the target: 5x). Generation here
is the current code; ``--reference`` also times the per-sample torch generator it replaced, copied
below as it was (its samples are the same, bit for bit).

    python benchmarks/bench_memory_tasks.py                                  # ~1 minute
    python benchmarks/bench_memory_tasks.py --experiment cue_accumulation_adex --reference
    python benchmarks/bench_memory_tasks.py --quick                          # tiny sizes: checks that it runs
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch.utils.data import default_collate

from snn.data.memory_tasks import StoreRecall, sample_rng
from snn.training.checkpointing.instantiation import build_from_config

CONF = str(Path(__file__).resolve().parents[1] / "conf")
QUICK = ["dataset.T=60", "dataset.input_shape=[60,20]", "dataset.task.frame_ms=10", "dataset.task.frames=6",
         "dataset.task.neurons_per_group=5", "dataset.task.min_delay_frames=1", "model.decoder_steps=10",
         "dataset.batch_size=8", "model.hidden=[16]"]


def reference_poisson(rates: torch.Tensor, per_group: int, dt: float, rng: np.random.Generator) -> torch.Tensor:
    p = (rates * dt).clamp(0.0, 1.0).repeat_interleave(per_group, dim=1)  # [T, G] -> [T, G * n]
    return (torch.from_numpy(rng.random(tuple(p.shape))) < p).float()


def reference_sample(task, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
    """A sample as generated before (torch element-wise operations per sample), for either task."""
    if isinstance(task, StoreRecall):
        bits = torch.from_numpy(rng.integers(2, size=task.frames - 1))
        store = int(rng.integers(task.frames - 1 - task.min_delay))
        active = torch.zeros(task.frames, task.groups, dtype=torch.bool)
        active[store, 0] = True
        active[-1, 1] = True
        active[torch.arange(task.frames - 1), 2 + bits] = True
        rates = torch.where(active, task.rate, task.background).repeat_interleave(task.frame, dim=0)
        return reference_poisson(rates, task.per_group, task.dt, rng), int(bits[store])
    majority = int(rng.integers(2))
    sides = torch.where(torch.from_numpy(rng.random(task.cues) < task.p), majority, 1 - majority)
    rates = torch.full((task.T, task.groups), task.background)
    for k, side in enumerate(sides.tolist()):
        rates[k * task.spacing:k * task.spacing + task.cue, side] = task.rate
    rates[-task.recall:, 2] = task.rate
    rates[:, 3] = task.noise
    return reference_poisson(rates, task.per_group, task.dt, rng), int(2 * int(sides.sum()) > task.cues)


def rate(function, seconds: float, per_call: int) -> float:
    """Calls of ``function`` for about ``seconds`` (after one warm-up call): samples/s."""
    function()
    calls, start = 0, time.perf_counter()
    while calls < 2 or time.perf_counter() - start < seconds:
        function()
        calls += 1
    return calls * per_call / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="store_recall_adex")
    parser.add_argument("--seconds", type=float, default=10.0, help="time per measurement")
    parser.add_argument("--reference", action="store_true", help="also time the replaced generator")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    overrides = [f"experiment={args.experiment}", *(QUICK if args.quick else [])]
    with initialize_config_dir(CONF, version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    torch.manual_seed(0)
    net = build_from_config(OmegaConf.to_container(cfg.model, resolve=True), "model")
    optimizer = instantiate(cfg.optimizer)(params=net.parameters())
    data = build_from_config(OmegaConf.to_container(cfg.dataset, resolve=True), "dataset")
    B = data.batch_size
    x, y = next(iter(data.train_dataloader()))

    def step(batch=(x, y)) -> None:
        optimizer.zero_grad()
        F.cross_entropy(net(batch[0]), batch[1]).backward()
        optimizer.step()

    def loop(workers: int) -> float:
        data.num_workers = workers
        loader = data.train_dataloader()
        batches = iter(loader)
        next(batches)  # workers started
        return rate(lambda: step(next(batches)), args.seconds, B)

    dataset = data.datasets["train"]
    batches = iter(data.train_dataloader())

    def generate() -> None:
        nonlocal batches
        try:
            next(batches)
        except StopIteration:  # a new epoch
            batches = iter(data.train_dataloader())
            next(batches)

    results = {"generate": rate(generate, args.seconds, B), "step": rate(step, args.seconds, B)}
    if args.reference:
        results["generate (before)"] = rate(  # with default_collate's torch.stack, as before
            lambda: default_collate([reference_sample(dataset.task, sample_rng(0, "train", i)) for i in range(B)]),
            args.seconds, B)
    results["loop w0"], results["loop w1"] = loop(0), loop(1)
    print(f"{args.experiment}: B = {B}, T = {data.T}, {data.input_shape[1]} inputs, "
          f"{torch.get_num_threads()} torch threads")
    for name, value in results.items():
        print(f"  {name:18s} {value:9.1f} samples/s   {value / results['step']:5.2f}x the step")
    return results


if __name__ == "__main__":
    main()
