"""snn.errors holds every public exception, imports nothing heavy, and the old import paths name
the same classes (code written against them, and ``except`` clauses, keep working)."""

import subprocess
import sys

import snn.errors


def test_snn_errors_imports_nothing_heavy():
    code = ("import sys, snn.errors\n"
            "print([m for m in ('torch', 'lightning', 'hydra', 'omegaconf', 'numpy') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_old_paths_name_the_same_classes():
    from snn.data import DataError
    from snn.data.limits import SizeLimitError
    from snn.neurons.fused.spec import BackendUnavailable
    from snn.training import (
        CheckpointError,
        CheckpointWriteError,
        ConfigError,
        NonFiniteCheckpointError,
        NonFiniteError,
        ScheduleError,
    )
    from snn.training.module import ScheduleError as module_schedule_error

    old = [ConfigError, CheckpointError, CheckpointWriteError, NonFiniteCheckpointError, NonFiniteError,
           ScheduleError, DataError, SizeLimitError, BackendUnavailable]
    assert old == [getattr(snn.errors, c.__name__) for c in old]
    assert module_schedule_error is snn.errors.ScheduleError
    from snn.training.checkpointing.trust import TrustError  # new with trust's resolution (issue 29)

    assert TrustError is snn.errors.TrustError
    assert sorted(snn.errors.__all__) == sorted([*(c.__name__ for c in old), "TrustError"])
    public = [v for k, v in vars(snn.errors).items() if isinstance(v, type) and issubclass(v, Exception)]
    assert sorted(c.__name__ for c in public) == sorted(snn.errors.__all__)
