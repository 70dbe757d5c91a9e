"""snn.neurons.trajectory: a layer's per-step states and pre-reset voltage, from its own step."""

import pytest
import torch

from snn.neurons import (
    LI,
    LIF,
    LIFAdEx,
    LIFAdExParameters,
    LIFAdExRecurrent,
    LIFAdExRecurrentCell,
    LIFParameters,
    LIFRecurrent,
    trajectory,
)

LAYERS = {
    "adex": lambda: LIFAdEx(LIFAdExParameters(v_th=torch.tensor(0.8)), backend="eager"),
    "adex_fused": lambda: LIFAdEx(backend="auto"),
    "lif": lambda: LIF(LIFParameters(v_reset=torch.tensor(-0.2)), backend="eager"),
    "lif_fused": lambda: LIF(backend="auto"),
    "adex_recurrent": lambda: LIFAdExRecurrent(5, 7),
    "lif_recurrent": lambda: LIFRecurrent(5, 7),
}


def drive(name: str) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(25, 2, 5 if "recurrent" in name else 7, dtype=torch.float64) * 6


@pytest.mark.exactness
@pytest.mark.usefixtures("one_blas_thread")
@pytest.mark.parametrize("name", LAYERS)
def test_trajectory_is_the_layers_own_run(name):
    layer = LAYERS[name]().double()
    x = drive(name)
    z, final = layer(x)
    traced = trajectory(layer, x)
    assert torch.equal(traced.outputs, z)
    assert type(traced.states) is type(final)
    for field, last in zip(traced.states, final, strict=True):
        assert field.shape == (25, *last.shape)
        assert torch.equal(field[-1], last)


@pytest.mark.parametrize("name", LAYERS)
def test_pre_reset_voltage_crosses_threshold_exactly_on_spike_steps(name):
    layer = LAYERS[name]().double()
    traced = trajectory(layer, drive(name))
    spiked = traced.outputs.bool()
    assert 0 < spiked.sum() < spiked.numel()  # both cases occur
    v_th, v_reset = float(layer.v_th), float(layer.v_reset)
    assert torch.all(traced.v_pre[spiked] > v_th) and torch.all(traced.v_pre[~spiked] <= v_th)
    # Without a spike nothing is reset; with one, the state holds v_reset.
    assert torch.equal(traced.v_pre[~spiked], traced.states.v[~spiked])
    assert torch.all(traced.states.v[spiked] == v_reset)


def test_adaptation_jumps_by_a_spike_on_spike_steps():
    p = LIFAdExParameters(adaptation_current=torch.tensor(0.0), tau_ada_inv=torch.tensor(0.0))
    layer = LIFAdEx(p, backend="eager").double()
    traced = trajectory(layer, drive("adex"))
    # With no coupling and no decay, a only counts spikes: a_t = 0.02 * (spikes up to t).
    expected = 0.02 * traced.outputs.cumsum(0)
    torch.testing.assert_close(traced.states.a, expected)


def test_li_pre_reset_voltage_is_its_voltage():
    layer = LI()
    x = torch.rand(10, 2, 3)
    v, _ = layer(x)
    traced = trajectory(layer, x)
    assert torch.equal(traced.outputs, v) and torch.equal(traced.v_pre, v)


def test_trajectory_starts_from_the_given_state():
    layer = LIF(backend="eager")
    x = torch.rand(6, 2, 3)
    _, middle = layer(x[:3])
    z, final = layer(x[3:], middle)
    traced = trajectory(layer, x[3:], middle)
    assert torch.equal(traced.outputs, z) and torch.equal(traced.states.v[-1], final.v)


def test_trajectory_refuses_a_cell():
    with pytest.raises(ValueError, match="neuron layer"):
        trajectory(LIFAdExRecurrentCell(3, 4), torch.zeros(2, 3))
