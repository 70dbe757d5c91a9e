"""Two CPU processes (DDP over gloo) train what one process trains, and write one set of outputs.

What makes the two runs "the same": the seed, the global batch (2 processes x 32 = 1 x 64) and the
samples in each step. Lightning always shuffles training data under DDP with a
``DistributedSampler`` seeded by the global seed and the epoch, which hands rank r the entries
``r, r + R, r + 2R, ...`` of one permutation. The single-process run therefore runs under the same
strategy with one device (``trainer=ddp trainer.devices=1``, R = 1): its step k takes entries
``[64k, 64k + 64)`` of the same permutation, exactly the union of the two ranks' step-k batches
(384 training samples split into whole batches, no padding). DDP averages the ranks' mean-loss
gradients, which is the gradient of the 64-sample mean loss. Constant-current input, no dropout and
no batch norm leave no per-process randomness or statistics, so the runs differ only by
floating-point summation order, which a spiking threshold or Adam's first steps can amplify a
little. Validation (128 samples, 64 per rank) is reduced across the processes by torchmetrics, so
accuracies and spike statistics cover the whole validation set in both runs.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from snn.training import load_checkpoint

ROOT = Path(__file__).parents[1]
COMMON = ["dataset=synthetic", "model.T=8", "model.hidden=24", "model.conv=null",
          "model.encoder.scale=3.0", "trainer.max_epochs=3", "trainer.accelerator=cpu", "test=false",
          "callbacks.spike_raster.every_n_epochs=1", "callbacks.progress_bar=null",
          # SGD: Adam normalises near-zero gradients to full steps and so amplifies summation-order noise.
          "optimizer._target_=torch.optim.SGD", "optimizer.lr=0.5", "+optimizer.momentum=0.9"]


def scalars(run: Path) -> dict[str, list[float]]:
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    return {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def run(tmp_path: Path, run_dir: Path, devices: int, batch_size: int) -> str:
    return train_py(*COMMON, "trainer=ddp", f"trainer.devices={devices}", f"dataset.batch_size={batch_size}",
                    f"hydra.run.dir={run_dir}", f"paths.data_dir={tmp_path}")


def train_py(*args: str) -> str:
    result = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    return result.stdout + result.stderr


@pytest.mark.slow
def test_two_cpu_processes_match_one_process_and_write_one_set_of_outputs(tmp_path):
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    assert "Starting with 1 processes" in run(tmp_path, single, devices=1, batch_size=64)
    output = run(tmp_path, ddp, devices=2, batch_size=32)
    assert "distributed_backend=gloo" in output and "Starting with 2 processes" in output

    # One set of outputs: rank 0's checkpoints, one event file, one .hydra, images once per epoch.
    names = sorted(p.name for p in (ddp / "checkpoints").iterdir())
    assert len(names) == 2 and names[0].startswith("epoch_") and names[1] == "last.ckpt", names
    assert len(list((ddp / "tensorboard").glob("events.out.tfevents.*"))) == 1
    outputs = sorted(p.name for p in ddp.iterdir() if not p.name.endswith(".log"))
    assert outputs == [".hydra", "checkpoints", "tensorboard"]
    images = EventAccumulator(str(ddp / "tensorboard"), size_guidance={"images": 0}).Reload()
    assert len(images.Images("spikes/raster")) == 3

    logged_single, logged_ddp = scalars(single), scalars(ddp)
    assert len(logged_ddp["val/acc"]) == len(logged_single["val/acc"]) == 3
    single_acc, ddp_acc = max(logged_single["val/acc"]), max(logged_ddp["val/acc"])
    print(f"val/acc per epoch: 1 process {logged_single['val/acc']}, 2 processes {logged_ddp['val/acc']}")
    assert single_acc > 0.5  # it learned something, so agreement is not agreement at chance
    # After one epoch the runs are still equal up to rounding; every validation number (reduced
    # over both processes' halves of the validation set) must match.
    assert abs(logged_ddp["val/acc"][0] - logged_single["val/acc"][0]) <= 1 / 128
    for tag in ("spikes/hidden1/val_rate", "spikes/hidden1/val_silent", "spikes/hidden1/val_saturated",
                "spikes/hidden1/train_rate", "spikes/hidden1/train_silent"):
        assert logged_ddp[tag][0] == pytest.approx(logged_single[tag][0], abs=2e-3), tag
    # Later, rounding differences flip the odd spike and the runs drift apart a little.
    assert abs(ddp_acc - single_acc) <= 3 / 128

    steps = [load_checkpoint(run / "checkpoints" / "last.ckpt")["global_step"] for run in (single, ddp)]
    assert steps == [3 * 6, 3 * 6]  # the same number of (global) optimizer steps


@pytest.mark.slow
def test_cpu_ddp_as_a_user_types_it(tmp_path):
    """The default model normalises its conv features with batch norm; trainer=ddp syncs the batch
    statistics across processes, which torch does on GPUs only: on the CPU it is turned off."""
    output = train_py("trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "dataset=synthetic", "debug=fdr",
                      "model.T=4", f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path}")
    assert "Starting with 2 processes" in output and "trainer.sync_batchnorm is off" in output
    assert "intra-op thread(s) per process (" in output  # the rule of snn.training.run.threads, said once
