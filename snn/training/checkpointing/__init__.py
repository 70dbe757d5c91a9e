"""Checkpoints in one place: reading them as data and deciding what they may build
(:mod:`~snn.training.checkpointing.safe_load`), writing them atomically and only when finite
(:mod:`~snn.training.checkpointing.checkpoint_io`), rebuilding a model or module from one and saving
the random generators (:mod:`~snn.training.checkpointing.checkpoints`), and building objects from
configs within an allocation budget (:mod:`~snn.training.checkpointing.instantiation`).

The names are imported on first use: :mod:`snn.training.module` reads checkpoints through
:mod:`~snn.training.checkpointing.safe_load`, and :mod:`~snn.training.checkpointing.checkpoints`
builds that module.
"""

_LAZY = {
    "SafeCheckpointIO": "checkpoint_io",
    "RNGStateCheckpoint": "checkpoints",
    "check_model_config": "checkpoints",
    "load_checkpoint": "safe_load",
    "read_checkpoint": "safe_load",
    "trusted_names": "safe_load",
    "load_classifier": "checkpoints",
    "load_module": "checkpoints",
    "build_from_config": "instantiation",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
