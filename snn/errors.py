"""The exceptions snn raises for bad input and failed runs, in one module that imports nothing.

Every floor (``snn.neurons``, ``snn.data``, ``snn.training``) may import it. The modules that raised
them first still re-export them (``snn.training.ConfigError``, ``snn.data.DataError``...), so code
written against those paths keeps working.

How the entry point (``snn-train``, ``python train.py``) reports them, in one paragraph without a
traceback: :class:`ConfigError` as "Config error: ...", :class:`NonFiniteError` as "Training
stopped: ...", :class:`CheckpointWriteError` and :class:`NonFiniteCheckpointError` as "Checkpoint not
written: ...". The others are turned into a :class:`ConfigError` where the user's input caused them.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailable",
    "CheckpointError",
    "CheckpointWriteError",
    "ConfigError",
    "DataError",
    "NonFiniteCheckpointError",
    "NonFiniteError",
    "ScheduleError",
    "SizeLimitError",
    "TrustError",
]


class ConfigError(ValueError):
    """A bad config value, a missing or mismatched checkpoint: reported in one paragraph, no traceback."""


class CheckpointError(ValueError):
    """A checkpoint file that is refused: missing parts, damaged, or asking for more than data."""


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (disk full, no permission...); the previous file is intact."""


class NonFiniteCheckpointError(FloatingPointError):
    """A checkpoint was about to store a NaN or infinite weight: it was not written."""


class NonFiniteError(FloatingPointError):
    """The training loss, a gradient, a weight or an optimizer state became NaN or infinite."""


class ScheduleError(ValueError):
    """A training epoch would run with every learning rate at 0."""


class DataError(ValueError):
    """A dataset file that is corrupt, truncated or inconsistent with the others or the config."""


class SizeLimitError(ValueError):
    """A declared size beyond the allocation limit (``SNN_MAX_ALLOC_GB``)."""


class TrustError(ValueError):
    """A trust entry (``trust=[...]``) that names more than the user's own code: the standard library,
    a framework, another installed distribution, ``snn`` or ``__main__``."""


class BackendUnavailable(RuntimeError):
    """A backend that covers a case but cannot run on this machine (its library does not build,
    its compiler does not import): ``auto`` warns once and takes the next backend."""
