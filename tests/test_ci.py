"""What CI installs, CI must have: a test that needs it fails there instead of skipping (tests/helpers.py)."""

import pytest

from snn.neurons.fused.cpp import build
from tests.helpers import require_cpp_kernels


def _no_compiler():
    raise RuntimeError("no C++ compiler found (c++)")


def test_missing_cpp_kernels_fail_in_ci_and_skip_elsewhere(monkeypatch):
    monkeypatch.setattr(build, "load_library", _no_compiler)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"C\+\+ kernels unavailable in CI.*no C\+\+ compiler"):
        require_cpp_kernels()
    for value in ("", "false", "0"):
        monkeypatch.setenv("CI", value)
        with pytest.raises(pytest.skip.Exception, match=r"CI \(CI=true\) fails here instead of skipping"):
            require_cpp_kernels()

