"""TensorBoard monitoring callbacks: every panel is written, and its numbers are the model's."""

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from snn.training import NeuronParameterHistograms, SpikeStatistics, load_classifier
from snn.training.monitoring import NeuronSpikeCounts, flatten_config
from snn.training.run import run as train
from tests.helpers import make_cfg

SMALL = ["dataset=synthetic", "model.T=8", "model.hidden=24", "model.conv=null", "trainer.accelerator=cpu",
         "model.encoder.scale=3.0", "test=false"]


def events(run_dir: Path) -> EventAccumulator:
    size_guidance = {"images": 0, "histograms": 0, "scalars": 0}
    return EventAccumulator(str(run_dir / "tensorboard"), size_guidance=size_guidance).Reload()


def test_neuron_spike_counts_add_up_per_neuron():
    metric = NeuronSpikeCounts(6)
    a = (torch.rand(5, 3, 2, 3) < 0.3).float()  # [T, B, C, N]: neurons are the flattened C*N
    b = (torch.rand(5, 4, 2, 3) < 0.6).float()
    metric.update(a)
    metric.update(b)
    expected = (a.flatten(2).sum((0, 1)) + b.flatten(2).sum((0, 1))) / (5 * 3 + 5 * 4)
    torch.testing.assert_close(metric.compute(), expected.double())
    with pytest.raises(ValueError, match="6 neurons"):
        metric.update(torch.zeros(5, 3, 7))


def test_bad_monitor_settings_are_refused():
    with pytest.raises(ValueError, match=r"subset of \['train', 'val'\]"):
        SpikeStatistics(stages=["test"])
    with pytest.raises(ValueError, match="saturation"):
        SpikeStatistics(saturation=0.0)
    with pytest.raises(ValueError, match="every_n_epochs"):
        NeuronParameterHistograms(every_n_epochs=0)


def test_saturation_counts_neurons_that_spike_in_enough_steps_of_a_sample():
    # 10 steps, 2 samples, 4 neurons. Sample 0: neuron 0 spikes at every step, neuron 1 at 9 of 10,
    # neuron 2 at 8; sample 1: neuron 0 at 9, neuron 3 at every step. At saturation 0.9 (9 of 10
    # steps) neuron 0 saturates on both samples, neurons 1 and 3 on one each: 4 of 8 pairs.
    z = torch.zeros(10, 2, 4)
    z[:, 0, 0] = 1
    z[1:, 0, 1] = 1
    z[2:, 0, 2] = 1
    z[1:, 1, 0] = 1
    z[:, 1, 3] = 1
    metric = NeuronSpikeCounts(4, saturation=0.9)
    metric.update(z)
    torch.testing.assert_close(metric.saturated(), torch.tensor([1.0, 0.5, 0.0, 0.5], dtype=torch.float64))
    assert metric.saturated().mean() == 0.5
    strict = NeuronSpikeCounts(4, saturation=1.0)  # only neurons spiking at every step
    strict.update(z)
    assert strict.saturated().tolist() == [0.5, 0.0, 0.0, 0.5]
    # The rate over both samples would call no neuron but 0 saturated: the per-sample view differs.
    assert (metric.compute() >= 0.9).tolist() == [True, False, False, False]


def test_flatten_config_for_hparams():
    flat = flatten_config({"model": {"T": 8, "neuron": {"learnable": ["tau_mem_inv"], "alpha": 2.0}},
                           "scheduler": None})
    assert flat == {"model/T": 8, "model/neuron/learnable": "['tau_mem_inv']", "model/neuron/alpha": 2.0,
                    "scheduler": "None"}


def test_every_panel_is_written_with_the_models_numbers(tmp_path):
    train(make_cfg(tmp_path, *SMALL, "trainer.max_epochs=2", "model.neuron.learnable=[tau_mem_inv]",
                   "callbacks.spike_raster.every_n_epochs=1", "callbacks.spike_statistics.saturation=0.25",
                   "scheduler=null"))
    ea = events(tmp_path)
    tags = ea.Tags()
    for tag in ("spikes/hidden1/train_neuron_rates", "spikes/hidden1/val_neuron_rates",
                "neuron_params/hidden1/tau_mem_ms"):
        assert tag in tags["histograms"], (tag, tags["histograms"])
    assert [len(ea.Images(t)) for t in ("spikes/raster", "neurons/voltage")] == [2, 2]  # every epoch
    for tag in ("spikes/hidden1/train_rate", "spikes/hidden1/train_silent", "spikes/hidden1/val_silent",
                "spikes/hidden1/val_saturated", "spikes/hidden1/train_saturated"):
        assert len(ea.Scalars(tag)) == 2, tag

    # The last validation statistics are those of the final weights on the validation set.
    net = load_classifier(tmp_path / "checkpoints" / "last.ckpt")
    from snn.data import SyntheticDataModule

    data = SyntheticDataModule(**{k: v for k, v in make_cfg(tmp_path, *SMALL).dataset.items() if k != "_target_"})
    data.setup()
    counts = NeuronSpikeCounts(24, saturation=0.25)
    layer = net.spiking_layers()["hidden1"]
    handle = layer.register_forward_hook(lambda m, i, out: counts.update(out[0]))
    with torch.no_grad():
        for x, _ in data.val_dataloader():
            net(x)
    handle.remove()
    rates = counts.compute()
    saturated = counts.saturated().mean()
    assert 0 < (rates == 0).double().mean() < 1 or 0 < saturated < 1  # the numbers say something
    assert ea.Scalars("spikes/hidden1/val_silent")[-1].value == pytest.approx(float((rates == 0).double().mean()))
    assert ea.Scalars("spikes/hidden1/val_saturated")[-1].value == pytest.approx(float(saturated))
    histogram = ea.Histograms("spikes/hidden1/val_neuron_rates")[-1].histogram_value
    assert histogram.num == 24 and histogram.sum == pytest.approx(float(rates.sum()), rel=1e-5)
    # The learnable time constant, in ms: from its start (tau_mem_inv 100/s: 10 ms for all 24 neurons, at
    # step 0) to the trained values, as histograms and as mean/std/min/max curves.
    tau_ms = 1e3 / layer.tau_mem_inv.detach().double()
    histograms = ea.Histograms("neuron_params/hidden1/tau_mem_ms")
    assert [h.step for h in histograms][0] == 0 and len(histograms) == 3  # the start, then every epoch
    start, tau = histograms[0].histogram_value, histograms[-1].histogram_value
    assert start.num == 24 and start.min == start.max == pytest.approx(10.0)
    assert tau.num == 24 and tau.sum == pytest.approx(float(tau_ms.sum()), rel=1e-5)
    curves = {s: ea.Scalars(f"neuron_params/hidden1/tau_mem_ms/{s}") for s in ("mean", "std", "min", "max")}
    assert all([e.step for e in c] == [h.step for h in histograms] for c in curves.values())
    assert [curves[s][0].value for s in ("mean", "std", "min", "max")] == pytest.approx([10.0, 0.0, 10.0, 10.0])
    trained = [float(tau_ms.mean()), float(tau_ms.std(correction=0)), float(tau_ms.min()), float(tau_ms.max())]
    assert [curves[s][-1].value for s in ("mean", "std", "min", "max")] == pytest.approx(trained, rel=1e-5)
    assert curves["std"][-1].value > 0  # it moved, neuron by neuron

    # HPARAMS: the resolved config against the optimized metric.
    content = ea.PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [m.name.tag for m in experiment.metric_infos] == ["val/acc"]
    session = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert session.hparams["model/T"].number_value == 8
    assert session.hparams["model/neuron/learnable"].string_value == "['tau_mem_inv']"


def test_monitors_are_switchable(tmp_path):
    train(make_cfg(tmp_path, *SMALL, "trainer.max_epochs=1", "callbacks.spike_raster=null",
                   "callbacks.spike_statistics=null", "callbacks.neuron_params=null", "callbacks.hparams=null"))
    ea = events(tmp_path)
    assert ea.Tags()["images"] == [] and ea.Tags()["histograms"] == []
    assert not any("silent" in t for t in ea.Tags()["scalars"])
    with pytest.raises(KeyError):
        ea.PluginTagToContent("hparams")


def test_spike_statistics_after_the_progress_bar_under_ddp_is_refused():
    # The progress bar reduces epoch metrics on rank 0 alone; SpikeStatistics' own reduction must
    # come first on every rank, or the ranks' collectives cross (tests/test_train.py runs DDP).
    from types import SimpleNamespace

    from lightning.pytorch.callbacks import TQDMProgressBar

    from snn.training import SpikeStatistics

    stats = SpikeStatistics()
    trainer = SimpleNamespace(callbacks=[TQDMProgressBar(), stats], world_size=2)
    with pytest.raises(ValueError, match="must come before the progress bar"):
        stats.setup(trainer, None, "fit")
