"""Every data set as a Lightning DataModule (needs the `train` extra; SHD/SSC need h5py, the
`events` extra). Nothing here imports :mod:`snn.training`.

- ``images``: MNIST, Fashion-MNIST, CIFAR-10 from local files (``idx``: the MNIST file format) and
  a synthetic task; batches ``(x [B, C, H, W] in [0, 1], y [B])``, encoded into spikes by the model.
- ``audio_spikes``: SHD and SSC (700 cochlea channels, HDF5).
- ``memory_tasks``: STORE-RECALL and evidence accumulation, generated from a seed (no files).
- ``sequential_images``: (permuted) sequential MNIST / Fashion-MNIST, one pixel per step.
- ``event_camera``: N-MNIST and DVS128 Gesture (event cameras).
- ``datamodule``: what they share (finding/downloading files, splits, caches, loaders).
- ``binning``: events -> ``[T, ...]`` frames; ``transforms``: denoise, jitter, drop;
  ``cache``: the disk cache keyed by the settings; ``download``: checksummed downloads;
  ``errors``: ``DataError``, raised for a corrupt or inconsistent file (naming it); ``limits``:
  ``SNN_MAX_ALLOC_GB``, the limit every size from a config or a file is checked against before
  anything is allocated (a new data set checks its declared sizes with ``check_elements``).

Event batches are ``(x [B, T, ...], y [B])`` of float event counts; ``model.encoder.kind=events``
passes them to the spiking layers time-major, ``[T, B, ...]``, with ``model.T`` equal to the data's T.

Adding a data set: an event set is a subclass of ``EventDataModule`` naming its ``files``,
``sensor`` and ``remotes`` and implementing ``read`` (yielding ``(events, label, where)``, ``where``
naming the file for errors; events off the sensor are refused before caching) and
``source_files``; an image set a subclass of ``images.FileDataModule`` (see ``MNISTDataModule``).
Either way a ``conf/dataset/<name>.yaml`` whose ``_target_`` names the class (exported here), and
tests in ``tests/data/`` that write a few samples in the set's real format.
"""

from snn.errors import DataError

from .audio_spikes import SHDDataModule, SSCDataModule, read_hdf5
from .binning import EVENT_DTYPE, FrameSpec, make_events, pad_collate
from .datamodule import EventDataModule
from .event_camera import (
    DVSGestureDataModule,
    NMNISTDataModule,
    read_aedat31,
    read_gesture_labels,
    read_nmnist,
)
from .idx import read_idx
from .images import (
    CIFAR10DataModule,
    ClassificationDataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    SyntheticDataModule,
)
from .memory_tasks import CueAccumulationDataModule, StoreRecallDataModule
from .sequential_images import SequentialFashionMNISTDataModule, SequentialMNISTDataModule
from .transforms import EventTransforms, denoise

__all__ = [
    "CIFAR10DataModule", "ClassificationDataModule", "FashionMNISTDataModule", "MNISTDataModule",
    "SyntheticDataModule", "DataError", "read_idx",
    "SHDDataModule", "SSCDataModule", "read_hdf5", "EVENT_DTYPE", "FrameSpec", "make_events",
    "pad_collate", "EventDataModule", "DVSGestureDataModule", "NMNISTDataModule", "read_aedat31",
    "read_gesture_labels", "read_nmnist", "EventTransforms", "denoise",
    "CueAccumulationDataModule", "StoreRecallDataModule", "SequentialFashionMNISTDataModule",
    "SequentialMNISTDataModule",
]
