import pytest
import torch

from snn.neurons import LI, LICell, LILinearCell, LIParameters, LIState, li_feed_forward_step
from tests.reference import reference_li

F64 = torch.float64


def test_parameters_match_norse_seed():
    p = LIParameters()
    assert p._fields == ("tau_syn_inv", "tau_mem_inv", "v_leak")
    assert (float(p.tau_syn_inv), float(p.tau_mem_inv), float(p.v_leak)) == (200.0, 100.0, 0.0)
    assert LIState._fields == ("v", "i")


# Hand-computed: defaults, x = 1.  step 1: i_j = 1, v = 0.1 * 1 = 0.1, i = 0.8
#                                  step 2: i_j = 1.8, v = 0.1 + 0.1 * (-0.1 + 1.8) = 0.27, i = 1.44
@pytest.mark.parametrize(
    "p, dt, x, expected",
    [
        (LIParameters(), 0.001, 1.0, [(0.1, 0.8), (0.27, 1.44), (0.487, 1.952)]),
        (LIParameters(tau_syn_inv=50.0, tau_mem_inv=20.0, v_leak=0.5), 0.01, 2.0,
         [(0.9, 1.0), (1.42, 1.5), (1.936, 1.75)]),
    ],
)
def test_hand_computed_steps(p, dt, x, expected):
    v, state = LI(p, dt=dt)(torch.full((len(expected), 1), x, dtype=F64))
    assert v.dtype == F64
    assert v[:, 0].tolist() == pytest.approx([e[0] for e in expected], rel=1e-14)
    assert state.i.item() == pytest.approx(expected[-1][1], rel=1e-14)


def test_closed_form_decay_without_input():
    # With x = 0 the current decays geometrically: i_t = i_0 (1 - dt tau_syn_inv)^t, and v follows
    # v_{t+1} = (1 - dt tau_mem_inv) v_t + dt tau_mem_inv i_t.
    i0, v0, T = 2.0, 0.3, 25
    state = LIState(v=torch.tensor([v0], dtype=F64), i=torch.tensor([i0], dtype=F64))
    v, final = LI()(torch.zeros(T, 1, dtype=F64), state)
    i_t = [i0 * 0.8**t for t in range(T + 1)]
    assert final.i.item() == pytest.approx(i_t[T], rel=1e-12)
    expected_v, v_t = [], v0
    for t in range(T):
        v_t = 0.9 * v_t + 0.1 * i_t[t]
        expected_v.append(v_t)
    assert v[:, 0].tolist() == pytest.approx(expected_v, rel=1e-12)


def test_dtype_follows_input():
    layer = LI()
    for dtype in (torch.float32, torch.float64):
        v, state = layer(torch.ones(3, 2, dtype=dtype))
        assert v.dtype == dtype and state.i.dtype == dtype


def test_matches_reference_and_gradcheck():
    x = torch.randn(20, 3, 4, dtype=F64, requires_grad=True)
    v, _ = LI()(x)
    v_ref, _ = reference_li(x, {"tau_syn_inv": 200.0, "tau_mem_inv": 100.0, "v_leak": 0.0}, 0.001)
    torch.testing.assert_close(v, v_ref, rtol=1e-14, atol=1e-15)
    layer = LI(learnable=("tau_mem_inv", "tau_syn_inv"), shape=()).double()

    def voltages(x, tau_mem_inv, tau_syn_inv):
        p = layer.neuron_parameters(x)._replace(tau_mem_inv=tau_mem_inv, tau_syn_inv=tau_syn_inv)
        return layer.integrate(x, layer.rest_state(x[0]), p)[0]

    params = [layer.tau_mem_inv.detach().clone().requires_grad_(True),
              layer.tau_syn_inv.detach().clone().requires_grad_(True)]
    assert torch.autograd.gradcheck(voltages, (x[:6, :2, :2].detach().requires_grad_(True), *params))


def test_cell_step_equals_function():
    x = torch.randn(4, 3)
    v, s = LICell()(x)
    v2, s2 = li_feed_forward_step(x, LIState(torch.zeros(4, 3), torch.zeros(4, 3)), LIParameters(), 0.001)
    assert torch.equal(v, v2) and torch.equal(s.i, s2.i)


def test_linear_cell_applies_weights():
    torch.manual_seed(0)
    cell = LILinearCell(3, 2)
    x = torch.rand(5, 3)
    v, state = cell(x)
    v_ref, _ = LICell()(x @ cell.input_weights.detach().T)
    torch.testing.assert_close(v, v_ref)
    assert v.shape == (5, 2)
    with pytest.raises(ValueError, match="expects 3 input features"):
        cell(torch.rand(5, 4))
