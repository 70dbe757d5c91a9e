"""The run's log tells how the run went: train.py writes a line per epoch with the epoch's train and
validation metrics and learning rates, then the test results and the best checkpoint -- the numbers
TensorBoard holds, read back from a run's train.log and event files."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import ROOT

RUN = ["dataset=synthetic", "dataset.num_train=256", "dataset.val_size=64", "dataset.num_test=64", "model.T=8",
       "model.hidden=24", "model.conv=null", "model.encoder.scale=3.0", "trainer=cpu", "trainer.max_epochs=3",
       "callbacks.spike_raster=null", "callbacks.progress_bar=null", "model.neuron.learnable=[tau_mem_inv]"]
LINE = re.compile(r"\] - (Epoch (\d+)/(\d+) \(step (\d+)\)|Test \((.+?)\)): (.*)$")


def parse(text: str) -> list[tuple[str, dict[str, float]]]:
    """``[("Epoch 1/3", {"train/acc": 0.5, ...}), ..., ("Test", {...})]`` from train.log; the learning
    rates as ``lr/<group>``."""
    records = []
    for line in text.splitlines():
        found = LINE.search(line)
        if not found:
            continue
        values = {}
        for part in found.group(6).split("; "):
            if part.startswith("lr "):
                part = ", ".join(f"lr/{item}" for item in part[3:].split(", "))
            for item in part.split(", "):
                name, value = item.rsplit(" ", 1)
                values[name] = float(value)
        records.append((found.group(1), values))
    return records


def test_train_log_holds_every_epochs_metrics_then_the_test_and_the_best_checkpoint(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), *RUN], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    (run_dir,) = (tmp_path / "outputs" / "adex-synthetic").iterdir()
    text = (run_dir / "train.log").read_text()
    records = parse(text)
    assert [title for title, _ in records] == ["Epoch 1/3 (step 3)", "Epoch 2/3 (step 6)", "Epoch 3/3 (step 9)",
                                               f"Test ({Path(re.search(r'Best checkpoint .*: (.+)', text)[1]).name})"]
    # The test line comes after the epochs and before the best checkpoint's line.
    assert text.index("] - Test (") < text.index("Best checkpoint (val/acc = ")

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0}).Reload()
    tensorboard = {tag: [e.value for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    epochs = [values for _, values in records[:3]]
    expected_names = {"train/acc", "train/loss_epoch", "val/acc", "val/loss", "spikes/hidden1/val_rate",
                      "lr/weights", "lr/neuron_constants"}
    for k, values in enumerate(epochs):
        assert set(values) == expected_names
        for name, value in values.items():
            tag = name.replace("lr/", "lr-AdamW/")
            assert value == pytest.approx(tensorboard[tag][k], rel=1e-3, abs=1e-12), (k, name)
    assert len({values["train/loss_epoch"] for values in epochs}) == 3  # each epoch its own numbers
    test = records[3][1]
    assert set(test) == {"test/acc", "test/loss", "spikes/hidden1/test_rate"}
    for name, value in test.items():
        assert value == pytest.approx(tensorboard[name][0], rel=1e-3, abs=1e-12), name
