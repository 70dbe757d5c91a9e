"""The recurrent sequence classifier (snn.models.sequence): decoders, layers, config, training."""

from __future__ import annotations

import math

import pytest
import torch

from snn.models import SEQUENCE_DECODERS, SpikingSequenceClassifier, check_model
from snn.neurons import LIFAdExRecurrent, LIFRecurrent
from tests.helpers import compose_config


def make_model(backend="auto", dtype=torch.float64, **kwargs):
    torch.manual_seed(0)
    args = {
        "input_shape": (30, 2, 3),
        "num_classes": 5,
        "hidden": [24, 16],
        "neuron": {
            "kind": "adex",
            "backend": backend,
            "learnable": ["tau_ada_inv", "adaptation_current", "adaptation_spike", "tau_mem_inv"],
        },
        "tau_ada_range": (0.05, 1.0),
        "decoder": "mean_last",
        "decoder_steps": 4,
    }
    args.update(kwargs)
    model = SpikingSequenceClassifier(**args).to(dtype)
    with torch.no_grad():  # enough drive that every layer spikes
        for layer in model.spiking.values():
            layer.input_weights.mul_(4.0)
    return model


def sequences(B=4, T=30, dtype=torch.float64):
    return torch.rand(B, T, 2, 3, generator=torch.Generator().manual_seed(1), dtype=dtype)


def test_decoders_against_their_definitions():
    v = torch.randn(7, 3, 5, dtype=torch.float64)
    assert torch.equal(SEQUENCE_DECODERS["last"](v, 4), v[-1])
    torch.testing.assert_close(
        SEQUENCE_DECODERS["mean_last"](v, 4), (v[3] + v[4] + v[5] + v[6]) / 4
    )
    probabilities = sum(torch.softmax(v[t], dim=-1) for t in range(7)) / 7
    torch.testing.assert_close(SEQUENCE_DECODERS["softmax_sum"](v, 4), probabilities.log())


@pytest.mark.parametrize("decoder", sorted(SEQUENCE_DECODERS))
def test_logits_are_the_decoded_readout_voltages(decoder):
    model = make_model(decoder=decoder)
    seen = []
    model.readout.register_forward_hook(lambda module, args, out: seen.append(out[0]))
    logits = model(sequences())
    assert logits.shape == (4, 5)
    assert torch.equal(logits, SEQUENCE_DECODERS[decoder](seen[0], 4))


def test_layers_see_the_sequence_time_major():
    """Each recurrent layer runs over T with the previous layer's spikes; the first on the frames
    flattened to features: the model equals the layers applied by hand."""
    model = make_model()
    x = sequences()
    z = x.flatten(2).transpose(0, 1)  # [B, T, 2, 3] -> [T, B, 6]
    spikes = []
    for layer in model.spiking.values():
        z, _ = layer(z)
        spikes.append(z)
    v, _ = model.readout(model.output(z))
    assert all(0 < s.mean() < 1 for s in spikes), "every layer must spike, not saturate"
    assert torch.equal(model(x), v[-4:].mean(0))


@pytest.mark.exactness
@pytest.mark.usefixtures("one_blas_thread")
def test_fused_model_equals_eager_with_learnable_adaptation():
    """Logits bit-identical and every gradient (weights, per-neuron adaptation and membrane
    constants) within 1e-10 of the eager step loop: the learnable parameters train through the
    fused recurrent node."""
    x = sequences()
    results = []
    for backend in ("eager", "python"):
        model = make_model(backend)
        logits = model(x)
        (logits * torch.arange(20.0, dtype=logits.dtype).view(4, 5).cos()).sum().backward()
        results.append((logits.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (ref_logits, ref), (logits, got) = results
    assert torch.equal(logits, ref_logits)
    assert ref.keys() == got.keys()
    for name in ref:
        scale = ref[name].abs().max()
        assert scale > 0, name
        assert (got[name] - ref[name]).abs().max() <= 1e-10 * scale, name
    layer = make_model("python").spiking["recurrent1"]
    assert layer.tau_ada_inv.shape == (24,) and isinstance(layer.tau_ada_inv_raw, torch.nn.Parameter)


def test_readout_runs_on_the_neuron_backend_unless_it_names_its_own():
    """readout.backend None means what it means in the image classifiers: the spiking layers' backend."""
    model = make_model("eager")
    assert model.spiking["recurrent1"].backend == "eager" and model.readout.backend == "eager"
    assert make_model("eager", readout={"backend": "python"}).readout.backend == "python"
    assert make_model().readout.backend == "auto"
    with pytest.raises(ValueError, match="valid backends"):
        make_model(readout={"backend": "fastest"})


def test_heterogeneous_adaptation_time_constants():
    model = make_model(hidden=[200], neuron={"kind": "adex"})
    tau = 1 / model.spiking["recurrent1"].tau_ada_inv
    assert tau.shape == (200,) and not isinstance(tau, torch.nn.Parameter)
    assert 0.05 - 1e-12 <= tau.min() and tau.max() <= 1.0 + 1e-12
    assert tau.unique().numel() == 200
    low_half = (tau.log() < (math.log(0.05) + math.log(1.0)) / 2).float().mean()
    assert 0.35 < low_half < 0.65  # log-uniform: half the neurons below the geometric midpoint
    same = make_model(hidden=[200], neuron={"kind": "adex"}, tau_ada_range=None)
    assert same.spiking["recurrent1"].tau_ada_inv.numel() == 1


def test_lif_layers_feedforward_and_dropout():
    model = make_model(
        neuron={"kind": "lif", "learnable": ["tau_mem_inv"]},
        tau_ada_range=None,
        feedforward=True,
        dropout=0.5,
        decoder="last",
    )
    assert [type(m) for m in model.spiking_layers().values()] == [LIFRecurrent, LIFRecurrent]
    assert len(model.between) == 1 and model.between[0].in_features == 24
    assert model.spiking["recurrent2"].input_size == 16
    x = sequences()
    model.eval()
    assert torch.equal(model(x), model(x))  # dropout off in eval
    model.train()
    torch.manual_seed(3)
    assert not torch.equal(model(x), model(x))  # and on in training


def test_contract_and_attributes():
    model = make_model()
    check_model(model)
    assert (model.input_shape, model.num_classes, model.T, model.dt) == ((30, 2, 3), 5, 30, 0.001)
    assert list(model.spiking_layers()) == ["recurrent1", "recurrent2"]
    assert isinstance(model.spiking["recurrent1"], LIFAdExRecurrent)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (
            {"decoder": "max"},
            r"Unknown decoder 'max'; choose one of \['last', 'mean_last', 'softmax_sum'\]",
        ),
        ({"decoder_steps": 31}, r"decoder_steps .* \[1, T = 30\], got 31"),
        ({"neuron": {"kind": "lif"}}, "tau_ada_range sets AdEx adaptation time constants"),
        ({"tau_ada_range": (1.0, 0.1)}, "0 < low <= high"),
        ({"neuron": {"kind": "hh"}}, "Unknown neuron kind 'hh'"),
        ({"neuron": {"backend": "compile"}}, "Recurrent layers have the backends auto, cpp, triton, python, eager"),
        ({"input_shape": (30,)}, r"input_shape must be \(T, features...\)"),
    ],
)
def test_bad_configuration_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_model(**kwargs)


def test_bad_input_error():
    with pytest.raises(
        ValueError,
        match=r"expects input \[B, 30, 2, 3\] \(batch first, then time\), got \[30, 4, 6\]",
    ):
        make_model()(torch.rand(30, 4, 6, dtype=torch.float64))


@pytest.mark.parametrize("model", ["radex", "rlif"])
def test_config_trains_on_synthetic_sequences(model, tmp_path):
    """model=radex / rlif with the synthetic data shaped as sequences (20 steps of 8 features):
    built from the config, a few optimizer steps lower the loss."""
    from snn.training.run import build

    cfg = compose_config(f"model={model}", "dataset=synthetic", "dataset.input_shape=[20,8]",
                         f"paths.output_dir={tmp_path}", "model.hidden=[32]", "model.readout.backend=python")
    torch.manual_seed(0)  # the weights
    module, datamodule, _ = build(cfg)
    net = module.net
    assert isinstance(net, SpikingSequenceClassifier) and net.T == 20
    datamodule.setup("fit")
    x, y = next(iter(datamodule.train_dataloader()))
    assert x.shape[1:] == (20, 8)
    optimizer = torch.optim.Adam(net.parameters(), lr=2e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(net(x * 5), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
