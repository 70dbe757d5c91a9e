"""snn.neurons against norse 1.1.0, the library whose API and numerics we promise to match.

Needs norse (a test-only dependency: ``pip install -e ".[norse]"``); skipped otherwise.
Everything runs in float64 with float64 parameters handed to both libraries, because norse
multiplies ``dt * tau_inv`` before promoting to the input dtype: with float32 parameters its
float64 results carry float32 rounding (states then differ by ~1e-7, see the last test).

Known, documented differences (pinned at the end of this file):
- norse 1.1.0's ``super`` surrogate ignores ``alpha``: its backward is ``1 / (|x| + 1)^2``, ours
  at ``alpha=1``. Its ``triangle`` is ``alpha * relu(1 - |x|)``, ours at ``alpha=1`` too.
- norse's ``tanh`` surrogate is ``1 - tanh^2(alpha x)``; ours is the derivative of
  ``(1 + tanh(alpha x)) / 2``, i.e. ``alpha/2`` times that. A user who wants norse's can register it.
- norse's rest state detaches ``v_leak``; ours lets a learnable ``v_leak`` get the gradient of the
  initial voltage too. The gradient tests therefore start both from the same explicit state.
- norse's recurrent LIF (``lif_step``, unlike its feed-forward LIF and both AdEx steps) detaches the
  spike in the reset; ours lets the gradient flow through it everywhere, so only the forward pass of
  ``LIFRecurrent`` is compared.
- norse's ``LI``/``LIF`` rest states are float32 whatever the input: those tests pass a float64 state.
"""

import warnings

import pytest
import torch

from snn.neurons import (
    LI,
    LIF,
    SURROGATES,
    LICell,
    LIFAdEx,
    LIFAdExCell,
    LIFAdExFeedForwardState,
    LIFAdExParameters,
    LIFAdExRecurrent,
    LIFAdExRecurrentCell,
    LIFAdExState,
    LIFCell,
    LIFFeedForwardState,
    LIFParameters,
    LIFRecurrent,
    LIFState,
    LILinearCell,
    LIParameters,
    LIState,
    register_surrogate,
    spike,
)
from tests.helpers import value_grad

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # norse uses torch.jit.script, deprecated in recent torch
    norse = pytest.importorskip(
        "norse.torch", reason="norse is not installed (test-only dependency: pip install -e '.[norse]')"
    )
    from norse.torch.functional.threshold import threshold as norse_threshold

F64 = torch.float64
T, B, N = 200, 3, 5
ATOL = 1e-9

# One scalar set of non-default values and one with a value per neuron ([N]).
ADEX_CUSTOM = dict(adaptation_current=2.5, adaptation_spike=0.3, delta_T=0.3, tau_ada_inv=5.0,
                   tau_syn_inv=150.0, tau_mem_inv=70.0, v_leak=-0.1, v_th=0.9, v_reset=-0.3)
ADEX_PER_NEURON = dict(adaptation_current=torch.linspace(0.0, 8.0, N), adaptation_spike=torch.linspace(0.0, 0.5, N),
                       delta_T=torch.linspace(0.2, 0.8, N), tau_mem_inv=torch.linspace(50.0, 150.0, N),
                       v_th=torch.linspace(0.8, 1.2, N), v_reset=torch.linspace(-0.4, 0.2, N))
LIF_CUSTOM = dict(tau_syn_inv=120.0, tau_mem_inv=60.0, v_leak=-0.1, v_th=0.7, v_reset=-0.2)
LI_CUSTOM = dict(tau_syn_inv=120.0, tau_mem_inv=60.0, v_leak=-0.1)
PARAMETER_SETS = {
    LIFAdExParameters: {"default": {}, "custom": ADEX_CUSTOM, "per_neuron": ADEX_PER_NEURON},
    LIFParameters: {"default": {}, "custom": LIF_CUSTOM},
    LIParameters: {"default": {}, "custom": LI_CUSTOM},
}


def parameter_pair(ours_class, overrides, method="super", alpha=100.0):
    """The same float64 parameters as (ours, norse's) NamedTuple; norse's class has our fields.

    The values are rounded to float32 first, so that a module in float32 or float64 holds exactly the
    numbers norse is given."""
    norse_class = getattr(norse, ours_class.__name__)
    values = {f: getattr(ours_class(), f) for f in ours_class._fields if f not in ("method", "alpha", "integrator")}
    values.update(overrides)
    values = {f: torch.as_tensor(v).float().to(F64) for f, v in values.items()}
    extra = {"method": method, "alpha": alpha} if "method" in ours_class._fields else {}
    ours = ours_class(**values, **extra)
    theirs = norse_class(**{f: v.clone() for f, v in values.items()}, **extra)
    return ours, theirs


def make_input(kind, generator, shape=(T, B, N)):
    if kind == "constant":  # supra-threshold step: the synaptic filter settles at 5x the input
        return torch.full(shape, 0.6, dtype=F64)
    if kind == "random":
        return torch.randn(shape, generator=generator, dtype=F64) + 0.3
    if kind == "spikes":  # sparse input spikes with positive and negative weights
        kicks = (torch.rand(shape, generator=generator, dtype=F64) < 0.15).to(F64)
        return kicks * (4 * torch.rand(shape, generator=generator, dtype=F64) - 1)
    raise KeyError(kind)


def random_state(state_class, generator, shape=(B, N)):
    """A state away from rest (v between -0.5 and 0.9, below any threshold used here)."""
    fields = {
        "z": (torch.rand(shape, generator=generator, dtype=F64) < 0.3).to(F64),
        "v": 1.4 * torch.rand(shape, generator=generator, dtype=F64) - 0.5,
        "i": torch.randn(shape, generator=generator, dtype=F64),
        "a": 0.5 * torch.rand(shape, generator=generator, dtype=F64),
    }
    return state_class(**{f: fields[f] for f in state_class._fields})


def assert_same_states(ours, theirs):
    assert type(ours).__name__ == type(theirs).__name__ and ours._fields == theirs._fields
    for name, a, b in zip(ours._fields, ours, theirs, strict=True):
        assert a.dtype == F64, name
        torch.testing.assert_close(a, b.to(F64), rtol=0, atol=ATOL, msg=lambda m, name=name: f"state.{name}: {m}")


def assert_some_spikes(z):
    """The comparison says something only if neurons both spike and stay silent."""
    assert 0 < z.sum() < z.numel()


def clone_state(state, requires_grad=False):
    return type(state)(*(s.clone().requires_grad_(requires_grad) for s in state))


# --- forward: spikes identical, states within 1e-9 --------------------------------------------

@pytest.mark.parametrize("params", ["default", "custom", "per_neuron"])
@pytest.mark.parametrize("kind", ["constant", "random", "spikes"])
@pytest.mark.parametrize("start", ["rest", "random"])
@pytest.mark.parametrize("dt", [1e-3, 5e-4])
def test_lif_adex_layer_equals_norse(params, kind, start, dt):
    g = torch.Generator().manual_seed(1)
    ours_p, norse_p = parameter_pair(LIFAdExParameters, PARAMETER_SETS[LIFAdExParameters][params])
    x = make_input(kind, g)
    state = None if start == "rest" else random_state(LIFAdExFeedForwardState, g)
    z, s = LIFAdEx(ours_p, dt=dt)(x, state)
    z_norse, s_norse = norse.LIFAdEx(norse_p, dt=dt)(x, state)
    assert_some_spikes(z)
    assert torch.equal(z, z_norse)
    assert_same_states(s, s_norse)


@pytest.mark.parametrize("params", ["default", "custom", "per_neuron"])
def test_lif_adex_cell_equals_norse_at_every_step(params):
    g = torch.Generator().manual_seed(2)
    ours_p, norse_p = parameter_pair(LIFAdExParameters, PARAMETER_SETS[LIFAdExParameters][params])
    cell, norse_cell = LIFAdExCell(ours_p), norse.LIFAdExCell(norse_p)
    x = make_input("random", g) * 2
    s = s_norse = random_state(LIFAdExFeedForwardState, g)
    spikes = []
    for x_t in x:
        z, s = cell(x_t, s)
        z_norse, s_norse = norse_cell(x_t, s_norse)
        assert torch.equal(z, z_norse)
        assert_same_states(s, s_norse)
        spikes.append(z)
    assert_some_spikes(torch.stack(spikes))


def recurrent_weights(generator, input_size, hidden_size):
    """Weights exactly representable in float32: our modules create their weights in the default
    dtype and copy the given ones in (then ``.double()``), norse keeps the tensor it is given."""
    w_in = torch.randn(hidden_size, input_size, generator=generator) + 0.5  # excitatory on average
    w_rec = torch.randn(hidden_size, hidden_size, generator=generator) * 0.5
    return w_in.to(F64), w_rec.to(F64)


@pytest.mark.parametrize("autapses", [False, True])
@pytest.mark.parametrize("params", ["default", "custom"])
def test_lif_adex_recurrent_equals_norse(params, autapses):
    g = torch.Generator().manual_seed(3)
    ours_p, norse_p = parameter_pair(LIFAdExParameters, PARAMETER_SETS[LIFAdExParameters][params])
    input_size, hidden_size = 4, N
    w_in, w_rec = recurrent_weights(g, input_size, hidden_size)
    x = make_input("random", g, (T, B, input_size)).abs()
    ours = LIFAdExRecurrent(input_size, hidden_size, ours_p, autapses=autapses,
                            input_weights=w_in, recurrent_weights=w_rec).double()
    # norse zeroes the diagonal of the weights it is given in place: hand it copies
    theirs = norse.LIFAdExRecurrent(input_size, hidden_size, norse_p, autapses=autapses,
                                    input_weights=w_in.clone(), recurrent_weights=w_rec.clone())
    z, s = ours(x)
    z_norse, s_norse = theirs(x)
    assert_some_spikes(z)
    assert torch.equal(z, z_norse)
    assert_same_states(s, s_norse)

    cell = LIFAdExRecurrentCell(input_size, hidden_size, ours_p, autapses=autapses,
                                input_weights=w_in, recurrent_weights=w_rec).double()
    norse_cell = norse.LIFAdExRecurrentCell(input_size, hidden_size, norse_p, autapses=autapses,
                                            input_weights=w_in.clone(), recurrent_weights=w_rec.clone())
    s = s_norse = random_state(LIFAdExState, g, (B, hidden_size))
    for x_t in x[:50]:
        z, s = cell(x_t, s)
        z_norse, s_norse = norse_cell(x_t, s_norse)
        assert torch.equal(z, z_norse)
        assert_same_states(s, s_norse)


@pytest.mark.parametrize("params", ["default", "custom"])
@pytest.mark.parametrize("kind", ["constant", "random", "spikes"])
def test_lif_layer_and_cell_equal_norse(params, kind):
    g = torch.Generator().manual_seed(4)
    ours_p, norse_p = parameter_pair(LIFParameters, PARAMETER_SETS[LIFParameters][params])
    x = make_input(kind, g)
    # norse's LIF rest state is float32 whatever the input: start both from the same float64 state
    state = random_state(LIFFeedForwardState, g)
    z, s = LIF(ours_p)(x, state)
    z_norse, s_norse = norse.LIF(norse_p)(x, state)
    assert_some_spikes(z)
    assert torch.equal(z, z_norse)
    assert_same_states(s, s_norse)

    cell, norse_cell = LIFCell(ours_p), norse.LIFCell(norse_p)
    s = s_norse = state
    for x_t in x[:50]:
        z, s = cell(x_t, s)
        z_norse, s_norse = norse_cell(x_t, s_norse)
        assert torch.equal(z, z_norse)
        assert_same_states(s, s_norse)


def test_lif_recurrent_forward_equals_norse():
    g = torch.Generator().manual_seed(5)
    ours_p, norse_p = parameter_pair(LIFParameters, LIF_CUSTOM)
    w_in, w_rec = recurrent_weights(g, 4, N)
    x = make_input("random", g, (T, B, 4)).abs()
    state = random_state(LIFState, g)
    z, s = LIFRecurrent(4, N, ours_p, input_weights=w_in, recurrent_weights=w_rec).double()(x, state)
    z_norse, s_norse = norse.LIFRecurrent(4, N, norse_p, input_weights=w_in.clone(),
                                          recurrent_weights=w_rec.clone())(x, state)
    assert_some_spikes(z)
    assert torch.equal(z, z_norse)
    assert_same_states(s, s_norse)


@pytest.mark.parametrize("params", ["default", "custom"])
@pytest.mark.parametrize("kind", ["constant", "random", "spikes"])
def test_li_layer_cells_equal_norse(params, kind):
    g = torch.Generator().manual_seed(6)
    ours_p, norse_p = parameter_pair(LIParameters, PARAMETER_SETS[LIParameters][params])
    x = make_input(kind, g)
    state = random_state(LIState, g)  # norse's LI rest state is float32 whatever the input
    v, s = LI(ours_p)(x, state)
    v_norse, s_norse = norse.LI(norse_p)(x, state)
    torch.testing.assert_close(v, v_norse, rtol=0, atol=ATOL)
    assert_same_states(s, s_norse)

    cell, norse_cell = LICell(ours_p), norse.LICell(norse_p)
    linear = LILinearCell(4, N, ours_p).double()
    norse_linear = norse.LILinearCell(4, N, norse_p).double()
    with torch.no_grad():
        norse_linear.input_weights.copy_(linear.input_weights)
    x_linear = make_input(kind, g, (T, B, 4))
    s = s_norse = s_linear = s_norse_linear = state
    for x_t, x_linear_t in zip(x[:50], x_linear[:50], strict=True):
        v, s = cell(x_t, s)
        v_norse, s_norse = norse_cell(x_t, s_norse)
        torch.testing.assert_close(v, v_norse, rtol=0, atol=ATOL)
        assert_same_states(s, s_norse)
        v, s_linear = linear(x_linear_t, s_linear)
        v_norse, s_norse_linear = norse_linear(x_linear_t, s_norse_linear)
        torch.testing.assert_close(v, v_norse, rtol=0, atol=ATOL)
        assert_same_states(s_linear, s_norse_linear)


# --- gradients ----------------------------------------------------------------------------------

@pytest.fixture
def norse_tanh():
    """norse's tanh surrogate, 1 - tanh^2(alpha x), registered in our registry for one test."""
    register_surrogate("norse_tanh", lambda x, alpha: 1 - torch.tanh(alpha * x).pow(2))
    yield "norse_tanh"
    del SURROGATES["norse_tanh"]


def loss_of(z, state, generator):
    """A loss that weights every spike and every final state variable differently."""
    total = (z * torch.randn(z.shape, generator=generator, dtype=F64)).sum()
    for s in state:
        total = total + (s * torch.randn(s.shape, generator=generator, dtype=F64)).sum()
    return total


# (our method, our alpha, norse's method, norse's alpha): pairs with the same surrogate derivative
SURROGATE_PAIRS = {
    "super": ("super", 1.0, "super", 100.0),  # norse ignores alpha: 1 / (|x| + 1)^2
    "triangle": ("triangle", 1.0, "triangle", 1.0),
    "heaviside": ("heaviside", 100.0, "heaviside", 100.0),
    "tanh": (None, 10.0, "tanh", 10.0),  # ours: the registered norse_tanh
}


@pytest.mark.parametrize("surrogate", list(SURROGATE_PAIRS))
@pytest.mark.parametrize("params", ["custom", "per_neuron"])
def test_lif_adex_gradients_equal_norse(surrogate, params, norse_tanh):
    method, alpha, norse_method, norse_alpha = SURROGATE_PAIRS[surrogate]
    method = method or norse_tanh
    overrides = PARAMETER_SETS[LIFAdExParameters][params]
    ours_p, _ = parameter_pair(LIFAdExParameters, overrides, method, alpha)
    _, norse_p = parameter_pair(LIFAdExParameters, overrides, norse_method, norse_alpha)
    fields = [f for f in LIFAdExParameters._fields if f not in ("method", "alpha", "integrator")]
    norse_p = norse_p._replace(**{f: getattr(norse_p, f).requires_grad_() for f in fields})
    layer = LIFAdEx(ours_p, learnable=fields, shape=(N,) if params == "per_neuron" else ()).double()
    g = torch.Generator().manual_seed(7)
    x = make_input("random", g, (100, B, N)) * 2
    state = random_state(LIFAdExFeedForwardState, g)
    x_ours, x_norse = x.clone().requires_grad_(), x.clone().requires_grad_()
    s_ours, s_norse = clone_state(state, True), clone_state(state, True)

    z, s = layer(x_ours, s_ours)
    loss_of(z, s, torch.Generator().manual_seed(8)).backward()
    z_norse, s_n = norse.LIFAdEx(norse_p)(x_norse, s_norse)
    loss_of(z_norse, s_n, torch.Generator().manual_seed(8)).backward()

    assert_some_spikes(z)
    assert torch.equal(z, z_norse)
    assert x_ours.grad.abs().sum() > 0
    torch.testing.assert_close(x_ours.grad, x_norse.grad, rtol=1e-9, atol=ATOL)
    for name, a, b in zip(state._fields, s_ours, s_norse, strict=True):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-9, atol=ATOL, msg=lambda m, n=name: f"d/d state.{n}: {m}")
    for name in fields:  # per neuron for ours; summed where norse's constant is one value
        norse_grad = getattr(norse_p, name).grad
        torch.testing.assert_close(value_grad(layer, name).sum_to_size(norse_grad.shape), norse_grad, rtol=1e-9,
                                   atol=ATOL, msg=lambda m, n=name: f"d/d {n}: {m}")


@pytest.mark.parametrize("autapses", [False, True])
def test_lif_adex_recurrent_weight_gradients_equal_norse(autapses):
    ours_p, _ = parameter_pair(LIFAdExParameters, ADEX_CUSTOM, "super", 1.0)
    _, norse_p = parameter_pair(LIFAdExParameters, ADEX_CUSTOM, "super", 100.0)
    g = torch.Generator().manual_seed(9)
    w_in, w_rec = recurrent_weights(g, 4, N)
    x = make_input("random", g, (100, B, 4)).abs()
    ours = LIFAdExRecurrent(4, N, ours_p, autapses=autapses, input_weights=w_in, recurrent_weights=w_rec).double()
    theirs = norse.LIFAdExRecurrent(4, N, norse_p, autapses=autapses,
                                    input_weights=torch.nn.Parameter(w_in.clone()),
                                    recurrent_weights=torch.nn.Parameter(w_rec.clone()))
    state = random_state(LIFAdExState, g)
    z, s = ours(x, state)
    loss_of(z, s, torch.Generator().manual_seed(10)).backward()
    z_norse, s_norse = theirs(x, state)
    loss_of(z_norse, s_norse, torch.Generator().manual_seed(10)).backward()
    assert_some_spikes(z)
    assert torch.equal(z, z_norse)
    assert ours.recurrent_weights.grad.abs().sum() > 0
    for name in ("input_weights", "recurrent_weights"):
        torch.testing.assert_close(getattr(ours, name).grad, getattr(theirs, name).grad, rtol=1e-9, atol=ATOL)
    assert (ours.recurrent_weights.grad.diagonal() == 0).all() != autapses


@pytest.mark.parametrize("surrogate", ["super", "triangle"])
def test_lif_and_li_gradients_equal_norse(surrogate):
    _, alpha, norse_method, norse_alpha = SURROGATE_PAIRS[surrogate]
    g = torch.Generator().manual_seed(11)
    x = make_input("random", g, (100, B, N)) * 2
    for ours_class, ours_module, norse_module in ((LIFParameters, LIF, norse.LIF), (LIParameters, LI, norse.LI)):
        overrides = PARAMETER_SETS[ours_class]["custom"]
        spiking = "method" in ours_class._fields
        ours_p, _ = parameter_pair(ours_class, overrides, surrogate, alpha)
        _, norse_p = parameter_pair(ours_class, overrides, norse_method, norse_alpha)
        fields = [f for f in ours_class._fields if f not in ("method", "alpha", "integrator")]
        norse_p = norse_p._replace(**{f: getattr(norse_p, f).requires_grad_() for f in fields})
        layer = ours_module(ours_p, learnable=fields, shape=()).double()
        state = random_state(LIFFeedForwardState if spiking else LIState, g)
        x_ours, x_norse = x.clone().requires_grad_(), x.clone().requires_grad_()
        out, s = layer(x_ours, state)
        loss_of(out, s, torch.Generator().manual_seed(12)).backward()
        out_norse, s_norse = norse_module(norse_p)(x_norse, state)
        loss_of(out_norse, s_norse, torch.Generator().manual_seed(12)).backward()
        if spiking:
            assert_some_spikes(out)
        torch.testing.assert_close(x_ours.grad, x_norse.grad, rtol=1e-9, atol=ATOL)
        for name in fields:
            torch.testing.assert_close(value_grad(layer, name), getattr(norse_p, name).grad, rtol=1e-9,
                                       atol=ATOL, msg=lambda m, n=name, k=ours_module.__name__: f"{k} d/d {n}: {m}")


# --- the documented differences -----------------------------------------------------------------

def surrogate_gradient(fn, x):
    x = x.clone().requires_grad_()
    fn(x).sum().backward()
    return x.grad


def test_documented_surrogate_differences_from_norse(norse_tanh):
    x = torch.arange(-80, 81, dtype=F64) / 40  # -2 ... 2, with x[80] = 0
    for alpha in (1.0, 10.0, 100.0):
        norse_super = surrogate_gradient(lambda v, a=alpha: norse_threshold(v, "super", a), x)
        # norse's super does not depend on alpha and equals ours at alpha = 1
        torch.testing.assert_close(norse_super, surrogate_gradient(lambda v: spike(v, "super", 1.0), x))
        # norse's tanh is ours times 2 / alpha
        norse_tanh_grad = surrogate_gradient(lambda v, a=alpha: norse_threshold(v, "tanh", a), x)
        ours_tanh = surrogate_gradient(lambda v, a=alpha: spike(v, "tanh", a), x)
        torch.testing.assert_close(norse_tanh_grad, ours_tanh * 2 / alpha)
        torch.testing.assert_close(norse_tanh_grad, surrogate_gradient(lambda v, a=alpha: spike(v, norse_tanh, a), x))
    # ours honours alpha: at the default alpha = 100 the two super surrogates differ off threshold
    ours_super = surrogate_gradient(lambda v: spike(v, "super", 100.0), x)
    norse_super = surrogate_gradient(lambda v: norse_threshold(v, "super", 100.0), x)
    assert ours_super[80] == norse_super[80] == 1.0  # x = 0
    assert (ours_super[x.abs() > 0.01] < norse_super[x.abs() > 0.01] / 2).all()


def test_float32_parameters_make_norse_round_dt_times_tau():
    """norse's default parameters are float32 tensors, and with float64 input it computes
    dt * tau_inv in float32 (a Python float times a 0-dim float32 tensor stays float32); ours are
    float64 and cast to the input's dtype first. Spikes still agree, states within float32 rounding."""
    x = make_input("constant", None, (300, B, N))
    z, s = LIFAdEx()(x)
    z_norse, s_norse = norse.LIFAdEx()(x)
    assert_some_spikes(z)
    assert torch.equal(z, z_norse)
    for a, b in zip(s, s_norse, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    # our defaults are exact float64 numbers: given those, norse agrees to 1e-9
    exact = {f: torch.as_tensor(getattr(LIFAdExParameters(), f), dtype=F64) for f in norse.LIFAdExParameters._fields
             if f not in ("method", "alpha")}
    _, s_norse_exact = norse.LIFAdEx(norse.LIFAdExParameters(**exact))(x)
    assert_same_states(s, s_norse_exact)


def test_norse_defaults_train_as_ours_at_alpha_1():
    """The practical consequence of norse's ``super``: with both libraries' defaults (``super``,
    alpha 100) the input gradients differ several-fold; ours with ``alpha=1`` gives norse's."""
    g = torch.Generator().manual_seed(11)
    x = make_input("random", g, (100, B, N)) * 2
    grads = {}
    for name, layer in [("norse", norse.LIFAdEx(norse.LIFAdExParameters())), ("ours", LIFAdEx()),
                        ("ours_alpha_1", LIFAdEx(LIFAdExParameters(alpha=1.0)))]:
        xg = x.clone().requires_grad_()
        z, s = layer(xg)
        loss_of(z, s, torch.Generator().manual_seed(12)).backward()
        grads[name] = xg.grad
    assert_some_spikes(z)
    torch.testing.assert_close(grads["ours_alpha_1"], grads["norse"], rtol=1e-5, atol=1e-6)
    assert grads["norse"].abs().sum() > 2 * grads["ours"].abs().sum()


def test_rest_state_v_leak_gets_the_gradient_norse_detaches():
    """From rest (state=None) norse starts from ``v_leak.detach()``; ours from ``v_leak`` itself, so
    a learnable ``v_leak`` also gets the gradient of the initial voltage: ours = norse's + d/dv0."""
    ours_p, norse_p = parameter_pair(LIFAdExParameters, ADEX_CUSTOM, "super", 1.0)
    x = make_input("random", torch.Generator().manual_seed(13), (60, B, N)) * 2

    def backward(layer, state=None):
        z, s = layer(x, state)
        loss_of(z, s, torch.Generator().manual_seed(14)).backward()

    norse_p = norse_p._replace(v_leak=norse_p.v_leak.requires_grad_())
    backward(norse.LIFAdEx(norse_p))
    g_norse = norse_p.v_leak.grad
    ours = LIFAdEx(ours_p, learnable=["v_leak"], shape=()).double()
    backward(ours)
    g_ours = value_grad(ours, "v_leak")
    detached = LIFAdEx(ours_p, learnable=["v_leak"], shape=()).double()
    v0 = torch.full((B, N), float(ours_p.v_leak), dtype=F64, requires_grad=True)
    rest = LIFAdExFeedForwardState(v0, torch.zeros(B, N, dtype=F64), torch.zeros(B, N, dtype=F64))
    backward(detached, rest)
    g_detached = value_grad(detached, "v_leak")
    torch.testing.assert_close(g_detached, g_norse, rtol=1e-9, atol=ATOL)
    torch.testing.assert_close(g_ours, g_norse + v0.grad.sum(), rtol=1e-9, atol=ATOL)
    assert v0.grad.abs().sum() > 0


@pytest.mark.parametrize("method", ["super", "heaviside"])
def test_recurrent_lif_reset_gradient_differs_from_norse_only_through_the_spike(method):
    """norse's ``lif_step`` detaches the spike in the reset (its other steps do not); ours does
    not. The forward is the same, and the gradients agree exactly when the spike has none
    (heaviside); with a surrogate they differ."""
    ours_p, norse_p = parameter_pair(LIFParameters, LIF_CUSTOM, method, 1.0)
    g = torch.Generator().manual_seed(15)
    w_in, w_rec = recurrent_weights(g, 4, N)
    x = make_input("random", g, (80, B, 4)).abs()
    results = []
    for layer in (LIFRecurrent(4, N, ours_p, input_weights=w_in, recurrent_weights=w_rec).double(),
                  norse.LIFRecurrent(4, N, norse_p, input_weights=w_in.clone(), recurrent_weights=w_rec.clone())):
        xg = x.clone().requires_grad_()
        z, s = layer(xg)
        loss_of(z, s, torch.Generator().manual_seed(16)).backward()
        results.append((z, xg.grad))
    (z, grad), (z_norse, grad_norse) = results
    assert_some_spikes(z)
    assert torch.equal(z, z_norse)
    if method == "heaviside":
        torch.testing.assert_close(grad, grad_norse, rtol=1e-9, atol=ATOL)
    else:
        assert not torch.allclose(grad, grad_norse, rtol=1e-3, atol=1e-6)


def test_exponential_is_clamped_where_norse_overflows():
    """At ``v - v_th > 20 delta_T`` ours clamps the exponent (finite everywhere); norse's overflows.
    Below that both agree (the forward tests above)."""
    state = LIFAdExFeedForwardState(torch.full((1, 1), 1000.0, dtype=F64), torch.zeros(1, 1, dtype=F64),
                                    torch.zeros(1, 1, dtype=F64))
    x = torch.zeros(1, 1, dtype=F64)
    _, ours = LIFAdExCell()(x, state)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, theirs = norse.LIFAdExCell()(x, norse.LIFAdExFeedForwardState(*state))
    assert all(torch.isfinite(s).all() for s in ours)
    assert not all(torch.isfinite(s).all() for s in theirs)


def test_current_encoder_integrates_the_adaptation_norse_sets_without_dt():
    """``lif_adex_current_encoder``: spikes and voltage as norse's; its adaptation is
    ``tau_ada_inv (a_current (v' - v_leak) - a) + z a_spike``, ours the Euler step of the
    feed-forward neuron with no synaptic current."""
    from norse.torch.functional.lif_adex import lif_adex_current_encoder as norse_encoder

    from snn.neurons import lif_adex_current_encoder, lif_adex_feed_forward_step

    ours_p, norse_p = parameter_pair(LIFAdExParameters, ADEX_CUSTOM)
    g = torch.Generator().manual_seed(17)
    v, a = random_state(LIFAdExFeedForwardState, g).v, torch.rand(B, N, generator=g, dtype=F64)
    x = make_input("random", g, (B, N)) * 40
    z, v_new, a_new = lif_adex_current_encoder(x, v, a, ours_p)
    z_norse, v_norse, a_norse = norse_encoder(x, v, a, norse_p)
    assert 0 < z.sum() < z.numel() and torch.equal(z, z_norse)
    torch.testing.assert_close(v_new, v_norse, rtol=0, atol=ATOL)
    p = ours_p
    torch.testing.assert_close(a_norse, p.tau_ada_inv * (p.adaptation_current * (v_norse - p.v_leak) - a)
                               + z * p.adaptation_spike, rtol=0, atol=ATOL)
    step_z, step = lif_adex_feed_forward_step(x, LIFAdExFeedForwardState(v, torch.zeros_like(v), a), p)
    assert torch.equal(step_z, z) and torch.equal(step.v, v_new) and torch.equal(step.a, a_new)
    assert not torch.allclose(a_new, a_norse)


def test_rest_state_needs_no_gradient_where_norse_asks_for_one():
    """norse's rest state sets ``requires_grad=True`` on ``v``, so a module without parameters fed
    an input without gradient still builds a graph; ours starts from a constant: nothing to
    differentiate until the input or the state asks for it."""
    x = make_input("random", torch.Generator().manual_seed(18), (10, B, N))
    norse.LIFAdEx()(x)[0].sum().backward()  # norse: a graph from its rest state alone
    with pytest.raises(RuntimeError, match="does not require grad"):
        LIFAdEx()(x)[0].sum().backward()
    LIFAdEx()(x.clone().requires_grad_())[0].sum().backward()  # the fix docs/guides/norse.md gives


def test_lif_encoder_and_integrals_equal_norse():
    """``lif_current_encoder``, ``lif_feed_forward_integral`` and ``lif_step_integral`` (norse's
    names; ours loop our step functions): the same spikes, states within 1e-9. norse's
    ``lif_step_integral`` returns only the last step's spikes (its docstring promises all of them);
    ours returns all, as ``lif_feed_forward_integral`` does."""
    from norse.torch.functional import lif as norse_lif

    from snn.neurons import lif_current_encoder, lif_feed_forward_integral, lif_step_integral

    ours_p, norse_p = parameter_pair(LIFParameters, LIF_CUSTOM)
    g = torch.Generator().manual_seed(19)
    x = make_input("random", g, (60, B, N)) * 3
    v = random_state(LIFFeedForwardState, g).v
    z, v_new = lif_current_encoder(x[0] * 10, v, ours_p)
    z_norse, v_norse = norse_lif.lif_current_encoder(x[0] * 10, v, norse_p)
    assert 0 < z.sum() < z.numel() and torch.equal(z, z_norse)
    torch.testing.assert_close(v_new, v_norse, rtol=0, atol=ATOL)

    state = random_state(LIFFeedForwardState, g)
    z, s = lif_feed_forward_integral(x, state, ours_p)
    z_norse, s_norse = norse_lif.lif_feed_forward_integral(x, state, norse_p)
    assert_some_spikes(z)
    assert torch.equal(z, z_norse) and z.shape == x.shape
    assert_same_states(s, s_norse)

    w_in, w_rec = recurrent_weights(g, N, N)
    state = random_state(LIFState, g)
    z, s = lif_step_integral(x, state, w_in, w_rec, ours_p)
    z_norse, s_norse = norse_lif.lif_step_integral(x, state, w_in, w_rec, norse_p)
    assert_some_spikes(z)
    assert z.shape == x.shape and z_norse.shape == x.shape[1:] and torch.equal(z[-1], z_norse)
    assert_same_states(s, s_norse)
