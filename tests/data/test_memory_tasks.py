"""Memory tasks (snn/data/memory_tasks.py): the task definitions, determinism, DDP shards, the
recipes' short training runs."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DistributedSampler, default_collate

from snn.data.limits import SizeLimitError
from snn.data.memory_tasks import (
    CueAccumulation,
    StoreRecall,
    StoreRecallDataModule,
    poisson_groups,
    sample_rng,
    stack_samples,
    steps,
)
from snn.training.run import build
from snn.training.run import run as train
from tests.helpers import ROOT, fit_and_recheck, make_cfg

# A small STORE-RECALL: 6 frames of 10 ms (T = 60), 4 groups of 5 inputs.
SMALL_STORE_RECALL = ["dataset.T=60", "dataset.input_shape=[60,20]", "dataset.task.frame_ms=10",
                      "dataset.task.frames=6", "dataset.task.neurons_per_group=5",
                      "dataset.task.min_delay_frames=1", "model.decoder_steps=10"]
SMALL_CUES = ["dataset.T=80", "dataset.input_shape=[80,20]", "dataset.task.neurons_per_group=5",
              "dataset.task.cues=3", "dataset.task.cue_ms=10", "dataset.task.cue_spacing_ms=15",
              "dataset.task.delay_ms=20", "dataset.task.recall_ms=15", "model.decoder_steps=15"]


def store_recall(**task) -> StoreRecallDataModule:
    t = StoreRecall(**task)
    dm = StoreRecallDataModule(T=t.T, input_shape=(t.T, t.features), num_train=32, num_val=8,
                               num_test=8, batch_size=8, task=task)
    dm.setup()
    return dm


# --- Task definitions --------------------------------------------------------------------------

def test_store_recall_sample_follows_the_task_definition():
    # 1000 Hz at dt = 1 ms: a group showing its symbol spikes at every step, so x is the schedule.
    task = StoreRecall(neurons_per_group=2, frame_ms=3, frames=7, min_delay_frames=2,
                       rate_hz=1000.0)
    stores = set()
    for seed in range(40):
        x, label = task.sample(np.random.default_rng(seed))
        assert x.shape == (21, 8)
        frames = x.view(7, 3, 4, 2)  # [frame, step in frame, group, neuron]
        assert torch.all(frames == frames[:, :1, :, :1])  # constant over each frame and group
        on = frames[:, 0, :, 0]  # [frames, groups]: STORE, RECALL, value 0, value 1
        store = int(on[:, 0].nonzero().squeeze())
        stores.add(store)
        assert on[:, 0].sum() == 1 and store <= 7 - 2 - 2  # min_delay_frames before the recall
        assert on[:, 1].tolist() == [0] * 6 + [1]  # RECALL only in the last frame
        assert on[:-1, 2:].sum(dim=1).tolist() == [1] * 6 and on[-1, 2:].sum() == 0
        assert label == int(on[store, 3])  # the bit shown with STORE
    assert stores == {0, 1, 2, 3}  # every allowed STORE frame occurs: the delay varies


def test_cue_accumulation_sample_follows_the_task_definition():
    task = CueAccumulation(neurons_per_group=1, cues=5, cue_ms=2, cue_spacing_ms=3, delay_ms=4,
                           recall_ms=2, rate_hz=1000.0, noise_hz=1000.0, majority_probability=0.5)
    labels = []
    for seed in range(40):
        x, label = task.sample(np.random.default_rng(seed))
        assert x.shape == (5 * 3 + 4 + 2, 4)
        left, right, recall, noise = x.T
        assert torch.all(noise == 1) and recall.tolist() == [0] * 19 + [1, 1]
        cues = x[:15, :2].view(5, 3, 2)  # [cue, step, side]
        assert torch.all(cues[:, 2] == 0) and torch.all(cues[:, 0] == cues[:, 1])  # 2 on, 1 off
        assert torch.all(cues[:, 0].sum(dim=1) == 1)  # each cue on exactly one side
        assert torch.all(x[15:, :2] == 0)  # silent pause and recall
        assert label == int(cues[:, 0, 1].sum() > 2)  # the side with more cues
        labels.append(label)
    assert 10 < sum(labels) < 30


def test_majority_probability_sets_how_often_cues_fall_on_the_majority_side():
    task = CueAccumulation(neurons_per_group=1, cues=7, cue_ms=1, cue_spacing_ms=1, delay_ms=0,
                           recall_ms=1, rate_hz=1000.0, majority_probability=0.9)
    agree = []
    for seed in range(300):
        x, label = task.sample(np.random.default_rng(seed))
        agree.append(float(x[:7, label].mean()))  # fraction of cues on the winning side
    # P(cue on the winning side) is at least 0.9 (and a bit more: a draw can flip the majority).
    assert 0.88 < sum(agree) / len(agree) < 0.95


def test_poisson_groups_fire_at_their_rates():
    rates = torch.tensor([[20.0, 0.0, 300.0]]).expand(20000, 3)
    x = poisson_groups(rates, 2, 0.001, np.random.default_rng(0))
    assert x.shape == (20000, 6)
    torch.testing.assert_close(x.mean(dim=0), torch.tensor([0.02, 0.02, 0, 0, 0.3, 0.3]),
                               atol=0.01, rtol=0)


def test_durations_must_be_whole_steps_and_config_must_match_the_task():
    assert steps(150, 0.001, "x") == 150 and steps(150, 0.005, "x") == 30
    with pytest.raises(ValueError, match="not a whole number of steps"):
        steps(2.5, 0.001, "frame_ms")
    with pytest.raises(ValueError, match=r"set dataset.T=60 .*\[\$\{..T\}, 20\]"):
        StoreRecallDataModule(T=50, input_shape=(50, 20), task={"frame_ms": 10, "frames": 6,
                                                                  "neurons_per_group": 5})
    with pytest.raises(ValueError, match="odd"):
        CueAccumulation(cues=4)
    with pytest.raises(ValueError, match="no room"):
        StoreRecall(frames=3, min_delay_frames=2)


# --- Determinism and DDP -----------------------------------------------------------------------

def test_same_seed_same_samples_in_any_order_and_process():
    task = {"frame_ms": 10, "frames": 6, "neurons_per_group": 5}
    a, b = store_recall(**task), store_recall(**task)  # two "processes"
    for split in ("train", "val", "test"):
        first = [a.datasets[split][i] for i in range(8)]
        backwards = [b.datasets[split][i] for i in reversed(range(8))][::-1]
        for (xa, ya), (xb, yb) in zip(first, backwards, strict=True):
            assert torch.equal(xa, xb) and ya == yb
    # Splits differ, and another data-set seed gives other samples.
    assert not torch.equal(a.datasets["val"][0][0], a.datasets["test"][0][0])
    other = StoreRecallDataModule(T=60, input_shape=(60, 20), seed=1, task=task)
    other.setup()
    assert not torch.equal(other.datasets["val"][0][0], a.datasets["val"][0][0])
    # Validation batches are fixed: two passes give the same tensors.
    x1, y1 = next(iter(a.val_dataloader()))
    x2, y2 = next(iter(a.val_dataloader()))
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and x1.shape == (8, 60, 20)


def test_ddp_shards_hold_distinct_samples():
    dm = store_recall(frame_ms=10, frames=6, neurons_per_group=5)
    train_set = dm.datasets["train"]
    shards = [list(DistributedSampler(train_set, num_replicas=2, rank=r, shuffle=True, seed=3))
              for r in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 16
    assert set(shards[0]).isdisjoint(shards[1])
    assert set(shards[0]) | set(shards[1]) == set(range(32))
    x0 = torch.stack([train_set[i][0] for i in shards[0]])
    x1 = torch.stack([train_set[i][0] for i in shards[1]])
    assert not any(torch.equal(a, b) for a in x0 for b in x1)


# --- Recipes and training ----------------------------------------------------------------------

@pytest.mark.parametrize("experiment,small", [
    ("store_recall_adex", SMALL_STORE_RECALL), ("store_recall_lif", SMALL_STORE_RECALL),
    ("cue_accumulation_adex", SMALL_CUES), ("cue_accumulation_lif", SMALL_CUES)])
def test_memory_recipes_run_a_few_steps(tmp_path, monkeypatch, experiment, small):
    cfg = make_cfg(tmp_path, f"experiment={experiment}", "debug=fdr", "model.hidden=[12]", *small)
    fit_and_recheck(cfg, monkeypatch)  # the reported accuracy is the recurrent model's on its task


def test_small_store_recall_network_trains_above_chance(tmp_path):
    # 4 frames of 20 ms: STORE in frame 0 or 1, RECALL in frame 3 (>= 1 distractor frame).
    cfg = make_cfg(tmp_path, "experiment=store_recall_adex", "dataset.T=80",
                   "dataset.input_shape=[80,40]", "dataset.task.frame_ms=20",
                   "dataset.task.frames=4", "dataset.task.min_delay_frames=1",
                   "dataset.task.neurons_per_group=10", "model.decoder_steps=20",
                   "model.hidden=[32]", "dataset.num_train=1024", "dataset.num_val=256",
                   "dataset.num_test=256", "dataset.batch_size=32", "trainer.max_epochs=3",
                   "trainer.accelerator=cpu", "logger=none", "callbacks.spike_raster=null",
                   "test=false", "optimizer.lr=1e-2")
    assert train(cfg) > 0.75  # two balanced classes: chance is 0.5


# --- Sizes from the config, checked before anything is allocated ------------------------------

LIMIT = r"SNN_MAX_ALLOC_GB"


def test_an_absurd_trial_length_is_refused_before_the_example_input_is_allocated(tmp_path):
    # 100,000 frames of 100 ms: T = 10^7 steps; the example input alone would be 8 GB.
    cfg = make_cfg(tmp_path, "experiment=store_recall_adex", "dataset.task.frames=100000", "dataset.T=10000000")
    with pytest.raises(SizeLimitError, match=rf"example input \[2, 10000000, 100\].*dataset.T.*{LIMIT}"):
        build(cfg)


@pytest.mark.parametrize("setting, message", [
    ({"num_train": 10**12}, r"sample order of num_train=1000000000000.*reduce dataset.num_train"),
    ({"num_test": 10**12}, r"num_test=1000000000000.*reduce dataset.num_test"),
    ({"batch_size": 10**6}, r"batch of 1000000 .*reduce dataset.batch_size"),
    ({"frames": 100000}, r"One STORE-RECALL sample \(10000000 steps of 100 inputs"),
])
def test_memory_task_sizes_are_checked_against_the_limit_which_the_user_can_raise(monkeypatch, setting, message):
    task = {"neurons_per_group": 25, "frames": setting.pop("frames", 10)}
    T = task["frames"] * 100
    args = dict(T=T, input_shape=(T, 100), task=task, **setting)
    with pytest.raises(SizeLimitError, match=rf"{message}.*{LIMIT}"):
        StoreRecallDataModule(**args)
    monkeypatch.setenv(LIMIT, "1e9")  # raised: nothing is allocated when the module is built
    assert StoreRecallDataModule(**args).T == T
    monkeypatch.setenv(LIMIT, "lots")
    with pytest.raises(ValueError, match=f"{LIMIT}='lots' is not a positive number"):
        StoreRecallDataModule(**args)



# --- Generation: numpy, the same samples as the per-sample torch generator it replaced ---------

TASKS = [
    (StoreRecall, {"neurons_per_group": 25}),
    (StoreRecall, {"dt": 0.0007, "neurons_per_group": 3, "frame_ms": 7, "frames": 5, "min_delay_frames": 1,
                   "rate_hz": 123.4, "background_hz": 3.3}),
    (StoreRecall, {"dt": 0.01, "frame_ms": 50, "rate_hz": 150.0}),  # rate * dt > 1: clamped
    (CueAccumulation, {}),
    (CueAccumulation, {"dt": 0.002, "cues": 3, "rate_hz": 77.7, "noise_hz": 13.1, "background_hz": 1.1,
                       "majority_probability": 0.9}),
]


@pytest.mark.parametrize("cls, options", TASKS)
def test_generated_samples_are_bit_identical_to_the_per_sample_torch_generator(cls, options):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_memory_tasks import reference_sample

    task = cls(**options)
    for i in range(30):
        x, label = task.sample(sample_rng(7, "train", i))
        x_ref, label_ref = reference_sample(task, sample_rng(7, "train", i))
        assert x.dtype == x_ref.dtype == torch.float32 and torch.equal(x, x_ref) and label == label_ref


def test_batches_are_stacked_as_default_collate_would():
    dm = store_recall(frame_ms=10, frames=6, neurons_per_group=5)
    batch = [dm.datasets["train"][i] for i in range(5)]
    x, y = next(iter(dm.train_dataloader()))
    x_ref, y_ref = default_collate(batch)
    x_ours, y_ours = stack_samples(batch)
    assert torch.equal(x_ours, x_ref) and torch.equal(y_ours, y_ref) and y_ours.dtype == y_ref.dtype
    assert x.shape == (8, 60, 20) and x.dtype == torch.float32 and y.dtype == torch.long
