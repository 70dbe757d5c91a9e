"""Every array a fresh run's config sizes (T, hidden sizes, conv channels, input shape, batch size) is
estimated before the first allocation and checked against SNN_MAX_ALLOC_GB (snn.models.footprint,
snn.training.preflight.check_config_sizes)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from omegaconf import OmegaConf

from snn.data.limits import SizeLimitError
from snn.models import SpikingClassifier, SpikingConvClassifier, SpikingSequenceClassifier
from snn.models.footprint import build_on_meta, model_footprint
from snn.training.run.preflight import check_config_sizes
from tests.helpers import ROOT, compose_config

# The probe's cases (issue 29): overrides -> what the refusal must name (the key and the array).
CASES = {
    "T 1e9": (["dataset=synthetic", "model.T=1000000000"], r"model\.T=1000000000.*\[1000000000, 64, 128\]"),
    "hidden 1e8": (["dataset=synthetic", "model.hidden=100000000"], r"model\.hidden=100000000"),
    "hidden 40000 x 2": (["dataset=synthetic", "model.hidden=[40000,40000]"],
                         r"model\.hidden=\[40000,40000\].*weight linear\.1\.weight \[40000, 40000\]"),
    "input 1e5 x 1e5": (["dataset=synthetic", "dataset.input_shape=[1,100000,100000]"],
                        r"dataset\.input_shape=\[1,100000,100000\]"),
    "conv channels 1e5": (["dataset=synthetic", "model.conv.channels=[100000,100000]"],
                          r"model\.conv\.channels=\[100000,100000\].*conv\.1\.0\.weight \[100000, 100000, 5, 5\]"),
    "store-recall hidden 1e6": (["dataset=store_recall", "model=radex", "model.hidden=[1000000]"],
                                r"model\.hidden=\[1000000\].*recurrent_weights \[1000000, 1000000\]"),
    "batch 1e8": (["dataset=synthetic", "dataset.batch_size=100000000"], r"dataset\.batch_size=100000000"),
}

# Runs train.train on every case in one process whose address space is capped (ulimit -v): a
# regression that allocates fails there with an error instead of swapping the machine. Python and
# the imports take ~4 GiB of address space; the cap leaves 4 GiB more, less than any case asks.
SCRIPT = textwrap.dedent("""
    import json, sys, tempfile
    from pathlib import Path
    from tests.helpers import make_cfg
    from snn.errors import ConfigError
    from snn.training.run import run as train
    results = {}
    for name, overrides in json.loads(sys.argv[1]).items():
        try:
            train(make_cfg(Path(tempfile.mkdtemp()), *overrides))
            results[name] = "ran"
        except ConfigError as error:
            results[name] = "ConfigError: " + str(error)
        except BaseException as error:
            results[name] = f"{type(error).__name__}: {error}"[:2000]
    print("RESULTS " + json.dumps(results))
""")


def test_the_probes_sizes_are_refused_before_allocating_under_a_memory_cap(tmp_path):
    cases = {name: overrides for name, (overrides, _) in CASES.items()}
    env = {**os.environ, "SNN_MAX_ALLOC_GB": "4", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(["bash", "-c", 'ulimit -v 8388608 && exec "$0" -c "$1" "$2"', sys.executable, SCRIPT,
                          json.dumps(cases)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULTS ")]
    assert lines, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(lines[0][len("RESULTS "):])
    for name, (_, named) in CASES.items():
        message = results[name]
        assert message.startswith("ConfigError: The config's sizes"), (name, message)
        assert "more than the 4 GiB allowed" in message and "SNN_MAX_ALLOC_GB" in message, (name, message)
        assert "nothing was allocated" in message, (name, message)
        assert re.search(named, message), (name, named, message)


def test_the_limit_is_the_environment_variable(monkeypatch):
    """hidden=[40000, 40000] (a 6 GiB weight) passes the check once SNN_MAX_ALLOC_GB allows it;
    the default configs pass under the default limit."""
    cfg = compose_config("dataset=synthetic", "model.hidden=[40000,40000]")
    model = OmegaConf.to_container(cfg.model, resolve=True)
    with pytest.raises(SizeLimitError, match=r"linear\.1\.weight \[40000, 40000\] would allocate 6\.0 GiB"):
        check_config_sizes(cfg, model)
    monkeypatch.setenv("SNN_MAX_ALLOC_GB", "7")
    check_config_sizes(cfg, model)
    monkeypatch.delenv("SNN_MAX_ALLOC_GB")
    for overrides in ([], ["dataset=synthetic"], ["dataset=store_recall", "model=radex"],
                      ["experiment=shd_adex"], ["experiment=dvs_gesture_adex"]):
        cfg = compose_config(*overrides)
        check_config_sizes(cfg, OmegaConf.to_container(cfg.model, resolve=True))


@pytest.mark.parametrize("build", [
    lambda: SpikingClassifier((1, 12, 12), 3, T=5, conv={"channels": [2, 4]}, hidden=[7, 6]),
    lambda: SpikingClassifier((4, 2, 6, 6), 3, T=4, encoder={"kind": "events"}, hidden=9),
    lambda: SpikingClassifier((1, 8, 8), 3, T=5, encoder={"kind": "poisson"}, hidden=5),
    lambda: SpikingConvClassifier((2, 12, 12), 3, T=3, conv={"channels": [3, 5]}, hidden=8),
    lambda: SpikingSequenceClassifier((6, 4), 3, hidden=[7, 5], feedforward=True),
], ids=["classifier", "events", "poisson", "conv", "sequence"])
def test_the_meta_estimate_matches_a_real_model(build):
    """Weights: every parameter and buffer of the real model, same shapes. Neurons per sample of each
    spiking layer (and the readout): what the real forward's layers output per step and sample."""
    torch.manual_seed(0)
    real = build()
    footprint = model_footprint(build_on_meta(build))
    assert footprint.weights == {n: tuple(t.shape) for n, t in [*real.named_parameters(), *real.named_buffers()]}
    seen = {}
    layers = {**real.spiking_layers(), "readout": real.readout}
    for name, layer in layers.items():
        layer.register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, out[0].shape))
    real(torch.rand(2, *real.input_shape))
    assert footprint.T == real.T
    assert footprint.neurons == {name: shape[2:].numel() for name, shape in seen.items()}
    assert all(shape[0] == real.T for shape in seen.values())
