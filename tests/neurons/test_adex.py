import pytest
import torch

from snn.neurons import (
    LIFAdEx,
    LIFAdExCell,
    LIFAdExFeedForwardState,
    LIFAdExParameters,
    LIFAdExRecurrent,
    LIFAdExRecurrentCell,
    LIFAdExState,
    lif_adex_feed_forward_step,
)
from tests.helpers import value_grad
from tests.reference import reference_adex

SURROGATES = ["super", "triangle", "sigmoid", "atan", "tanh", "heaviside"]
F64 = torch.float64


def run_constant(x_value: float, steps: int, p=LIFAdExParameters(), dt=0.001):
    layer = LIFAdEx(p, dt=dt).double()
    z, state = layer(torch.full((steps, 1), x_value, dtype=F64))
    return z[:, 0], state


def test_parameters_match_norse_seed():
    p = LIFAdExParameters()
    expected = dict(adaptation_current=4.0, adaptation_spike=0.02, delta_T=0.5, tau_ada_inv=2.0, tau_syn_inv=200.0,
                    tau_mem_inv=100.0, v_leak=0.0, v_th=1.0, v_reset=0.0)
    assert p._fields == (*expected, "method", "alpha", "integrator")
    for name, value in expected.items():
        assert float(getattr(p, name)) == pytest.approx(value)
    assert p.method == "super" and p.alpha == 100.0 and p.integrator == "euler"
    assert LIFAdExState._fields == ("z", "v", "i", "a")
    assert LIFAdExFeedForwardState._fields == ("v", "i", "a")


def test_rest_state():
    p = LIFAdExParameters(v_leak=torch.tensor(-0.3))
    state = LIFAdExCell(p).initial_state(torch.zeros(2, 3))
    assert torch.equal(state.v, torch.full((2, 3), -0.3)) and not state.i.any() and not state.a.any()


# Hand-computed (plain Python floats, in the order of the equations): default parameters, x = 1.
# step 1: i_j = 1, v_d = 0.1 * (0.5 e^-2 + 1) = 0.10676676..., i' = 0.8, a' = 0
def test_hand_computed_steps_default_parameters():
    z, _ = run_constant(1.0, 1)
    expected = [
        (0.10676676416183065, 0.8, 0.0),
        (0.284467646330736, 1.44, 0.0008541341132946451),
        (0.511888181479855, 1.952, 0.0031281670157139443),
    ]
    cell = LIFAdExCell().double()
    state = None
    for v, i, a in expected:
        z, state = cell(torch.ones(1, dtype=F64), state)
        assert z.item() == 0.0
        assert state.v.item() == pytest.approx(v, rel=1e-15, abs=1e-16)
        assert state.i.item() == pytest.approx(i, rel=1e-15)
        assert state.a.item() == pytest.approx(a, rel=1e-15, abs=1e-18)


def test_hand_computed_spike_reset_and_adaptation_jump():
    # x = 10: v_d = 0.1 * (0.5 e^-2 + 10) = 1.0068 > v_th -> spike, v' = v_reset, a' = 0 + a_spike
    expected = [(0.0, 8.0, 0.02), (0.0, 14.4, 0.03996), (0.0, 19.52, 0.05988008)]
    cell = LIFAdExCell().double()
    state = None
    for v, i, a in expected:
        z, state = cell(torch.full((1,), 10.0, dtype=F64), state)
        assert z.item() == 1.0
        assert state.v.item() == v
        assert state.i.item() == pytest.approx(i, rel=1e-15)
        assert state.a.item() == pytest.approx(a, rel=1e-14)


def test_hand_computed_non_default_parameters():
    p = LIFAdExParameters(adaptation_current=2.0, adaptation_spike=0.5, delta_T=1.0, tau_ada_inv=10.0,
                          tau_syn_inv=100.0, tau_mem_inv=50.0, v_leak=-0.1, v_th=0.5, v_reset=-0.2)
    expected = [
        (0, 0.2548811636094027, 2.4, 0.0),
        (1, -0.2, 4.32, 0.5141952465443761),
        (1, -0.2, 5.856, 0.9999113416134886),
        (1, -0.2, 7.0847999999999995, 1.4759131147812188),
    ]
    cell = LIFAdExCell(p, dt=0.002).double()
    state = None
    for spiked, v, i, a in expected:
        z, state = cell(torch.full((1,), 3.0, dtype=F64), state)
        assert z.item() == spiked
        assert state.v.item() == pytest.approx(v, rel=1e-14)
        assert state.i.item() == pytest.approx(i, rel=1e-14)
        assert state.a.item() == pytest.approx(a, rel=1e-14)


# Hand-computed symplectic steps (plain Python floats, in the order of the equations).
# dt = 1 ms: c_mem = 0.05, c_ada = 0.01, c_syn = -0.1; from v = 0.4, i = 0, a = 0.1, e^{(v - v_th) / delta_T} =
# e^-0.1 = 0.9048374180359595.
# x = 0: v_d = 0.4 + 0.05 (-0.5 + 0.9048374180359595 + 0 - 0.1) = 0.415241870901798 < v_th: no spike, v' = v_d,
#        a' = 0.1 + 0.01 (2 (0.415241870901798 + 0.1) - 0.1) = 0.10930483741803597 (euler: 0.109, from v = 0.4).
# x = 12: i_j = 12, v_d = 0.4 + 0.05 (-0.5 + 0.9048374180359595 + 12 - 0.1) = 1.015241870901798 > v_th: spike,
#        v' = v_reset = -0.2, i' = 10.8, a' = 0.1 + 0.01 (2 (-0.2 + 0.1) - 0.1) + 0.5 = 0.597 (euler, from v = 0.4:
#        0.609; the pre-reset v_d would give 0.6213048374180360).
SYMPLECTIC_P = LIFAdExParameters(adaptation_current=2.0, adaptation_spike=0.5, delta_T=1.0, tau_ada_inv=10.0,
                                 tau_syn_inv=100.0, tau_mem_inv=50.0, v_leak=-0.1, v_th=0.5, v_reset=-0.2,
                                 integrator="symplectic")


@pytest.mark.parametrize("x, expected", [(0.0, (0, 0.415241870901798, 0.0, 0.10930483741803597)),
                                         (12.0, (1, -0.2, 10.8, 0.597))], ids=["below threshold", "spike"])
def test_hand_computed_symplectic_step_drives_adaptation_with_the_voltage_after_the_reset(x, expected):
    spiked, v, i, a = expected
    state = LIFAdExFeedForwardState(*(torch.tensor([value], dtype=F64) for value in (0.4, 0.0, 0.1)))
    cell = LIFAdExCell(SYMPLECTIC_P).double()
    z, new = cell(torch.full((1,), x, dtype=F64), state)
    assert z.item() == spiked
    assert new.v.item() == pytest.approx(v, rel=1e-15)
    assert new.i.item() == pytest.approx(i, rel=1e-15, abs=1e-15)
    assert new.a.item() == pytest.approx(a, rel=1e-15)
    _, euler = LIFAdExCell(SYMPLECTIC_P._replace(integrator="euler")).double()(torch.full((1,), x, dtype=F64), state)
    assert torch.equal(euler.v, new.v) and torch.equal(euler.i, new.i)
    assert euler.a.item() == pytest.approx(0.109 + 0.5 * spiked, rel=1e-15)
    ref_z, (ref_v, ref_i, ref_a) = reference_adex(torch.full((1, 1), x, dtype=F64), SYMPLECTIC_P._asdict(), 1e-3,
                                                  "super", 100.0, "symplectic", state)
    assert torch.equal(ref_z[0], z) and torch.equal(ref_a, new.a) and torch.equal(ref_v, new.v)


@pytest.mark.parametrize("where", ["parameters", "step function", "fused loop"])
def test_unknown_integrator_is_a_clear_error(where):
    from snn.neurons.fused.feed_forward import _integrate as integrate

    p = LIFAdExParameters(integrator="rk4")
    x = torch.ones(3, 2)
    with pytest.raises(ValueError, match="Unknown integrator 'rk4'; valid integrators: euler, symplectic"):
        if where == "parameters":
            LIFAdEx(p)
        elif where == "step function":
            lif_adex_feed_forward_step(x[0], LIFAdExCell().initial_state(x[0]), p)
        else:
            integrate("adex", "python", x, LIFAdExCell().initial_state(x[0]), p, 1e-3)


def test_layer_equals_cell_loop_and_returns_final_state():
    x = torch.rand(30, 4, 5) * 2
    z, state = LIFAdEx()(x)
    cell, s = LIFAdExCell(), None
    for t in range(30):
        z_t, s = cell(x[t], s)
        assert torch.equal(z[t], z_t)
    for a, b in zip(state, s, strict=True):
        assert torch.equal(a, b)


def test_layer_continues_from_given_state():
    x = torch.rand(20, 3, 4) * 2
    z_full, s_full = LIFAdEx()(x)
    z1, s1 = LIFAdEx()(x[:8])
    z2, s2 = LIFAdEx()(x[8:], s1)
    assert torch.equal(torch.cat([z1, z2]), z_full)
    assert all(torch.equal(a, b) for a, b in zip(s2, s_full, strict=True))


def test_any_trailing_shape():
    z, state = LIFAdEx()(torch.rand(5, 2, 3, 4, 4) * 3)
    assert z.shape == (5, 2, 3, 4, 4) and state.v.shape == (2, 3, 4, 4)


def isis(spikes: torch.Tensor) -> torch.Tensor:
    return torch.diff(torch.nonzero(spikes).flatten())


def test_spike_frequency_adaptation_isis_grow_then_settle():
    # 2 s of constant supra-threshold current at dt = 0.1 ms. The first spikes come while the
    # synaptic current builds up; from the 10th on, adaptation lengthens every interval.
    z, _ = run_constant(0.15, 20_000, dt=1e-4)
    intervals = isis(z)[10:]
    assert len(intervals) > 100
    assert intervals[-1] > 2 * intervals[0]                          # grows ...
    assert (torch.diff(intervals.float()) >= -1).all()               # ... monotonically (up to 1 step of jitter)
    tail = intervals[-len(intervals) // 4:]
    assert tail.max() - tail.min() <= 1                              # ... and settles


def test_no_adaptation_gives_constant_isis():
    p = LIFAdExParameters(adaptation_current=0.0, adaptation_spike=0.0)
    z, state = run_constant(0.15, 20_000, p, dt=1e-4)
    intervals = isis(z)[10:]
    assert len(intervals) > 100
    assert intervals.max() - intervals.min() <= 1
    assert not state.a.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("magnitude", [1.0, 1e3, 1e6])
def test_no_nan_or_inf_for_large_inputs(dtype, magnitude):
    torch.manual_seed(0)
    x = (torch.rand(200, 4, 16, dtype=dtype) * 2 - 1) * magnitude
    x[:, 0] = magnitude          # constant positive
    x[:, 1] = -magnitude         # constant negative
    layer = LIFAdEx().to(dtype)
    z, state = layer(x.requires_grad_(True))
    assert torch.isfinite(z).all() and all(torch.isfinite(s).all() for s in state)
    (z.sum() + state.v.sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_exp_argument_clamp_keeps_large_initial_voltage_finite():
    state = LIFAdExFeedForwardState(v=torch.tensor([100.0]), i=torch.zeros(1), a=torch.zeros(1))
    z, new = lif_adex_feed_forward_step(torch.zeros(1), state, LIFAdExParameters())
    assert z.item() == 1.0 and torch.isfinite(new.v).all() and new.v.item() == 0.0


def random_parameters(n: int, learnable: tuple[str, ...]):
    g = torch.Generator().manual_seed(1)
    per_neuron = {
        "adaptation_current": 2 + torch.rand(n, generator=g, dtype=F64) * 2,
        "adaptation_spike": 0.01 + torch.rand(n, generator=g, dtype=F64) * 0.2,
        "delta_T": 0.3 + torch.rand(n, generator=g, dtype=F64) * 0.5,
        "tau_ada_inv": 1 + torch.rand(n, generator=g, dtype=F64) * 5,
        "tau_syn_inv": 150 + torch.rand(n, generator=g, dtype=F64) * 100,
        "tau_mem_inv": 60 + torch.rand(n, generator=g, dtype=F64) * 80,
        "v_leak": torch.rand(n, generator=g, dtype=F64) * 0.1,
        "v_th": 0.9 + torch.rand(n, generator=g, dtype=F64) * 0.2,
        "v_reset": -0.1 + torch.rand(n, generator=g, dtype=F64) * 0.1,
    }
    return per_neuron


@pytest.mark.parametrize("integrator", ["euler", "symplectic"])
@pytest.mark.parametrize("method", SURROGATES)
def test_gradients_equal_eager_reference(method, integrator):
    """Input and (per-neuron, learnable) parameter gradients equal autograd through the equations."""
    n, alpha, dt = 6, 5.0, 0.001
    values = random_parameters(n, ())
    learnable = tuple(values)
    p = LIFAdExParameters(**values, method=method, alpha=alpha, integrator=integrator)
    layer = LIFAdEx(p, dt=dt, learnable=learnable).double()  # per neuron: the values are [n]
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(40, 3, n, generator=g, dtype=F64) * 3).requires_grad_(True)
    weights = torch.randn(40, 3, n, generator=g, dtype=F64)
    z, (v, i, a) = layer(x)
    assert z.sum() > 0
    ((z * weights).sum() + v.sum() + 0.5 * a.sum()).backward()

    ref_params = {k: val.clone().requires_grad_(True) for k, val in values.items()}
    x_ref = x.detach().clone().requires_grad_(True)
    z_ref, (v_r, i_r, a_r) = reference_adex(x_ref, ref_params, dt, method, alpha, integrator)
    ((z_ref * weights).sum() + v_r.sum() + 0.5 * a_r.sum()).backward()

    assert torch.equal(z, z_ref)
    torch.testing.assert_close(v, v_r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-10, atol=1e-12)
    for name in learnable:
        torch.testing.assert_close(value_grad(layer, name), ref_params[name].grad, rtol=1e-10, atol=1e-12,
                                   msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("backend", ["auto", "eager"])
@pytest.mark.parametrize("integrator", ["euler", "symplectic"])
def test_gradcheck_subthreshold_dynamics(integrator, backend):
    # Below threshold the step is smooth, so finite differences must agree with autograd.
    layer = LIFAdEx(LIFAdExParameters(adaptation_current=1.5, integrator=integrator), backend=backend, shape=(3,),
                    learnable=("tau_mem_inv", "adaptation_current", "delta_T", "tau_ada_inv")).double()
    x = (torch.rand(15, 2, 3, dtype=F64) * 0.05).requires_grad_(True)

    def final_state(x, tau_mem_inv, adaptation_current, delta_T, tau_ada_inv):
        p = layer.neuron_parameters(x)._replace(tau_mem_inv=tau_mem_inv, adaptation_current=adaptation_current,
                                                delta_T=delta_T, tau_ada_inv=tau_ada_inv)
        z, s = layer.integrate(x, layer.rest_state(x[0]), p)
        assert not z.any()
        return s.v, s.a

    params = [getattr(layer, n).detach().clone().requires_grad_(True)
              for n in ("tau_mem_inv", "adaptation_current", "delta_T", "tau_ada_inv")]
    assert torch.autograd.gradcheck(final_state, (x, *params))


def test_recurrent_cell_adds_input_and_recurrent_currents():
    torch.manual_seed(0)
    cell = LIFAdExRecurrentCell(3, 4, autapses=False).double()
    x = torch.rand(2, 3, dtype=F64) * 20
    state = LIFAdExState(z=torch.ones(2, 4, dtype=F64), v=torch.zeros(2, 4, dtype=F64),
                         i=torch.zeros(2, 4, dtype=F64), a=torch.zeros(2, 4, dtype=F64))
    z, new = cell(x, state)
    w_rec = cell.recurrent_weights.detach() * (1 - torch.eye(4, dtype=F64))
    current = x @ cell.input_weights.detach().T + state.z @ w_rec.T
    z_ff, ff = lif_adex_feed_forward_step(current, LIFAdExFeedForwardState(state.v, state.i, state.a),
                                          LIFAdExParameters(), 0.001)
    assert torch.equal(z, z_ff) and torch.allclose(new.v, ff.v) and torch.equal(new.z, z)


@pytest.mark.exactness
@pytest.mark.usefixtures("one_blas_thread")
def test_recurrent_layer_loops_the_cell_and_removes_autapses():
    torch.manual_seed(0)
    layer = LIFAdExRecurrent(3, 5)
    assert layer.effective_recurrent_weights().diagonal().abs().sum() == 0
    assert layer.recurrent_weights.diagonal().abs().sum() == 0
    x = torch.rand(12, 2, 3) * 5
    z, state = layer(x)
    assert z.shape == (12, 2, 5) and state.z.shape == (2, 5)
    cell = LIFAdExRecurrentCell(3, 5)
    cell.load_state_dict(layer.state_dict())
    s = None
    for t in range(12):
        z_t, s = cell(x[t], s)
        assert torch.equal(z_t, z[t])
    with_autapses = LIFAdExRecurrentCell(3, 5, autapses=True, recurrent_weights=torch.ones(5, 5))
    assert torch.equal(with_autapses.effective_recurrent_weights(), torch.ones(5, 5))


def test_recurrent_input_feature_mismatch():
    with pytest.raises(ValueError, match="expects 3 input features"):
        LIFAdExRecurrent(3, 5)(torch.rand(4, 2, 7))
