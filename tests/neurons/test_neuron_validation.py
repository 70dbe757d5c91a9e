"""Bad neuron constants and mismatched dtypes are refused with one sentence; learnable constants
trained far from their start compute the same on every backend."""

import pytest
import torch

from snn.neurons import (
    LI,
    LIF,
    LICell,
    LIFAdEx,
    LIFAdExCell,
    LIFAdExParameters,
    LIFAdExRecurrent,
    LIFAdExRecurrentCell,
    LIFCell,
    LIFParameters,
    LIFRecurrent,
    LIFRecurrentCell,
    LILinearCell,
    LIParameters,
    LIState,
    li_step,
    lif_adex_step,
    lif_step,
)
from tests.helpers import require_cpp_kernels

F64 = torch.float64

# Every module class with the arguments it needs before p: (class, parameters class, args).
MODULES = [
    (LIFAdExCell, LIFAdExParameters, ()),
    (LIFAdEx, LIFAdExParameters, ()),
    (LIFAdExRecurrentCell, LIFAdExParameters, (3, 4)),
    (LIFAdExRecurrent, LIFAdExParameters, (3, 4)),
    (LIFCell, LIFParameters, ()),
    (LIF, LIFParameters, ()),
    (LIFRecurrentCell, LIFParameters, (3, 4)),
    (LIFRecurrent, LIFParameters, (3, 4)),
    (LICell, LIParameters, ()),
    (LI, LIParameters, ()),
    (LILinearCell, LIParameters, (3, 4)),
]
WEIGHTED = [pytest.param(cls, args, id=cls.__name__) for cls, _, args in MODULES if args]


# --- dtype of the modules with weight matrices ----------------------------------------------------


def weighted_input(cls, dtype):
    shape = (
        (6, 2, 3) if cls in (LIFAdExRecurrent, LIFRecurrent) else (2, 3)
    )  # [T, B, in] or [B, in]
    return torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=dtype) * 4


@pytest.mark.parametrize("cls, args", WEIGHTED)
def test_float64_input_to_a_double_module_computes_in_float64(cls, args):
    """A .double() recurrent module or LILinearCell takes float64 input and gives float64 results
    equal to its step function run by hand in float64."""
    torch.manual_seed(0)
    module = cls(*args).double()
    x = weighted_input(cls, F64)
    out, state = module(x)
    assert out.dtype == F64 and all(s.dtype == F64 for s in state)
    # The same computation by hand: step function, float64 weights and constants, from rest.
    p = module.neuron_parameters(x)
    if cls is LILinearCell:
        expected, _ = li_step(
            x,
            LIState(torch.zeros(2, 4, dtype=F64), torch.zeros(2, 4, dtype=F64)),
            module.input_weights,
            p,
            module.dt,
        )
        assert torch.equal(out, expected)
        return
    step = lif_adex_step if "AdEx" in cls.__name__ else lif_step
    s = module.rest_state(torch.zeros(2, 4, dtype=F64))
    steps = x.unbind(0) if module.time_major else [x]
    outs = []
    for x_t in steps:
        z, s = step(
            x_t, s, module.input_weights, module.effective_recurrent_weights(), p, module.dt
        )
        outs.append(z)
    assert torch.equal(out, torch.stack(outs) if module.time_major else outs[0])
    assert all(torch.equal(a, b) for a, b in zip(state, s, strict=True))


@pytest.mark.parametrize("cls, args", WEIGHTED)
@pytest.mark.parametrize(
    "module_dtype, input_dtype, method",
    [
        pytest.param(torch.float32, F64, "double", id="float32-module-float64-input"),
        pytest.param(F64, torch.float32, "float", id="float64-module-float32-input"),
        pytest.param(torch.float32, torch.float16, "half", id="float32-module-float16-input"),
    ],
)
def test_input_dtype_other_than_the_weights_is_one_sentence(
    cls, args, module_dtype, input_dtype, method
):
    """The weights set the dtype, as in nn.Linear; a mismatch names the module, both dtypes and the
    two ways out (not torch's 'double != float' from inside the step)."""
    module = cls(*args).to(module_dtype)
    x = weighted_input(cls, input_dtype)
    message = (
        rf"^{cls.__name__}'s input_weights are {module_dtype} but the input is {input_dtype}: "
        rf"convert the module \(module\.{method}\(\)\) or the input \(x\.to\({module_dtype}\)\)\.$"
    )
    with pytest.raises(ValueError, match=message):
        module(x)


def test_mixed_weight_dtypes_name_the_weights():
    module = LIFRecurrentCell(3, 4, recurrent_weights=torch.zeros(4, 4, dtype=F64))
    with pytest.raises(
        ValueError,
        match="LIFRecurrentCell's recurrent_weights are torch.float64 but the input is "
        "torch.float32",
    ):
        module(torch.rand(2, 3))


def test_weights_on_another_device_are_one_sentence():
    module = LIFAdExRecurrentCell(3, 4)
    module.input_weights = torch.nn.Parameter(torch.zeros(4, 3, device="meta"))
    with pytest.raises(
        ValueError,
        match=r"input_weights are on meta but the input is on cpu; move the module with "
        r"\.to\('cpu'\)",
    ):
        module(torch.rand(2, 3))


@pytest.mark.parametrize("cls, args", WEIGHTED)
def test_autocast_casts_weights_itself(cls, args):
    """Under autocast a float32 module takes the bfloat16 activations autocast produces: the check
    must not refuse what autocast converts."""
    module = cls(*args)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, _ = module(weighted_input(cls, torch.bfloat16))
    assert out.dtype in (torch.bfloat16, torch.float32)


# --- ranges of the constants ----------------------------------------------------------------------

BAD_VALUES = [
    (
        "tau_mem_inv",
        -1.0,
        r">= 0 \(an inverse time constant in 1/s; 0 means no decay\), got -1\.0\.",
    ),
    (
        "tau_syn_inv",
        -200.0,
        r">= 0 \(an inverse time constant in 1/s; 0 means no decay\), got -200\.0\.",
    ),
    ("tau_ada_inv", -0.5, r">= 0 .*got -0\.5\."),
    ("delta_T", 0.0, r"> 0, got 0\.0\."),
    ("delta_T", -0.5, r"> 0, got -0\.5\."),
]


@pytest.mark.parametrize("learnable", [False, True])
@pytest.mark.parametrize(
    "cls, params_class, args, name, value, message",
    [
        pytest.param(cls, params_class, args, *bad, id=f"{cls.__name__}-{bad[0]}={bad[1]}")
        for cls, params_class, args in MODULES
        for bad in BAD_VALUES
        if bad[0] in params_class._fields
    ],
)
def test_out_of_range_constants_are_refused_at_construction(
    cls, params_class, args, name, value, message, learnable
):
    """A negative inverse time constant (the neuron would grow) and delta_T <= 0 (division by
    zero, an exploding exponential) are refused, fixed or learnable, naming field, value and
    range."""
    p = params_class(**{name: value})
    with pytest.raises(ValueError, match=rf"^{params_class.__name__}\.{name} must be {message}$"):
        cls(*args, p=p, learnable=(name,) if learnable else ())


def test_per_neuron_tensor_names_its_smallest_value():
    p = LIFAdExParameters(tau_mem_inv=torch.tensor([100.0, -3.0, 50.0]))
    with pytest.raises(
        ValueError, match=r"tau_mem_inv must be >= 0 .*got a tensor whose smallest value is -3\.0\."
    ):
        LIFAdEx(p)


def test_boundary_values_are_accepted_and_stay_finite():
    """0 is a valid inverse time constant (no decay); v_reset above v_th is odd but finite, as in
    norse."""
    p = LIFAdExParameters(
        tau_mem_inv=0.0, tau_syn_inv=0.0, tau_ada_inv=0.0, v_reset=2.0, delta_T=1e-3
    )
    z, state = LIFAdEx(p, backend="eager")(torch.rand(50, 2, 3) * 4)
    assert all(torch.isfinite(s).all() for s in state)
    z, state = LIFAdEx(LIFAdExParameters(v_reset=2.0), backend="eager")(torch.rand(50, 2, 3) * 4)
    assert all(torch.isfinite(s).all() for s in state)


# --- learnable time constants far from their start --------------------------------------------


@pytest.mark.parametrize("backend", ["python", "cpp"])
@pytest.mark.parametrize("cls", [LIFAdEx, LIF, LI])
def test_learnable_values_far_from_their_start_fused_equals_eager(cls, backend):
    """The parametrization sits in neuron_parameters, before the fused and eager paths split:
    forward and every gradient stay bit-identical with per-neuron time constants trained over
    decades (down to e^-8 of their start) and negative voltages."""
    if backend == "cpp":
        require_cpp_kernels()
    fields = tuple(f for f in cls.parameters_class._fields if f.endswith("_inv") or f == "v_leak")
    results = []
    for path in ("eager", backend):
        layer = cls(learnable=fields, shape=(5,), backend=path).double()
        with torch.no_grad():
            for name in fields:
                getattr(layer, f"{name}_raw").copy_(torch.tensor([1.0, -3.0, 0.0, 2.0, -8.0]))
        x = (
            torch.rand(30, 2, 5, generator=torch.Generator().manual_seed(1), dtype=F64) * 6 - 1
        ).requires_grad_()
        out, state = layer(x)
        w = torch.randn(out.shape, generator=torch.Generator().manual_seed(2), dtype=F64)
        ((out * w).sum() + sum(s.sum() for s in state)).backward()
        results.append(
            (
                out.detach(),
                [s.detach() for s in state],
                x.grad,
                [getattr(layer, f"{name}_raw").grad for name in fields],
            )
        )
    (out_e, state_e, gx_e, gp_e), (out_f, state_f, gx_f, gp_f) = results
    assert torch.equal(out_e, out_f)
    assert all(torch.equal(a, b) for a, b in zip(state_e, state_f, strict=True))
    torch.testing.assert_close(gx_f, gx_e, rtol=1e-10, atol=1e-12)
    for name, a, b in zip(fields, gp_f, gp_e, strict=True):
        assert b.abs().max() > 0, name
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12, msg=name)


def test_linear_cell_and_trajectory_refuse_a_state_of_another_dtype():
    """LILinearCell and trajectory() check the state against the input like every other module:
    a float32 state with float64 input is a clear error, not a silent promotion."""
    from snn.neurons import LIF, LIFFeedForwardState, LILinearCell, LIState
    from snn.neurons.trajectory import trajectory

    cell = LILinearCell(3, 4).double()
    with pytest.raises(ValueError, match="state.v is torch.float32"):
        cell(torch.rand(2, 3, dtype=torch.float64), LIState(torch.zeros(2, 4), torch.zeros(2, 4)))
    with pytest.raises(ValueError, match="state.v is torch.float32"):
        trajectory(LIF(), torch.rand(5, 2, 4, dtype=torch.float64),
                   LIFFeedForwardState(torch.zeros(2, 4), torch.zeros(2, 4)))


# --- unstable Euler steps ------------------------------------------------------------------------


@pytest.mark.parametrize("cls,params_class,args", MODULES)
@pytest.mark.parametrize("name", ["tau_mem_inv", "tau_syn_inv", "tau_ada_inv"])
@pytest.mark.parametrize("learnable", [False, True])
def test_unstable_euler_step_is_refused(cls, params_class, args, name, learnable):
    """dt * tau_inv = 1e9 (tau_inv = 1e12 at dt = 1e-3, the probe's case) would multiply the state by
    1 - 1e9 each step: refused when the module is built, naming field, dt and the largest stable
    value, on every module (LI's voltage showed the inf/NaN at once; LIF's and AdEx's hid it behind
    spikes)."""
    if name not in params_class._fields:
        pytest.skip(f"{params_class.__name__} has no {name}")
    p = params_class(**{name: 1e12})
    kwargs = {}
    if learnable:  # the modules with weights know their neurons; the others are told
        kwargs = dict(learnable=(name,)) if args else dict(learnable=(name,), shape=(4,))
    with pytest.raises(ValueError, match=rf"^{params_class.__name__}\.{name} = 1e\+12 1/s at dt = 0\.001 s .*"
                                         rf"{name} <= 1000 at this dt"):
        cls(*args, p=p, dt=1e-3, **kwargs)


@pytest.mark.parametrize("name", ["tau_mem_inv", "tau_syn_inv"])
def test_unstable_step_refused_when_set_later(name):
    """set_constant and the .p setter check the same bound as the constructor."""
    layer = LI(dt=1e-3)
    with pytest.raises(ValueError, match=rf"LIParameters\.{name} = .*tensor whose largest value is 3000 1/s"):
        layer.set_constant(name, torch.tensor([100.0, 3000.0]))
    with pytest.raises(ValueError, match=rf"LIParameters\.{name} = 1e\+12"):
        layer.p = layer.p._replace(**{name: 1e12})
    v, _ = layer(torch.rand(20, 2, 3))  # nothing was changed
    assert torch.isfinite(v).all()


@pytest.mark.parametrize("backend", ["eager", "python", "cpp"])
def test_largest_allowed_step_decays_and_the_next_is_refused(backend):
    """At the bound, dt * tau_inv = 1, each step empties the current and the voltage (factor 0): LI's
    voltage is the last step's input, bounded. Just above it the factors turn negative; at 2 the
    current drives the voltage in resonance (grows linearly), so the bound is 1, not 2."""
    layer = LI(LIParameters(tau_mem_inv=1000.0, tau_syn_inv=1000.0), dt=1e-3, backend=backend)
    x = torch.rand(500, 2, 3, dtype=F64)
    v, state = layer(x)
    assert torch.isfinite(v).all() and v.abs().max() <= 2 * x.abs().max()
    with pytest.raises(ValueError, match=r"tau_mem_inv = 2000 .*oscillates in sign"):
        LI(LIParameters(tau_mem_inv=2000.0), dt=1e-3, backend=backend)
