"""Event-stream data sets as Lightning DataModules (needs the `train` extra; SHD/SSC need h5py,
the `events` extra).

- ``audio_spikes``: SHD and SSC (700 cochlea channels, HDF5).
- ``memory_tasks``: STORE-RECALL and evidence accumulation, generated from a seed (no files).
- ``sequential_images``: (permuted) sequential MNIST / Fashion-MNIST, one pixel per step.
- ``event_camera``: N-MNIST and DVS128 Gesture (event cameras).
- ``datamodule``: what they share (finding/downloading files, splits, caches, loaders).
- ``binning``: events -> ``[T, ...]`` frames; ``transforms``: denoise, jitter, drop;
  ``cache``: the disk cache keyed by the settings; ``download``: checksummed downloads.

Batches are ``(x [B, T, ...], y [B])`` of float event counts; ``model.encoder.kind=events`` passes
them to the spiking layers time-major, ``[T, B, ...]``, with ``model.T`` equal to the data's T.

Adding a data set: a subclass of ``EventDataModule`` naming its ``files``, ``sensor`` and
``remotes`` and implementing ``read`` (yielding ``(events, label)``) and ``source_files``, plus a
``conf/dataset/<name>.yaml``; tests write a few samples in the set's real format.
"""

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
from .memory_tasks import CueAccumulationDataModule, StoreRecallDataModule
from .sequential_images import SequentialFashionMNISTDataModule, SequentialMNISTDataModule
from .transforms import EventTransforms, denoise

__all__ = [
    "SHDDataModule", "SSCDataModule", "read_hdf5", "EVENT_DTYPE", "FrameSpec", "make_events",
    "pad_collate", "EventDataModule", "DVSGestureDataModule", "NMNISTDataModule", "read_aedat31",
    "read_gesture_labels", "read_nmnist", "EventTransforms", "denoise",
    "CueAccumulationDataModule", "StoreRecallDataModule", "SequentialFashionMNISTDataModule",
    "SequentialMNISTDataModule",
]
