"""Learnable neuron constants in training: their own optimizer group, their histograms (constants
only), and a short STORE-RECALL run in which per-neuron adaptation spreads."""

from __future__ import annotations

import pytest
import torch

from snn.models import SpikingSequenceClassifier
from snn.training import SpikingClassifierModule, load_classifier
from snn.training.monitoring.statistics import learned_constants
from snn.training.run import run as train
from tests.helpers import make_cfg

ADAPTATION = ("tau_ada_inv", "adaptation_current", "adaptation_spike")


# --- training: the optimizer group, histograms ---------------------------------------------------


def sequence_net(learnable=ADAPTATION):
    return {"_target_": "snn.models.SpikingSequenceClassifier", "input_shape": [20, 3], "num_classes": 2,
            "hidden": [8], "tau_ada_range": [0.05, 2.0], "neuron": {"kind": "adex", "learnable": list(learnable)}}


def test_neuron_constants_get_their_own_optimizer_group():
    """Their own learning rate and no weight decay; the weights keep the optimizer's."""
    optimizer = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 2e-3, "weight_decay": 1e-4}
    module = SpikingClassifierModule(net=sequence_net(), optimizer=optimizer, neuron_params={"lr": 0.05})
    weights, constants = module.configure_optimizers().param_groups
    layer = module.net.spiking["recurrent1"]
    assert [id(p) for p in constants["params"]] == [id(p) for p in layer.constant_parameters().values()]
    assert constants["lr"] == 0.05 and constants["weight_decay"] == 0.0 and constants["name"] == "neuron_constants"
    assert weights["lr"] == 2e-3 and weights["weight_decay"] == 1e-4
    assert {id(p) for p in weights["params"]} == {id(p) for p in module.parameters()} - {
        id(p) for p in constants["params"]}
    fixed = SpikingClassifierModule(net=sequence_net(()), optimizer=optimizer, neuron_params={"lr": 0.05})
    assert len(fixed.configure_optimizers().param_groups) == 1  # nothing learnable: one group, as before
    with pytest.raises(ValueError, match=r"neuron_params sets \['learning_rate'\], which AdamW does not take"):
        SpikingClassifierModule(net=sequence_net(), optimizer=optimizer, neuron_params={"learning_rate": 0.05})
    with pytest.raises(ValueError, match=r"neuron_params.lr must be a positive number, got -1"):
        SpikingClassifierModule(net=sequence_net(), optimizer=optimizer, neuron_params={"lr": -1})


def test_histograms_show_the_neuron_constants_only():
    """neuron_params/ holds the learnable constants' values, one per neuron; not the weights."""
    net = SpikingSequenceClassifier(input_shape=(20, 3), num_classes=2, hidden=[8], tau_ada_range=(0.05, 2.0),
                                    neuron={"kind": "adex", "learnable": list(ADAPTATION)},
                                    readout={"learnable": ["tau_mem_inv"]})
    constants = learned_constants(net)
    assert sorted(constants) == sorted([*(f"recurrent1/{n}" for n in ADAPTATION), "readout/tau_mem_inv"])
    layer = net.spiking["recurrent1"]
    assert torch.equal(constants["recurrent1/tau_ada_inv"], layer.tau_ada_inv.detach())
    assert constants["recurrent1/tau_ada_inv"].unique().numel() == 8


# --- they learn ----------------------------------------------------------------------------------

# STORE-RECALL, small: 6 frames of 20 ms (T = 120), 32 neurons, 200 steps of 16 trials.
SMALL = ["experiment=store_recall_adex", "trainer.accelerator=cpu", "logger=none", "callbacks.spike_raster=null",
         "test=false", "dataset.T=120", "dataset.input_shape=[120,40]", "dataset.task.frame_ms=20",
         "dataset.task.frames=6", "dataset.task.min_delay_frames=1", "dataset.task.neurons_per_group=10",
         "model.decoder_steps=20", "model.hidden=[32]", "dataset.num_train=3200", "dataset.num_val=32",
         "dataset.num_test=32", "dataset.batch_size=16", "trainer.max_epochs=1"]


@pytest.mark.slow
def test_store_recall_spreads_per_neuron_adaptation(tmp_path):
    """200 steps of STORE-RECALL with learnable adaptation (Hydra: model.neuron.learnable=[...]):
    every neuron's adaptation time constant moves, the fast ones (~50 ms) as the slow ones (~2 s):
    the median |log(tau / tau_start)| of each half is >= 0.05 (a ~5 % change); the strengths spread
    over the neurons (std of the relative change >= 0.05) in steps sized to them (median relative
    change < 1: they do not flip sign wholesale). With the constants trained in the weights' group
    as plain values, the fast half moved 0.008 and adaptation_spike 130 % in 300 steps."""
    cfg = make_cfg(tmp_path, *SMALL, f"model.neuron.learnable=[{','.join(ADAPTATION)}]")
    assert cfg.neuron_params.weight_decay == 0.0
    train(cfg)
    layer = load_classifier(tmp_path / "checkpoints" / "last.ckpt").spiking["recurrent1"]
    start = layer.tau_ada_inv_init
    moved = torch.log(layer.tau_ada_inv.detach().double() / start).abs()
    fast = start > start.median()
    assert moved[fast].median() >= 0.05 and moved[~fast].median() >= 0.05, (moved[fast], moved[~fast])
    for name in ("adaptation_current", "adaptation_spike"):
        init = getattr(layer, f"{name}_init")
        relative = (getattr(layer, name).detach().double() - init) / init.abs()
        assert relative.std() >= 0.05 and relative.abs().median() < 1.0, (name, relative)
