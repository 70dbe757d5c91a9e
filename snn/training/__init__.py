"""The training stack: LightningModule, DataModules and callbacks (needs the `train` extra)."""

from .callbacks import SpikingModelSummary, neuron_counts, summary_table
from .data import (
    CIFAR10DataModule,
    ClassificationDataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    SyntheticDataModule,
)
from .idx import read_idx
from .module import SpikingClassifierModule, build_from_config

__all__ = [
    "SpikingModelSummary", "neuron_counts", "summary_table",
    "CIFAR10DataModule", "ClassificationDataModule", "FashionMNISTDataModule", "MNISTDataModule",
    "SyntheticDataModule", "read_idx", "SpikingClassifierModule", "build_from_config",
]
