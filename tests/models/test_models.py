"""snn.models: encoders, conv encoder, classifiers, spike recording."""

import pytest
import torch
from torch import nn

from snn.models import (
    ConstantCurrentEncoder,
    ConvEncoder,
    LatencyEncoder,
    PoissonEncoder,
    SpikeRecorder,
    SpikingClassifier,
    SpikingConvClassifier,
    make_encoder,
    make_neurons,
)
from snn.neurons import LI, LIF, LIFAdEx

IMAGE = (1, 12, 12)


def small_classifier(cls=SpikingClassifier, **kwargs):
    defaults = dict(input_shape=IMAGE, num_classes=3, T=6, hidden=16, conv={"channels": [4, 6], "kernel_size": 3})
    return cls(**{**defaults, **kwargs})


# --- encoders -------------------------------------------------------------------------------------


def test_constant_encoder_repeats_the_scaled_input_without_copying():
    x = torch.rand(4, 1, 5, 5)
    out = ConstantCurrentEncoder(T=7, scale=1.0)(x)
    assert out.shape == (7, 4, 1, 5, 5)
    assert torch.equal(out, x.expand(7, *x.shape))
    assert out.data_ptr() == x.data_ptr()  # a view
    assert torch.allclose(ConstantCurrentEncoder(T=3, scale=2.5)(x)[2], 2.5 * x)


def test_poisson_encoder_fires_with_probability_x_fmax_dt():
    torch.manual_seed(0)
    x = torch.tensor([0.0, 0.25, 0.5, 1.0, 3.0]).expand(2000, 5)
    spikes = PoissonEncoder(T=50, dt=0.001, f_max=500.0)(x)  # p = 0.5 x, clipped at 1
    assert spikes.shape == (50, 2000, 5)
    assert set(spikes.unique().tolist()) <= {0.0, 1.0}
    rate = spikes.mean(dim=(0, 1))
    expected = torch.tensor([0.0, 0.125, 0.25, 0.5, 1.0])
    assert torch.allclose(rate, expected, atol=0.01), rate


def test_latency_encoder_one_spike_brighter_earlier():
    x = torch.tensor([[1.0, 0.5, 0.2, 0.05]])
    spikes = LatencyEncoder(T=11, threshold=0.1)(x)  # steps round((1 - x) * 10)
    assert spikes.shape == (11, 1, 4)
    assert spikes.sum(0).tolist() == [[1.0, 1.0, 1.0, 0.0]]  # below threshold: silent
    assert spikes[:, 0, :3].argmax(0).tolist() == [0, 5, 8]


@pytest.mark.parametrize("T", [0, -3, 2.5, True, "8"])
def test_encoders_reject_bad_T(T):
    with pytest.raises(ValueError, match="positive integer"):
        make_encoder("constant", T=T)


def test_make_encoder_names_choices_and_options():
    with pytest.raises(ValueError, match=r"Unknown encoder 'rate'.*constant.*latency.*poisson"):
        make_encoder("rate", T=4)
    with pytest.raises(ValueError, match=r"Unknown encoder options \['fmax'\]"):
        make_encoder("poisson", T=4, fmax=3.0)
    encoder = make_encoder("poisson", T=4, dt=0.002, f_max=100.0, threshold=0.3, scale=2.0)
    assert isinstance(encoder, PoissonEncoder) and encoder.f_max == 100.0 and encoder.dt == 0.002
    assert make_encoder("latency", T=4, threshold=0.3).threshold == 0.3


# --- conv encoder ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(channels=[8, 16], kernel_size=5, pool="max"),
        dict(channels=[4, 4, 4], kernel_size=[3, 5, 3], pool=["max", "none", "avg"], norm="group"),
        dict(channels=[6], kernel_size=1, pool="none", norm="none", activation="gelu"),
    ],
)
def test_conv_encoder_output_shape_matches_forward(kwargs):
    conv = ConvEncoder(3, **kwargs)
    x = torch.rand(2, 3, 13, 10)
    assert tuple(conv(x).shape[1:]) == conv.output_shape((3, 13, 10))


def test_conv_encoder_errors():
    with pytest.raises(ValueError, match=r"kernel_size has 3 entries .* 2 blocks"):
        ConvEncoder(1, channels=[4, 8], kernel_size=[3, 3, 3])
    with pytest.raises(ValueError, match=r"Unknown norm 'layer'.*batch.*group.*none"):
        ConvEncoder(1, channels=[4], norm="layer")
    with pytest.raises(ValueError, match=r"Unknown activation 'elu'"):
        ConvEncoder(1, channels=[4], activation="elu")
    with pytest.raises(ValueError, match=r"Unknown pool 'min'"):
        ConvEncoder(1, channels=[4], pool="min")
    with pytest.raises(ValueError, match="too small"):
        ConvEncoder(1, channels=[4, 4, 4]).output_shape((1, 4, 4))
    with pytest.raises(ValueError, match=r"images \[N, C, H, W\]"):
        ConvEncoder(1, channels=[4])(torch.rand(3, 8, 8))


# --- classifiers ----------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [SpikingClassifier, SpikingConvClassifier])
@pytest.mark.parametrize("kind", ["adex", "lif"])
@pytest.mark.parametrize("encoding", ["constant", "poisson", "latency"])
def test_classifiers_give_logits_and_gradients(cls, kind, encoding):
    torch.manual_seed(0)
    net = small_classifier(cls, neuron={"kind": kind}, encoder={"kind": encoding, "scale": 4.0, "f_max": 800.0})
    spiking_type = LIFAdEx if kind == "adex" else LIF
    assert all(isinstance(m, spiking_type) for m in net.spiking_layers().values())
    logits = net(torch.rand(5, *IMAGE))
    assert logits.shape == (5, 3) and torch.isfinite(logits).all()
    logits.pow(2).sum().backward()
    first_conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0


def test_spiking_conv_classifier_puts_neurons_after_every_conv_block():
    net = small_classifier(SpikingConvClassifier)
    assert list(net.spiking_layers()) == ["conv1", "conv2", "hidden1"]
    with SpikeRecorder(net.spiking_layers()) as recorder:
        net(torch.rand(2, *IMAGE))
        assert recorder.neurons() == {"conv1": 4 * 12 * 12, "conv2": 6 * 6 * 6, "hidden1": 16}


def test_stacked_hidden_layers_and_no_conv():
    net = SpikingClassifier((20,), num_classes=4, T=5, conv=None, hidden=[12, 8])
    assert list(net.spiking_layers()) == ["hidden1", "hidden2"]
    assert net(torch.rand(3, 20)).shape == (3, 4)


def count_calls(module: nn.Module) -> list:
    batches = []
    module.register_forward_hook(lambda m, inputs, output: batches.append(inputs[0].shape[0]))
    return batches


@pytest.mark.parametrize("cls", [SpikingClassifier, SpikingConvClassifier])
def test_static_input_runs_the_front_end_once_and_matches_running_it_every_step(cls):
    torch.manual_seed(0)
    net = small_classifier(cls, encoder={"kind": "constant", "scale": 3.0}).eval()
    first_conv = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    batches = count_calls(first_conv)
    x = torch.rand(4, *IMAGE)
    static = net(x)
    assert batches == [4]  # once, on [B, ...]
    net.encoder.static = False  # the general path: the conv sees [T*B, ...]
    per_step = net(x)
    assert batches == [4, 6 * 4]
    torch.testing.assert_close(static, per_step)


def test_time_varying_input_runs_the_front_end_on_all_steps():
    net = small_classifier(encoder={"kind": "poisson"})
    batches = count_calls(net.conv)
    net(torch.rand(3, *IMAGE))
    assert batches == [6 * 3]


@pytest.mark.parametrize("decoder,reduce", [("max", lambda v: v.amax(0)), ("mean", lambda v: v.mean(0))])
def test_logits_are_decoded_from_readout_voltages(decoder, reduce):
    torch.manual_seed(0)
    net = small_classifier(decoder=decoder)
    assert isinstance(net.readout, LI)
    voltages = []
    net.readout.register_forward_hook(lambda m, i, out: voltages.append(out[0]))
    logits = net(torch.rand(2, *IMAGE))
    assert voltages[0].shape == (6, 2, 3)  # [T, B, num_classes]
    torch.testing.assert_close(logits, reduce(voltages[0]))


def test_neuron_parameters_reach_the_layers():
    neuron = dict(kind="adex", tau_mem_inv=50.0, v_th=0.7, adaptation_spike=0.1, method="triangle", alpha=3.0)
    net = small_classifier(neuron=neuron, readout={"tau_mem_inv": 20.0}, dt=0.002)
    layer = net.spiking_layers()["hidden1"]
    assert float(layer.tau_mem_inv) == 50.0 and float(layer.v_th) == pytest.approx(0.7)
    assert float(layer.adaptation_spike) == pytest.approx(0.1)
    assert layer.surrogate == {"method": "triangle", "alpha": 3.0}
    assert layer.dt == 0.002 and float(net.readout.tau_mem_inv) == 20.0


def test_readout_runs_on_the_neuron_backend_unless_it_names_its_own():
    net = small_classifier(neuron={"kind": "lif", "backend": "eager"})
    assert net.spiking_layers()["hidden1"].backend == "eager" and net.readout.backend == "eager"
    net = small_classifier(neuron={"kind": "lif", "backend": "eager"}, readout={"backend": "python"})
    assert net.readout.backend == "python"
    assert small_classifier().readout.backend == "auto"
    with pytest.raises(ValueError, match="valid backends"):
        small_classifier(readout={"backend": "fastest"})


def test_learnable_parameters_are_per_neuron_and_trained():
    net = small_classifier(SpikingConvClassifier, neuron={"kind": "adex", "learnable": ["tau_mem_inv"]},
                           readout={"learnable": ["tau_syn_inv"]})
    layers = net.spiking_layers()
    assert layers["conv1"].tau_mem_inv.shape == (4, 1, 1)  # per channel
    assert layers["hidden1"].tau_mem_inv.shape == (16,)
    assert net.readout.tau_syn_inv.shape == (3,)
    net(torch.rand(4, *IMAGE) * 3).sum().backward()
    assert layers["hidden1"].tau_mem_inv_raw.grad is not None and layers["hidden1"].tau_mem_inv_raw.grad.shape == (16,)


def test_a_single_learnable_name_is_one_name_not_its_characters():
    # learnable=tau_mem_inv on the command line arrives as a string, not a list
    net = small_classifier(neuron={"kind": "adex", "learnable": "tau_mem_inv"}, readout={"learnable": "tau_syn_inv"})
    assert net.spiking_layers()["hidden1"].tau_mem_inv.shape == (16,)
    assert net.readout.tau_syn_inv.shape == (3,)
    assert make_neurons("adex", dt=0.001, shape=(7,), learnable="v_th").v_th.shape == (7,)
    assert make_neurons("lif", dt=0.001, recurrent_inputs=3, shape=(5,), learnable="v_th").v_th.shape == (5,)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(T=0), "positive integer"),
        (dict(T=-4), "positive integer"),
        (dict(dt=0.0), "dt must be a positive"),
        (dict(decoder="last"), r"Unknown decoder 'last'; choose one of \['max', 'mean'\]"),
        (dict(neuron={"kind": "izhikevich"}), r"Unknown neuron kind 'izhikevich'; choose one of \['adex', 'lif'\]"),
        (dict(neuron={"kind": "adex", "tau_mem": 5.0}), r"no field\(s\) \['tau_mem'\].*tau_mem_inv"),
        (dict(neuron={"kind": "lif", "delta_T": 1.0}), r"no field\(s\) \['delta_T'\].*model=lif"),
        (dict(neuron={"kind": "adex", "tau_syn_inv": -1.0}), "tau_syn_inv .* must be > 0"),
        (dict(neuron={"kind": "adex", "method": "relu"}), r"relu.*super"),
        (dict(neuron={"kind": "adex", "backend": "cuda-magic"}), "backend"),
        (dict(readout={"v_th": 1.0}), r"no field\(s\) \['v_th'\]"),
        (dict(encoder={"kind": "rank"}), "Unknown encoder 'rank'"),
        (dict(hidden=0), "hidden must be a positive int"),
        (dict(num_classes=1), "num_classes"),
        (dict(conv={"channels": [4], "pool": "median"}), "Unknown pool 'median'"),
    ],
)
def test_bad_configuration_gives_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        small_classifier(**kwargs)


def test_conv_on_flat_input_and_wrong_input_shape_are_refused():
    with pytest.raises(ValueError, match=r"needs image inputs \(C, H, W\)"):
        SpikingClassifier((20,), 3, conv={"channels": [4]})
    with pytest.raises(ValueError, match=r"expects input \[B, 1, 12, 12\], got \[2, 1, 10, 10\]"):
        small_classifier()(torch.rand(2, 1, 10, 10))


def test_make_neurons_builds_each_kind():
    assert isinstance(make_neurons("lif", dt=0.001, v_th=0.5), LIF)
    layer = make_neurons("adex", dt=0.001, shape=(7,), learnable=["v_th"])
    assert isinstance(layer, LIFAdEx) and layer.v_th.shape == (7,)


# --- spike recording ------------------------------------------------------------------------------


def test_spike_recorder_sees_every_layer_and_computes_rates():
    torch.manual_seed(0)
    net = small_classifier(SpikingConvClassifier, encoder={"kind": "constant", "scale": 5.0})
    recorder = SpikeRecorder(net.spiking_layers())
    seen = {}
    for name, layer in net.spiking_layers().items():
        layer.register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, out[0]))
    net(torch.rand(3, *IMAGE))
    assert set(recorder.spikes) == {"conv1", "conv2", "hidden1"}
    for name, z in seen.items():
        assert recorder.spikes[name] is not None and torch.equal(recorder.spikes[name], z)
        assert recorder.rates()[name] == pytest.approx(float(z.detach().mean()))
        total, count = recorder.counts()[name]
        assert float(total) == float(z.sum()) and count == z.numel()
    assert recorder.rates()["conv1"] > 0  # the test exercises firing, not silence
    assert not recorder.spikes["conv1"].requires_grad  # detached by default
    recorder.remove()
    recorder_after = dict(recorder.spikes)
    net(torch.rand(3, *IMAGE))
    assert recorder_after == {} and recorder.spikes == {}


def test_spike_recorder_can_keep_the_graph_for_a_rate_loss():
    net = small_classifier(encoder={"kind": "constant", "scale": 5.0})
    with SpikeRecorder(net.spiking_layers(), detach=False) as recorder:
        net(torch.rand(3, *IMAGE))
        recorder.rates()["hidden1"].backward()
    assert net.linear[0].weight.grad.abs().sum() > 0


def test_spike_recorder_needs_layers():
    with pytest.raises(ValueError, match="at least one spiking layer"):
        SpikeRecorder({})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_classifier_runs_on_cuda():
    net = small_classifier(SpikingConvClassifier, encoder={"kind": "poisson"}).cuda()
    with SpikeRecorder(net.spiking_layers()) as recorder:
        logits = net(torch.rand(2, *IMAGE, device="cuda"))
        assert logits.device.type == "cuda" and recorder.rates()["conv1"].device.type == "cuda"
