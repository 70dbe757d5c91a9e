"""The training stack: LightningModule, checkpoints, failures and callbacks (needs the `train` extra);
the DataModules are in :mod:`snn.data`, the run lifecycle (fit, evaluate) in :mod:`snn.training.run`."""

from snn.errors import ConfigError, ScheduleError

from .checkpointing.checkpoint_io import CheckpointWriteError, NonFiniteCheckpointError, SafeCheckpointIO
from .checkpointing.checkpoints import (
    CheckpointError,
    RNGStateCheckpoint,
    check_model_config,
    load_checkpoint,
    load_classifier,
    load_module,
)
from .checkpointing.instantiation import build_from_config
from .failures import InterruptCheckpoint, NonFiniteError, NonFiniteGuard
from .module import SpikingClassifierModule
from .monitoring import (
    ConfigHyperparameters,
    EpochLog,
    LoggingInterval,
    NeuronParameterHistograms,
    SpikeRasterPlot,
    SpikeStatistics,
)
from .quiet import quiet_third_party
from .summary import SpikingModelSummary, neuron_counts, summary_table

__all__ = [
    "SpikingModelSummary", "neuron_counts", "summary_table",
    "SpikingClassifierModule", "build_from_config",
    "RNGStateCheckpoint", "check_model_config", "load_checkpoint", "load_classifier", "load_module",
    "ConfigError", "ScheduleError",
    "CheckpointError", "CheckpointWriteError", "NonFiniteCheckpointError", "SafeCheckpointIO",
    "InterruptCheckpoint", "NonFiniteError", "NonFiniteGuard",
    "ConfigHyperparameters", "EpochLog", "LoggingInterval", "NeuronParameterHistograms", "SpikeRasterPlot",
    "SpikeStatistics",
    "quiet_third_party",
]
