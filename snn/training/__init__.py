"""The training stack: LightningModule, DataModules and callbacks (needs the `train` extra)."""

from .callbacks import SpikingModelSummary, neuron_counts, summary_table
from .checkpoints import RNGStateCheckpoint, check_model_config, load_checkpoint, load_classifier
from .data import (
    CIFAR10DataModule,
    ClassificationDataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    SyntheticDataModule,
)
from .failures import InterruptCheckpoint, NonFiniteLossError, NonFiniteLossGuard
from .idx import DataError, read_idx
from .module import SpikingClassifierModule, build_from_config
from .monitoring import (
    ConfigHyperparameters,
    NeuronParameterHistograms,
    SpikeRasterPlot,
    SpikeStatistics,
)

__all__ = [
    "SpikingModelSummary", "neuron_counts", "summary_table",
    "CIFAR10DataModule", "ClassificationDataModule", "FashionMNISTDataModule", "MNISTDataModule",
    "SyntheticDataModule", "DataError", "read_idx", "SpikingClassifierModule", "build_from_config",
    "RNGStateCheckpoint", "check_model_config", "load_checkpoint", "load_classifier",
    "InterruptCheckpoint", "NonFiniteLossError", "NonFiniteLossGuard",
    "ConfigHyperparameters", "NeuronParameterHistograms", "SpikeRasterPlot", "SpikeStatistics",
]
