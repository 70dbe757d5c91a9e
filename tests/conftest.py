"""Fixtures shared by the test modules."""

from __future__ import annotations

import importlib.util
import shlex
import sys

import pytest

# What the test modules import; without them collection would stop at the first module with a bare
# ModuleNotFoundError, which does not say that this pytest runs outside the project's environment.
REQUIRED = ("torch", "lightning", "hydra", "tensorboard")


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:
        return False


def pytest_configure(config):
    missing = [name for name in REQUIRED if not _importable(name)]
    if missing:
        args = shlex.join(config.invocation_params.args)
        raise pytest.UsageError(
            f"{', '.join(missing)} cannot be imported by this pytest's Python ({sys.executable}): it is not "
            f"the project's environment. Run the tests with `make test ARGS=\"{args}\"` (creates .venv and "
            f"installs the project when missing), or `.venv/bin/python -m pytest {args}` after `make install` "
            "(or `source .venv/bin/activate`, then pytest).")


@pytest.fixture
def intra_op_threads():
    """``intra_op_threads(n)`` sets torch's intra-op thread count for the rest of the test; the count
    is restored after it. BLAS splits a product by the thread count and may round it differently
    for each (MKL on AVX-512: ``[4, 300] x [300, 300]`` on one thread and on two), so a test that
    compares products run on different counts must set them itself."""
    import torch

    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture
def one_blas_thread(intra_op_threads):
    """Runs the test on one intra-op thread: the fused recurrent loops run the products of small
    steps on one thread (the neuron update of such a step is not worth an OpenMP region), so a
    test that compares them with the eager loop bit for bit runs the eager loop's products on one
    thread too."""
    intra_op_threads(1)


class TrainedRun:
    """A finished training run: its directory, checkpoints and the accuracies it reported."""

    def __init__(self, directory, val_acc: float, test_acc: float):
        self.directory = directory
        self.last = directory / "checkpoints" / "last.ckpt"
        (self.best,) = (directory / "checkpoints").glob("epoch_*.ckpt")
        self.val_acc, self.test_acc = val_acc, test_acc


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> TrainedRun:
    """One short training (tests.helpers.TRAINED_RUN) for every test that needs a checkpoint of our
    own model and does not change how it is trained: evaluation, reading, damage, trust. The tests
    copy its files before changing them."""
    from snn.training.run import run
    from tests.helpers import TRAINED_RUN, logged_test_acc, make_cfg

    directory = tmp_path_factory.mktemp("trained_run")
    val_acc = run(make_cfg(directory, *TRAINED_RUN))
    return TrainedRun(directory, val_acc, logged_test_acc(directory))
