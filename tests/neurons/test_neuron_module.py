"""Parameters as buffers / learnable nn.Parameters, and the errors for bad input."""

import pytest
import torch

from snn.neurons import (
    LI,
    LIF,
    LIFAdEx,
    LIFAdExCell,
    LIFAdExFeedForwardState,
    LIFAdExParameters,
    LIState,
)
from snn.neurons.module import broadcasts_to


def test_fixed_parameters_are_buffers_and_learnable_ones_parameters():
    layer = LIFAdEx(learnable=("tau_mem_inv", "adaptation_current"), shape=(3,))
    assert {n for n, _ in layer.named_parameters()} == {"tau_mem_inv_raw", "adaptation_current_raw"}
    buffers = {n for n, _ in layer.named_buffers()}
    assert {"v_th", "tau_syn_inv", "delta_T", "adaptation_spike", "tau_mem_inv_init"} <= buffers
    assert set(layer.state_dict()) == buffers | {"tau_mem_inv_raw", "adaptation_current_raw"}


def test_state_dict_round_trip():
    a = LIFAdEx(LIFAdExParameters(v_th=0.7), learnable=("tau_mem_inv",), shape=(4,))
    a.tau_mem_inv = torch.tensor([10.0, 20.0, 30.0, 40.0])  # sets the raw parameter
    b = LIFAdEx(learnable=("tau_mem_inv",), shape=(4,))
    b.load_state_dict(a.state_dict())
    x = torch.rand(10, 2, 4) * 3
    assert torch.equal(a(x)[0], b(x)[0])


def test_per_neuron_learnable_parameters_get_per_neuron_gradients():
    layer = LIFAdEx(learnable=("tau_mem_inv", "v_th"), shape=(5,))
    assert layer.tau_mem_inv.shape == (5,) and layer.v_th.shape == (5,)
    x = torch.rand(20, 3, 5, dtype=torch.float64) * 2
    layer.double()
    z, s = layer(x)
    (z.sum() + s.v.sum()).backward()
    assert layer.tau_mem_inv_raw.grad.shape == (5,)
    for k in range(5):  # each neuron's gradient is that of the same neuron simulated alone
        alone = LIFAdEx(learnable=("tau_mem_inv", "v_th"), shape=()).double()
        z_k, s_k = alone(x[..., k])
        (z_k.sum() + s_k.v.sum()).backward()
        torch.testing.assert_close(layer.v_th_raw.grad[k], alone.v_th_raw.grad, rtol=1e-12, atol=0)
        torch.testing.assert_close(layer.tau_mem_inv_raw.grad[k], alone.tau_mem_inv_raw.grad, rtol=1e-12, atol=0)


def test_per_neuron_fixed_tensor_parameters_broadcast():
    v_th = torch.tensor([0.5, 1.0, 100.0])
    z, _ = LIFAdEx(LIFAdExParameters(v_th=v_th))(torch.full((50, 2, 3), 1.0))
    counts = z.sum(dim=(0, 1))
    assert counts[0] > counts[1] > counts[2] == 0


def test_parameter_not_broadcasting_to_neurons_is_clear_error():
    layer = LIFAdEx(LIFAdExParameters(v_th=torch.ones(7)))
    with pytest.raises(ValueError,
                       match=r"parameter 'v_th' of shape \[7\] does not broadcast to the neuron shape \[2, 5\]"):
        layer(torch.rand(3, 2, 5))


def test_learnable_inverse_time_constants_cannot_go_negative():
    """Trained on a log scale: steps of the same size in the raw parameter take a time constant down
    by the same factor each, never below zero, and a value that went far down still gets the
    gradient that brings it back."""
    layer = LI(learnable=("tau_mem_inv",), shape=(1,), backend="eager").double()
    x = torch.full((10, 1, 1), 5.0, dtype=torch.float64)
    optimizer = torch.optim.SGD(layer.parameters(), lr=1.0)
    values = []
    for _ in range(12):  # +v: the loss wants slower charging, a smaller tau_mem_inv
        optimizer.zero_grad()
        layer(x)[0].sum().backward()
        layer.tau_mem_inv_raw.grad.sign_()  # unit steps: -1 in the raw parameter each
        optimizer.step()
        values.append(layer.tau_mem_inv.item())
    expected = 100.0 * torch.exp(-torch.arange(1.0, 13.0, dtype=torch.float64))
    torch.testing.assert_close(torch.tensor(values, dtype=torch.float64), expected)
    optimizer.zero_grad()
    (-layer(x)[0].sum()).backward()  # -v: faster charging; the gradient still reaches the constant
    assert layer.tau_mem_inv_raw.grad.item() < 0
    with pytest.raises(ValueError, match=r"tau_mem_inv must be >= 0 .*got -50\.0"):
        layer.tau_mem_inv = -50.0


def test_to_dtype_and_device_moves_buffers():
    layer = LIFAdEx().double()
    assert layer.v_th.dtype == torch.float64
    z, s = layer(torch.rand(4, 2, 3, dtype=torch.float64))
    assert s.v.dtype == torch.float64


def test_unknown_learnable_name():
    with pytest.raises(ValueError, match="Cannot make \\['tau_foo'\\] learnable.*tau_mem_inv"):
        LIFAdEx(learnable=("tau_foo",))


@pytest.mark.parametrize("dt", [0, -0.001, float("nan"), "0.001"])
def test_bad_dt(dt):
    with pytest.raises(ValueError, match="time step dt must be a positive number"):
        LIF(dt=dt)


def test_wrong_parameter_type():
    with pytest.raises(ValueError, match="expects p to be a LIFAdExParameters"):
        LIFAdEx(p=LIState(1, 2))


def test_non_tensor_input():
    with pytest.raises(ValueError, match=r"expects a tensor of shape \[T, B, \.\.\.\] \(time first\), got list"):
        LIFAdEx()([[1.0, 2.0]])


def test_integer_input():
    with pytest.raises(ValueError, match="floating-point input"):
        LI()(torch.ones(3, 2, dtype=torch.long))


def test_layer_input_without_time_dimension():
    with pytest.raises(ValueError, match=r"expects input of shape \[T, B, \.\.\.\].*got \[5\].*add a time dimension"):
        LIFAdEx()(torch.rand(5))
    with pytest.raises(ValueError, match=r"neuron shape \[4\], got \[2, 4\]"):
        LIFAdEx(learnable=("v_th",), shape=(4,))(torch.rand(2, 4))


def test_state_of_wrong_shape():
    state = LIFAdExFeedForwardState(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 4))
    with pytest.raises(ValueError, match=r"state.v must have shape \[2, 4\].*got \[3, 4\]"):
        LIFAdEx()(torch.rand(5, 2, 4), state)
    with pytest.raises(ValueError, match="expects state=None or a LIFAdExFeedForwardState, got tuple"):
        LIFAdExCell()(torch.rand(2, 4), (torch.zeros(2, 4),) * 3)


def test_input_on_other_device_than_parameters_is_explained():
    layer = LIFAdEx()
    layer.v_th = torch.tensor(1.0, device="meta")
    with pytest.raises(ValueError, match="parameters are on meta but the input is on cpu"):
        layer(torch.rand(2, 1, 1))


@pytest.mark.parametrize("shape, target", [
    ((), (4, 3)), ((1,), (4, 3)), ((3,), (4, 3)), ((4, 1), (4, 3)), ((4, 3), (4, 3)),
    ((2,), (4, 3)), ((4,), (4, 3)), ((1, 4, 3), (4, 3)), ((5, 4, 3), (4, 3)), ((0,), (2, 0)), ((3,), (2, 0)),
])
def test_broadcasts_to_agrees_with_torch(shape, target):
    try:
        expected = torch.broadcast_shapes(shape, target) == torch.Size(target)
    except RuntimeError:
        expected = False
    assert broadcasts_to(shape, target) == expected
