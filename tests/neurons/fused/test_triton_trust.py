"""The ``triton`` backend runs on a device only after its first-use check passed there
(snn.neurons.fused.triton.trust), needs Triton >= 3.4, and launches on its tensors' device.

Through Triton's interpreter on the CPU, with failures simulated: a kernel that does not compile,
kernels that compute wrong spikes, states or gradients, an old Triton. ``auto`` is made to try
``triton`` on the CPU (it tries ``cpp`` there) to see its fallback: one warning naming the cause,
then the ``python`` loops; an explicit ``backend="triton"`` raises the same message.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings

import pytest
import torch

import snn.neurons.fused.triton as triton_backend
from snn.neurons import LIF, LIFAdExRecurrent
from snn.neurons.fused import registry as fused_registry
from snn.neurons.fused.spec import BackendUnavailable
from snn.neurons.fused.triton import TritonBackend, on_device, trust
from snn.neurons.fused.triton import feed_forward as triton_loops

triton = pytest.importorskip("triton")


@pytest.fixture(autouse=True)
def interpreter(monkeypatch):
    """The interpreter, programs of 64 neurons, ``auto`` trying triton on the CPU, and no answer
    of the check remembered before or after the test."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setitem(fused_registry.REGISTRY, "triton", TritonBackend(block=64))
    monkeypatch.setitem(fused_registry.AUTO, "cpu", ("triton",))
    monkeypatch.setattr(fused_registry, "_warned", set())
    trust.forget()
    yield
    trust.forget()


def counting_checks(monkeypatch) -> list:
    calls = []
    run_check = trust.run_check

    def counted(device, backend):
        calls.append(str(device))
        return run_check(device, backend)

    monkeypatch.setattr(trust, "run_check", counted)
    return calls


def test_the_check_passes_through_the_interpreter_once_per_device(monkeypatch):
    calls = counting_checks(monkeypatch)
    x = torch.rand(5, 2, 7) * 3
    out, _ = LIF(backend="triton")(x)
    LIF(backend="triton")(x)
    LIFAdExRecurrent(7, 9, backend="triton")(x)
    assert calls == ["cpu"] and trust.results() == {"cpu": None}
    assert torch.equal(out, LIF(backend="eager")(x)[0])


@pytest.mark.parametrize("mode", [torch.inference_mode, torch.no_grad])
def test_a_first_use_in_inference_mode_passes_the_check(mode):
    """The check runs backward: a first call under inference_mode or no_grad (an evaluation) must
    not fail it for the rest of the process."""
    x = torch.rand(5, 2, 7) * 3
    with mode():
        out, _ = LIF(backend="triton")(x)
    assert trust.results() == {"cpu": None}
    assert torch.equal(out, LIF(backend="eager")(x)[0])


def test_the_adex_cases_use_a_delta_T_that_is_not_a_power_of_two():
    """0.5 divides exactly, so an approximate division would pass a check that used it."""
    assert math.frexp(trust.DELTA_T)[0] != 0.5


def failing(monkeypatch, message="PTXAS error: sm_42 is not supported"):
    """Kernels that do not compile: every launch raises what a compile error would."""

    def broken(interpreted):
        raise RuntimeError(message)

    monkeypatch.setattr(triton_loops, "kernels", broken)


def test_a_kernel_that_does_not_compile_makes_auto_warn_once_and_fall_back(monkeypatch):
    failing(monkeypatch)
    x = torch.rand(5, 2, 7) * 3
    with pytest.warns(UserWarning) as caught:
        out, _ = LIF()(x)
    messages = [str(w.message) for w in caught if "snn:" in str(w.message)]
    assert len(messages) == 1
    assert "failed their first-use check on cpu (Triton's interpreter)" in messages[0]
    assert "RuntimeError: PTXAS error: sm_42 is not supported" in messages[0]
    assert messages[0].endswith("using the 'python' backend.")
    assert torch.equal(out, LIF(backend="python")(x)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        LIF()(x)
        LIFAdExRecurrent(7, 9)(x)


def test_an_explicit_triton_raises_the_same_cause(monkeypatch):
    failing(monkeypatch)
    cause = r"first-use check on cpu .*: adex: RuntimeError: PTXAS error"
    with pytest.raises(BackendUnavailable, match=cause) as error:
        LIF(backend="triton")(torch.rand(5, 2, 7))
    with pytest.warns(UserWarning, match=re.escape(f"snn: {error.value}; using the 'python' backend.")):
        LIF()(torch.rand(5, 2, 7))


def perturbed(monkeypatch, what):
    """TritonLoops whose forward or backward results are off as ``what`` says."""
    forward, backward = triton_loops.TritonLoops.forward, triton_loops.TritonLoops.backward

    def bad_forward(self, kind, x, state, P, save, save_extra, options):
        out, final, saved = forward(self, kind, x, state, P, save, save_extra, options)
        if what == "spike" and kind != "li":
            out = out.clone()
            out[0, 0, 0] = 1 - out[0, 0, 0]
        if what == "state":
            final = (final[0] + 1e-3 * final[0].abs().max(),) + tuple(final[1:])
        return out, final, saved

    def bad_backward(self, kind, gout, gstate, saved, v0, P, options, param_grads):
        gx, g0, G = backward(self, kind, gout, gstate, saved, v0, P, options, param_grads)
        return (gx * 1.01 if what == "gradient" else gx), g0, G

    monkeypatch.setattr(triton_loops.TritonLoops, "forward", bad_forward)
    monkeypatch.setattr(triton_loops.TritonLoops, "backward", bad_backward)


@pytest.mark.parametrize("what, message", [
    ("spike", r"adex: 1 of 462 spikes differ from the eager loop's"),
    ("state", r"adex: the final state v differs from the eager loop's by .* \(bound .*\)"),
    ("gradient", r"adex: the input gradient differs from autograd through the eager loop by .* \(bound .*\)"),
])
def test_wrong_results_fail_the_check_naming_the_case_and_what_differs(monkeypatch, what, message):
    perturbed(monkeypatch, what)
    with pytest.raises(BackendUnavailable, match=message):
        LIF(backend="triton")(torch.rand(5, 2, 7))
    assert trust.results()["cpu"] is not None


def test_an_old_triton_is_refused_by_why_not(monkeypatch):
    calls = counting_checks(monkeypatch)
    monkeypatch.setattr(triton, "__version__", "3.3.1")
    old = r"triton 3\.3\.1 is older than 3\.4, which the kernels need \(triton\.knobs\); pip install 'triton>=3\.4'"
    with pytest.raises(ValueError, match=old):
        LIF(backend="triton")(torch.rand(5, 2, 7))
    x = torch.rand(5, 2, 7)
    assert torch.equal(LIF()(x)[0], LIF(backend="python")(x)[0])  # auto: python, no check run
    assert calls == []


@pytest.mark.parametrize("version, expected", [("3.4.0", (3, 4, 0)), ("3.5.0+git8a1b2c", (3, 5, 0)),
                                               ("3.4.0rc1", (3, 4, 0)), ("2.3.1", (2, 3, 1))])
def test_version_numbers(version, expected):
    assert triton_loops.version_tuple(version) == expected


def test_layers_launch_on_their_tensors_device(monkeypatch):
    """Every entry of the backend makes the tensors' device the current one (``torch.cuda.device``
    on CUDA): recorded here on the CPU, where the guard is a no-op."""
    entered = []

    def recording(device):
        entered.append(device)
        return contextlib.nullcontext()

    monkeypatch.setattr(triton_backend, "on_device", recording)
    LIF(backend="triton")(torch.rand(5, 2, 7, requires_grad=True))[0].sum().backward()
    LIFAdExRecurrent(7, 9, backend="triton")(torch.rand(5, 2, 7, requires_grad=True))[0].sum().backward()
    assert len(entered) >= 6 and {str(d) for d in entered} == {"cpu"}  # why_not, forward, backward each


def test_the_device_guard_selects_the_tensors_cuda_device(monkeypatch):
    selected = []

    class Device(contextlib.nullcontext):
        def __init__(self, device):
            selected.append(device)
            super().__init__()

    monkeypatch.setattr(torch.cuda, "device", Device)
    with on_device(torch.device("cuda", 1)):
        pass
    with on_device(torch.device("cpu")):
        pass
    assert selected == [torch.device("cuda", 1)]
