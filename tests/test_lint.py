"""The code base passes ruff with the rules and the 120-column limit configured in pyproject.toml."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
TARGETS = ["snn", "hydra_plugins", "train.py", "tests", "benchmarks", "docs"]


def _ruff() -> list[str] | None:
    """The ruff command: the module for this interpreter, the binary next to it, or ruff on PATH."""
    try:
        import ruff  # noqa: F401

        return [sys.executable, "-m", "ruff"]
    except ImportError:
        pass
    beside = Path(sys.executable).parent / "ruff"
    if beside.is_file():
        return [str(beside)]
    found = shutil.which("ruff")
    return [found] if found else None


def test_ruff_check_is_clean():
    ruff = _ruff()
    if ruff is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    result = subprocess.run([*ruff, "check", "--no-cache", *TARGETS], cwd=ROOT, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"ruff check failed:\n{result.stdout}{result.stderr}"
