r"""Memory tasks generated from a seed: STORE-RECALL and evidence (cue) accumulation.

Both are two-class sequence tasks whose answer lies seconds in the past, where plain LIF networks
fail and networks with spike-frequency adaptation succeed (the papers below). Inputs are Poisson
spike trains of groups of ``neurons_per_group`` input neurons; a group "fires" at ``rate_hz``
while its symbol is shown and at ``background_hz`` otherwise. One step is ``dt`` seconds; all
durations are given in milliseconds and must be whole numbers of steps.

**STORE-RECALL** (after Salaj et al. 2021, eLife, "Spike frequency adaptation supports network
computations on temporally dispersed information"; one-dimensional version). A trial is
``frames`` frames of ``frame_ms``. Four input groups: STORE, RECALL, value 0, value 1. Every frame
but the last shows a random bit (its value group fires); one frame ``s`` also carries the STORE
command; the last frame carries the RECALL command and no value. The label is the bit shown with
STORE. ``s`` is drawn uniformly from the frames that leave at least ``min_delay_frames`` frames
(of distractor bits) before the recall, so the delay varies from trial to trial: the network
has to keep the stored bit and ignore every later one. Classifiers read the answer during the
recall frame (``model.decoder=mean_last``, ``decoder_steps`` = one frame).

**Evidence accumulation** (after Bellec et al. 2020, Nature Communications, "A solution to the
learning dilemma for recurrent networks of spiking neurons", the e-prop cue task). Four input
groups: LEFT cue, RIGHT cue, RECALL, and background noise (which fires at ``noise_hz``
throughout). ``cues`` cues of ``cue_ms`` each start every ``cue_spacing_ms``; a trial's
majority side is drawn fairly and each cue falls on that side with probability
``majority_probability``. After a ``delay_ms`` pause the RECALL group fires for ``recall_ms``. The
label is the side that got more cues (0 left, 1 right; ``cues`` is odd, so there is no tie).

Determinism: sample ``i`` of a split is drawn from its own generator, seeded by ``(seed, split,
i)``; every process of a DDP run therefore sees the same data set (samplers shard the indices),
validation and test sets are fixed, and no sample depends on the order of loading. Batches are
``(x [B, T, F], y [B])`` with float spikes: ``T`` and ``input_shape`` in the config must be what the
task gives (checked), and ``encoder: events`` tells the models the input already has a time axis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .limits import check_elements

SPLITS = {"train": 0, "val": 1, "test": 2}


def steps(ms: float, dt: float, what: str) -> int:
    """``ms`` milliseconds as a whole number of steps of ``dt`` seconds (a ValueError otherwise)."""
    n = ms * 1e-3 / dt
    if ms < 0 or abs(n - round(n)) > 1e-6:
        raise ValueError(f"{what} = {ms} ms is not a whole number of steps of dt = {dt * 1e3:g} "
                         "ms; choose durations that are multiples of dt.")
    return round(n)


def poisson_groups(rates_hz: torch.Tensor | np.ndarray, per_group: int, dt: float,
                   rng: np.random.Generator) -> torch.Tensor:
    """Spikes of ``per_group`` independent Poisson neurons per group: ``rates [T, G]`` (Hz) ->
    ``[T, G * per_group]`` floats in {0, 1}, group g's neurons in columns ``g * per_group ...``.

    A neuron spikes at step t when its uniform draw (float64, one per neuron and step, drawn row by
    row) is below ``rate * dt`` (float32). In numpy throughout: torch's element-wise operations run on
    its thread pool, which the training step keeps busy (on a loaded machine each one waits for it)."""
    p = np.clip(np.asarray(rates_hz, dtype=np.float32) * np.float32(dt), 0.0, 1.0)  # [T, G]
    steps_, groups = p.shape
    draws = rng.random((steps_, groups, per_group))  # the [T, G * per_group] draws, row by row
    return torch.from_numpy((draws < p[:, :, None]).astype(np.float32).reshape(steps_, groups * per_group))


class StoreRecall:
    """The STORE-RECALL task (see the module docstring); ``sample(rng) -> (x [T, F], y)``."""

    groups = 4  # STORE, RECALL, value 0, value 1

    def __init__(self, dt: float = 0.001, neurons_per_group: int = 10, frame_ms: float = 100.0,
                 frames: int = 10, min_delay_frames: int = 2, rate_hz: float = 50.0,
                 background_hz: float = 0.0):
        if (not isinstance(frames, int) or not isinstance(min_delay_frames, int)
                or min_delay_frames < 0):
            raise ValueError(f"frames and min_delay_frames must be ints (min_delay_frames >= 0), "
                             f"got {frames!r} and {min_delay_frames!r}.")
        if frames < min_delay_frames + 2:
            raise ValueError(f"frames = {frames} leaves no room for a STORE frame, "
                             f"{min_delay_frames} delay frames and the RECALL frame: use frames >= "
                             f"{min_delay_frames + 2}.")
        check_rates(neurons_per_group, rate_hz, background_hz)
        self.dt, self.per_group, self.frames = dt, neurons_per_group, frames
        self.min_delay = min_delay_frames
        self.frame = steps(frame_ms, dt, "frame_ms")
        if self.frame < 1:
            raise ValueError(f"frame_ms must be at least one step (dt = {dt * 1e3:g} ms), "
                             f"got {frame_ms}.")
        self.rate, self.background = float(rate_hz), float(background_hz)
        self.T, self.features = frames * self.frame, self.groups * neurons_per_group

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        bits = rng.integers(2, size=self.frames - 1)  # one per non-recall frame
        store = int(rng.integers(self.frames - 1 - self.min_delay))
        active = np.zeros((self.frames, self.groups), dtype=bool)  # [frames, groups]
        active[store, 0] = True
        active[-1, 1] = True
        active[np.arange(self.frames - 1), 2 + bits] = True
        rates = np.where(active, np.float32(self.rate), np.float32(self.background))  # [frames, groups] (Hz)
        rates = np.repeat(rates, self.frame, axis=0)  # -> [T, groups]
        return poisson_groups(rates, self.per_group, self.dt, rng), int(bits[store])


class CueAccumulation:
    """The evidence-accumulation task (see the module docstring); ``sample(rng)`` gives
    ``(x [T, F], y)``."""

    groups = 4  # LEFT, RIGHT, RECALL, noise

    def __init__(self, dt: float = 0.001, neurons_per_group: int = 10, cues: int = 7,
                 cue_ms: float = 100.0, cue_spacing_ms: float = 150.0, delay_ms: float = 1050.0,
                 recall_ms: float = 150.0, rate_hz: float = 40.0, noise_hz: float = 10.0,
                 background_hz: float = 0.0, majority_probability: float = 0.7):
        if not isinstance(cues, int) or cues < 1 or cues % 2 == 0:
            raise ValueError(f"cues must be an odd int >= 1 (so one side always has more), "
                             f"got {cues!r}.")
        if not 0.5 <= majority_probability <= 1.0:
            raise ValueError(f"majority_probability must be in [0.5, 1], "
                             f"got {majority_probability!r}.")
        check_rates(neurons_per_group, rate_hz, background_hz, noise_hz)
        self.cue = steps(cue_ms, dt, "cue_ms")
        self.spacing = steps(cue_spacing_ms, dt, "cue_spacing_ms")
        if not 1 <= self.cue <= self.spacing:
            raise ValueError(f"Need 0 < cue_ms <= cue_spacing_ms (cues must not overlap), "
                             f"got {cue_ms} and {cue_spacing_ms}.")
        self.delay, self.recall = steps(delay_ms, dt, "delay_ms"), steps(recall_ms, dt, "recall_ms")
        if self.recall < 1:
            raise ValueError(f"recall_ms must be at least one step, got {recall_ms}.")
        self.dt, self.per_group, self.cues = dt, neurons_per_group, cues
        self.p = float(majority_probability)
        self.rate, self.noise = float(rate_hz), float(noise_hz)
        self.background = float(background_hz)
        self.T = cues * self.spacing + self.delay + self.recall
        self.features = self.groups * neurons_per_group

    def sample(self, rng: np.random.Generator) -> tuple[torch.Tensor, int]:
        majority = int(rng.integers(2))
        on_majority = rng.random(self.cues) < self.p
        sides = np.where(on_majority, majority, 1 - majority)  # [cues]: 0 left, 1 right
        rates = np.full((self.T, self.groups), self.background, dtype=np.float32)
        for k, side in enumerate(sides.tolist()):
            rates[k * self.spacing:k * self.spacing + self.cue, side] = self.rate
        rates[-self.recall:, 2] = self.rate
        rates[:, 3] = self.noise
        return (poisson_groups(rates, self.per_group, self.dt, rng),
                int(2 * int(sides.sum()) > self.cues))


def check_rates(per_group: Any, *rates_hz: float) -> None:
    if not isinstance(per_group, int) or per_group < 1:
        raise ValueError(f"neurons_per_group must be an int >= 1, got {per_group!r}.")
    if any(not r >= 0 for r in rates_hz):
        raise ValueError(f"Firing rates must be >= 0 Hz, got {list(rates_hz)}.")


def sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of sample ``index`` of ``split``: numpy's PCG64 seeded by the entropy
    ``(seed, split, index)``, independent streams for distinct triples. (A torch generator keeps
    only 32 bits of its seed: samples of different splits would collide.)"""
    return np.random.default_rng([int(seed), SPLITS[split], int(index)])


class GeneratedDataset(Dataset):
    """``n`` samples of ``task``; sample ``i`` is drawn from ``sample_rng(seed, split, i)``, so it
    is the same whenever and wherever it is loaded."""

    def __init__(self, task: Any, n: int, seed: int, split: str):
        self.task, self.n, self.seed, self.split = task, n, seed, split

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if not 0 <= i < self.n:
            raise IndexError(f"sample {i} of a {self.split} set of {self.n}")
        return self.task.sample(sample_rng(self.seed, self.split, i))


def stack_samples(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[(x [T, F], y), ...]`` -> ``(x [B, T, F], y [B])``, stacked in numpy: ``default_collate``'s
    ``torch.stack`` runs on torch's thread pool, which the training step keeps busy, and then waits
    for it many times longer than numpy's copy takes (benchmarks/RESULTS.md, memory-task loaders)."""
    x = np.stack([sample.numpy() for sample, _ in batch])  # B x [T, F] -> [B, T, F]
    return torch.from_numpy(x), torch.tensor([label for _, label in batch], dtype=torch.long)


class MemoryTaskDataModule(L.LightningDataModule):
    """Train/val/test sets of a generated task (``task_class`` with ``task`` options).

    Args:
        T, input_shape: what the task gives (``T`` steps, ``[T, features]``), stated in the config
            so models can read them; a mismatch is an error that names the right values.
        num_classes: 2 (both tasks are binary).
        encoder: ``events`` (batches already have a time axis).
        num_train, num_val, num_test: samples per split; seed: the data set's seed (not the run's).
        dt: step size (s): the model's ``dt`` must be the same.
        task: the task's options (``StoreRecall`` / ``CueAccumulation`` arguments other than dt).
    """

    task_class: type = StoreRecall
    name = "memory task"

    def __init__(self, T: int, input_shape: Sequence[int], num_classes: int = 2,
                 encoder: str = "events", dt: float = 0.001, num_train: int = 4096,
                 num_val: int = 512, num_test: int = 1024, seed: int = 0, batch_size: int = 64,
                 num_workers: int = 0, pin_memory: bool | None = None,
                 task: dict[str, Any] | None = None):
        super().__init__()
        if encoder != "events":
            raise ValueError(f"{self.name} batches have a time axis: dataset.encoder must be "
                             f"'events', got {encoder!r}.")
        if num_classes != 2:
            raise ValueError(f"{self.name} has 2 classes, the config says num_classes = "
                             f"{num_classes}.")
        if not isinstance(dt, int | float) or not dt > 0:
            raise ValueError(f"dt must be a positive step size in seconds, got {dt!r}.")
        for name, n in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test),
                        ("batch_size", batch_size)):
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"{name} must be a positive int, got {n!r}.")
        self.task = self.task_class(dt=float(dt), **dict(task or {}))
        expected = (self.task.T, self.task.features)
        if T != self.task.T or tuple(input_shape) != expected:
            raise ValueError(
                f"{self.name}: T = {T} and input_shape = {list(input_shape)} do not match the task "
                f"options, which give T = {self.task.T} steps of {self.task.features} inputs; set "
                f"dataset.T={self.task.T} (input_shape follows it: [${{..T}}, "
                f"{self.task.features}])."
            )
        self.T, self.input_shape, self.num_classes, self.dt = T, expected, 2, float(dt)
        # Samples are drawn when loaded: the largest arrays are one sample's uniform draws (float64),
        # one batch, and the shuffled order of the training indices (int64).
        check_elements(expected, 8, f"One {self.name} sample ({self.task.T} steps of {self.task.features} "
                       "inputs, drawn as float64)", "shorten the trial (dataset.task) or reduce "
                       "neurons_per_group, and set dataset.T to match")
        check_elements((batch_size, *expected), 4, f"A batch of {batch_size} {self.name} samples",
                       "reduce dataset.batch_size or the trial length")
        for name, n in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            check_elements((n,), 8, f"The sample order of {name}={n}", f"reduce dataset.{name}")
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.seed, self.batch_size, self.num_workers = int(seed), batch_size, num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.datasets: dict[str, GeneratedDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        # Nothing is drawn here: samples are generated when loaded, from their own seeds.
        self.datasets = {split: GeneratedDataset(self.task, n, self.seed, split)
                         for split, n in self.sizes.items()}

    def _loader(self, split: str) -> DataLoader:
        if not self.datasets:
            self.setup()
        return DataLoader(self.datasets[split], batch_size=self.batch_size,
                          shuffle=split == "train", num_workers=self.num_workers,
                          pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0,
                          collate_fn=stack_samples)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class StoreRecallDataModule(MemoryTaskDataModule):
    """STORE-RECALL (module docstring): ``task`` takes ``StoreRecall``'s options."""

    task_class = StoreRecall
    name = "STORE-RECALL"


class CueAccumulationDataModule(MemoryTaskDataModule):
    """Evidence accumulation (module docstring): ``task`` takes ``CueAccumulation``'s options."""

    task_class = CueAccumulation
    name = "cue accumulation"

