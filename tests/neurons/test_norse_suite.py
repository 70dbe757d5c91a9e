"""snn.neurons as a norse drop-in: ``.p`` on every module, and norse 1.1.0's own
module and functional tests for LIFAdEx, LI and LIF run against our classes.

norse's wheel ships its tests (``norse/torch/{module,functional}/test/``). Each test module is
imported, every name it imported from norse is replaced by ours of the same name (classes,
parameter and state NamedTuples, step functions), and its test functions run unchanged, with
norse's own marks (e.g. "no cuda device"). A test that uses a norse function we do not provide
(none at present) is skipped naming it; a test of
behaviour that is deliberately not ours is skipped with the reason (``DELIBERATE``). norse's
``torch.compile`` tests take ~40 s together and are marked slow.

Needs norse (test-only: ``pip install -e ".[norse]"``); the ``.p`` tests do not.
"""

from __future__ import annotations

import importlib
import inspect
import math
import warnings

import pytest
import torch

import snn.neurons as ours
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
)

# --- .p: the parameters as norse's modules expose them ----------------------------------------

MODULES = [
    (LIFAdExCell, ()),
    (LIFAdEx, ()),
    (LIFAdExRecurrentCell, (3, 4)),
    (LIFAdExRecurrent, (3, 4)),
    (LIFCell, ()),
    (LIF, ()),
    (LIFRecurrentCell, (3, 4)),
    (LIFRecurrent, (3, 4)),
    (LICell, ()),
    (LI, ()),
    (LILinearCell, (3, 4)),
]
CUSTOM = {
    LIFAdExParameters: LIFAdExParameters(v_leak=-0.1, delta_T=0.3, method="sigmoid", alpha=7.0),
    LIFParameters: LIFParameters(v_leak=-0.1, v_th=0.7, method="atan", alpha=3.0),
    LIParameters: LIParameters(v_leak=-0.1, tau_mem_inv=60.0),
}


@pytest.mark.parametrize("cls, args", [pytest.param(c, a, id=c.__name__) for c, a in MODULES])
def test_every_module_exposes_p_like_norse(cls, args):
    """``module.p`` is the parameter NamedTuple of the module's current values: the buffers
    themselves and the values of the learnable constants (so ``cell.p.v_leak`` reads what the module
    computes with and an optimizer step shows in ``.p``), plus method and alpha."""
    p = CUSTOM[cls.parameters_class]
    module = cls(*args, p=p, learnable=("tau_mem_inv",), **({} if args else {"shape": (4,)}))
    assert type(module.p) is cls.parameters_class and module.p._fields == p._fields
    for name, value in zip(p._fields, p, strict=True):
        if name in ("method", "alpha", "integrator"):
            assert getattr(module.p, name) == value
        else:
            if name != "tau_mem_inv":
                assert getattr(module.p, name) is getattr(module, name)
            assert torch.allclose(
                getattr(module.p, name).double(), torch.as_tensor(value, dtype=torch.float64)
            )
    assert module.p.tau_mem_inv.requires_grad and module.p.tau_mem_inv.shape == (4,)
    with torch.no_grad():
        module.tau_mem_inv_raw.add_(0.5)  # as an optimizer step would
    assert torch.equal(module.p.tau_mem_inv, module.tau_mem_inv)
    torch.testing.assert_close(module.p.tau_mem_inv.double(), torch.full((4,), value_of(p.tau_mem_inv) * math.exp(0.5),
                                                                          dtype=torch.float64))
    assert float(module.p.v_leak) == -0.1
    module.double()
    assert module.p.tau_mem_inv.dtype == torch.float64


def value_of(tensor) -> float:
    return float(torch.as_tensor(tensor))


def test_p_follows_the_module_to_a_device_and_dtype():
    cell = LIFAdExCell(learnable=("v_th",), shape=(3,)).to(device="meta", dtype=torch.float16)
    assert cell.p.v_th.device.type == "meta" and cell.p.v_th.dtype == torch.float16
    assert cell.p.v_leak.device.type == "meta"


def test_p_drives_the_step_function_as_in_norse():
    """Code ported from norse calls the functional step with ``cell.p``: it computes what the
    cell does."""
    cell = LIFAdExCell(LIFAdExParameters(v_th=0.8, tau_mem_inv=150.0))
    x = torch.rand(6, 5, dtype=torch.float64) * 3
    state = cell.initial_state(x)
    assert torch.equal(
        cell(x, state)[0], ours.lif_adex_feed_forward_step(x, state, cell.p, cell.dt)[0]
    )


def test_p_is_assignable_as_in_norse():
    """``cell.p = cell.p._replace(...)`` (norse code does this): fixed fields replace the buffers,
    learnable ones are written into the same raw ``nn.Parameter`` (an optimizer holding it keeps
    training it; the fields left as they were are not touched), options change, and the cell
    computes with the new values."""
    cell = LIFAdExCell(LIFAdExParameters(method="super", alpha=100.0), learnable=("tau_mem_inv", "v_reset"),
                       shape=(4,))
    tau, v_reset = cell.tau_mem_inv_raw, cell.v_reset_raw
    with torch.no_grad():
        v_reset.add_(0.3)  # as an optimizer step would: a value that no longer equals its start
    reset = v_reset.detach().clone()
    optimizer = torch.optim.SGD(cell.parameters(), lr=1.0)
    cell.p = cell.p._replace(v_th=0.8, tau_mem_inv=torch.full((4,), 150.0), alpha=5.0, method="atan")
    assert cell.tau_mem_inv_raw is tau and any(p is tau for p in optimizer.param_groups[0]["params"])
    torch.testing.assert_close(cell.tau_mem_inv.detach(), torch.full((4,), 150.0))
    assert float(cell.v_th) == 0.8
    assert torch.equal(cell.v_reset_raw, reset)  # unchanged, to the bit
    assert cell.p.method == "atan" and cell.p.alpha == 5.0
    x = torch.rand(3, 4, dtype=torch.float64) * 3
    cell.double()
    with torch.no_grad():
        cell.v_reset_raw.zero_()
    expected = LIFAdExCell(LIFAdExParameters(v_th=0.8, tau_mem_inv=cell.tau_mem_inv.detach(), method="atan",
                                             alpha=5.0)).double()
    state = expected.initial_state(x)
    assert torch.equal(cell(x, state)[1].v, expected(x, state)[1].v)
    cell.p = cell.p._replace(v_th=torch.linspace(0.5, 1.0, 4))  # a per-neuron buffer replaces a scalar
    assert cell.v_th.shape == (4,)


def test_p_assignment_is_checked_before_anything_changes():
    cell = LIFAdExCell()
    for bad, match in [(dict(tau_mem_inv=-1.0), "tau_mem_inv"), (dict(method="relu"), "relu"),
                       (dict(delta_T=0.0), "delta_T")]:
        with pytest.raises(ValueError, match=match):
            cell.p = cell.p._replace(v_th=0.3, **bad)
        assert float(cell.v_th) == 1.0 and cell.p.method == "super"
    with pytest.raises(ValueError, match="LIFAdExParameters"):
        cell.p = LIFParameters()


@pytest.mark.parametrize("cls", [LIFAdExCell, LIFAdEx, LIFCell, LICell, LI])
def test_broadcastable_states_are_expanded_as_norse_does(cls):
    """A state field that broadcasts to the neurons (``v=cell.p.v_leak``, a 0-dim float64 buffer,
    with float32 input: norse's own test) runs as its expansion; one that does not is refused."""
    layer = cls()
    x = torch.rand(5, 2, 4) * 3
    full = layer.initial_state(x)
    given = type(full)(**{f: (layer.p.v_leak if f == "v" else getattr(full, f)[:1]) for f in full._fields})
    out, state = layer(x, given)
    expected, expected_state = layer(x, full)
    assert torch.equal(out, expected) and all(torch.equal(a, b) for a, b in zip(state, expected_state, strict=True))
    wrong = type(full)(**{f: (torch.zeros(3) if f == "v" else getattr(full, f)) for f in full._fields})
    with pytest.raises(ValueError, match="state.v must have shape .* or one that broadcasts to it, got \\[3\\]"):
        layer(x, wrong)


@pytest.mark.exactness
@pytest.mark.usefixtures("one_blas_thread")
@pytest.mark.parametrize("backend", ["python", "eager"])
@pytest.mark.parametrize("cls", [LIFAdExRecurrent, LIFRecurrent])
def test_recurrent_layers_take_any_batch_shape_on_every_backend(cls, backend):
    """norse's recurrent layers take ``[T, input_size]`` (no batch) as well as
    ``[T, B, input_size]``; ours too, on the fused backend as on the eager one, with the same
    results."""
    torch.manual_seed(0)
    reference = cls(3, 4, backend="eager").double()
    layer = cls(3, 4, backend=backend).double()
    layer.load_state_dict(reference.state_dict())
    for shape in [(9, 3), (9, 2, 5, 3), (0, 3)]:
        x = torch.rand(shape, dtype=torch.float64) * 4
        out, state = layer(x)
        assert out.shape == (*shape[:-1], 4) and state.v.shape == (*shape[1:-1], 4)
        expected, expected_state = reference(x)
        assert torch.equal(out, expected)
        assert all(torch.equal(a, b) for a, b in zip(state, expected_state, strict=True))


# --- norse's own tests, against our classes ---------------------------------------------------

NORSE_TEST_MODULES = [
    "norse.torch.module.test.test_lif_adex",
    "norse.torch.functional.test.test_lif_adex",
    "norse.torch.module.test.test_leaky_integrator",
    "norse.torch.functional.test.test_leaky_integrator",
    "norse.torch.module.test.test_lif",
    "norse.torch.functional.test.test_lif",
]

FALLBACK_GRAD = (
    "norse's rest state sets requires_grad=True on v, so out.sum().backward() works on a module "
    "without parameters fed an input that needs no gradient; ours starts from a constant rest "
    "state (no graph and no saved tensors for a gradient nobody asked for), so there is nothing "
    "to differentiate"
)
DELIBERATE = {
    "test_lif_adex_cell_backward": FALLBACK_GRAD,
    "test_lif_adex_backward": FALLBACK_GRAD,
    "test_li_backward": FALLBACK_GRAD,
    "test_li_cell_backward": FALLBACK_GRAD,
    "test_lif_feedforward_cell_backward": FALLBACK_GRAD,
    "test_lif_feedforward_layer_backward": FALLBACK_GRAD,
    "test_lif_feedforward_layer_backward_iteration": FALLBACK_GRAD,
    "test_backward_model": FALLBACK_GRAD,
    "test_lif_datatype": (
        "it feeds bool and sparse input; our modules take dense floating-point input and say so "
        "(cast with x.float(), x.to_dense())"
    ),
}
SLOW = "torch.compile"  # norse's compile tests: seconds each


def _load(name: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # norse uses torch.jit.script, deprecated in recent torch
        return importlib.import_module(name)


def _norse_cases() -> list:
    try:
        modules = [_load(name) for name in NORSE_TEST_MODULES]
    except ImportError as error:
        return [
            pytest.param(
                None,
                None,
                marks=pytest.mark.skip(
                    reason=f"norse 1.1.0 with its tests is not installed "
                    f"(pip install -e '.[norse]'): {error}"
                ),
            )
        ]
    cases = []
    for module in modules:
        short = module.__name__.removeprefix("norse.torch.").replace(".test.", "/")
        for name, function in vars(module).items():
            if not (name.startswith("test_") and inspect.isfunction(function)):
                continue
            marks = list(getattr(function, "pytestmark", []))
            if name in DELIBERATE:
                marks.append(pytest.mark.skip(reason=f"deliberately not ours: {DELIBERATE[name]}"))
            if SLOW in inspect.getsource(function):
                marks.append(pytest.mark.slow)
            cases.append(pytest.param(module, name, marks=marks, id=f"{short}::{name}"))
    return cases


def _norse_names(module) -> dict[str, object]:
    """The module-level names a norse test module imported from norse (not its own definitions)."""
    return {
        name: value
        for name, value in vars(module).items()
        if str(getattr(value, "__module__", "")).startswith("norse.")
        and getattr(value, "__module__", "") != module.__name__
        and not inspect.ismodule(value)
    }


@pytest.mark.parametrize("module, name", _norse_cases())
def test_norse(module, name, monkeypatch):
    """norse 1.1.0's test ``name`` with every norse neuron class, NamedTuple and step function it
    uses replaced by snn.neurons' (the test's code unchanged)."""
    missing = []
    for imported in _norse_names(module):
        if hasattr(ours, imported):
            monkeypatch.setattr(module, imported, getattr(ours, imported))
        else:
            missing.append(imported)
    function = getattr(module, name)
    used = sorted(set(missing) & set(function.__code__.co_names))
    if used:
        pytest.skip(f"uses norse's {', '.join(used)}, which snn.neurons does not provide")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        function()


def test_norse_suite_replaces_every_neuron_name():
    """Guards the suite above: the names it replaces are norse's neuron classes and functions, each
    with an equivalent of ours, and none is missing."""
    pytest.importorskip("norse.torch", reason="norse is not installed")
    missing, replaced = set(), set()
    for module in map(_load, NORSE_TEST_MODULES):
        for imported in _norse_names(module):
            (replaced if hasattr(ours, imported) else missing).add(imported)
    assert missing == set()
    assert {
        "LIFAdExCell",
        "LIFAdExRecurrent",
        "LI",
        "LILinearCell",
        "LIF",
        "LIFParameters",
        "lif_step",
        "li_feed_forward_step",
        "lif_adex_feed_forward_step",
    } <= replaced
