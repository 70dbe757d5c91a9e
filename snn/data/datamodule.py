"""What the event DataModules share: finding or downloading files, the cache, splits and loaders.

A subclass names its files (``files``, ``remotes``), its sensor ``(P, H, W)`` and how to read a
split (``read``, yielding ``(events, label)``). Everything else is here:

- ``prepare_data`` (rank 0 only under DDP) finds or downloads the files, then builds the caches;
  ``setup`` (every process) opens them, building any that are missing.
- The training split's cache holds frames, or events when augmentations are on (then each sample is
  augmented and binned when loaded). Validation and test samples are never augmented.
- Validation is the data set's official split where it has one (``official_val``); otherwise
  ``val_size`` samples carved from the training files with ``split_seed``. The test set is used for
  nothing but testing.
- Batches are ``(x [B, T, *frame], y [B])``, or ``(x, y, lengths [B])`` with ``return_lengths``;
  ``x`` is float event counts, zero-padded at the end when T differs between samples. Models take
  them with ``model.encoder.kind=events`` (``snn.models.encoders.EventFramesEncoder``), which makes
  them time-major ``[T, B, ...]``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from snn.errors import DataError

from .binning import EVENT_DTYPE, SPARSE_DTYPE, FrameSpec, check_events, densify, pad_collate
from .cache import CachedSamples, file_fingerprint, load_or_build
from .download import Remote, fetch, unpack
from .images import FileDataModule
from .limits import check_elements
from .transforms import EventTransforms


class EventFrameDataset(Dataset):
    """``(frames [T, *frame_shape], label)`` for the cached samples ``indices``.

    A cache of events is binned here, after ``augment`` (training only) when given.
    """

    def __init__(
        self,
        samples: CachedSamples,
        indices: np.ndarray,
        frame_shape: tuple[int, ...],
        spec: FrameSpec,
        sensor: tuple[int, int, int],
        events: bool,
        augment: EventTransforms | None = None,
    ):
        self.samples, self.indices, self.frame_shape = samples, indices, frame_shape
        self.spec, self.sensor, self.events, self.augment = spec, sensor, events, augment

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        records = np.array(self.samples.records(j))  # a copy: the memmap is read-only
        if self.events:
            if self.augment is not None:
                # torch's generator is seeded per worker (and by seed_everything): reproducible.
                rng = np.random.default_rng(int(torch.randint(2**62, ())))
                records = self.augment.augment(records, self.sensor, rng)
            cells, steps = self.spec.to_sparse(records, self.sensor)
        else:
            cells, steps = records, int(self.samples.steps[j])
        return densify(cells, steps, self.frame_shape), int(self.samples.labels[j])


class EventDataModule(FileDataModule):
    """Base of the event-stream DataModules (see the module docstring). It takes the arguments of
    :class:`~snn.data.images.FileDataModule` and these:

    Args:
        frames: ``FrameSpec`` fields (time_bins or bin_width, duration, downsample, polarity).
        transforms: ``EventTransforms`` fields (denoise, time_jitter, space_jitter, drop_event).
        cache_dir: where binned data is cached (default ``<data_dir>/event_cache``).
        return_lengths: batches carry the true T of every sample as a third element.
        T: the number of time bins per sample (null when it varies), which must be what ``frames``
            gives; the model configs read it (and ``encoder``) to take these batches.
        encoder: the model encoder the batches need: always ``events``.
    """

    sensor: tuple[int, int, int] = (1, 1, 1)  # (P, H, W)
    remotes: tuple[Remote, ...] = ()
    official_val = False  # the data set has its own validation split
    audio = False  # frames are [T, channels] rather than [T, P, H, W]

    def __init__(
        self,
        frames: Mapping[str, Any] | None = None,
        transforms: Mapping[str, Any] | None = None,
        cache_dir: str | None = None,
        return_lengths: bool = False,
        T: int | None = None,
        encoder: str = "events",
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if encoder != "events":
            raise ValueError(
                f"{self.name} batches have a time axis: dataset.encoder must be "
                f"'events' (what the models' encoder.kind follows), got {encoder!r}."
            )
        self.spec = FrameSpec(**dict(frames or {"time_bins": 10}))
        self.transforms = EventTransforms(**dict(transforms or {}))
        self.cache_dir = (
            Path(cache_dir).expanduser() if cache_dir else self.data_dir / "event_cache"
        )
        self.return_lengths = bool(return_lengths)
        self.frame_shape = self.spec.frame_shape(self.sensor)
        if self.audio:
            self.frame_shape = self.frame_shape[2:]  # [P=1, H=1, W] -> [channels]
        expected = (self.spec.steps, *self.frame_shape)
        if self.spec.steps is not None:
            check_elements((self.batch_size, *expected), 4, f"A batch of {self.name} frames {list(expected)}",
                           "reduce dataset.batch_size, or set fewer bins or more downsampling in dataset.frames")
        if self.input_shape != expected or T != self.spec.steps:
            steps = (
                "T = time_bins or ceil(duration / bin_width)"
                if self.spec.steps
                else "T is null: samples differ in length (set frames.duration for a fixed T)"
            )
            raise ValueError(
                f"{self.name}: T {T} and input_shape {list(self.input_shape)} do not match the "
                f"frames config, which gives {list(expected)} ({steps}); set dataset.T="
                f"{'null' if expected[0] is None else expected[0]} and dataset.input_shape="
                f"[${{..T}}, {', '.join(map(str, expected[1:]))}]."
            )

    # What subclasses provide.

    def read(self, folder: Path, split: str) -> Iterator[tuple[np.ndarray, int, str]]:
        """``(events as EVENT_DTYPE, label, where)`` of every sample of ``split`` (train, val, test);
        ``where`` names the sample's file (and its place in it) for error messages."""
        raise NotImplementedError

    def source_files(self, folder: Path, split: str) -> list[Path]:
        """The files ``read(folder, split)`` reads: their sizes and times key the cache."""
        raise NotImplementedError

    def reader_settings(self) -> dict:
        """Reader options that change the samples (none by default)."""
        return {}

    # Files.

    def find_file(self, folder: Path, name: str) -> Path | None:
        path = folder / name
        return path if path.exists() else None

    def fetch(self) -> None:
        for remote in self.remotes:
            unpack(fetch(remote, self.data_dir), self.data_dir)

    def missing_message(self) -> str:
        looked = "\n".join(
            f"  {folder.resolve()}: missing "
            f"{[n for n in self.files if not self.find_file(folder, n)]}"
            for folder in self.search_dirs
        )
        how = (
            "dataset.download=true is set but the download failed (see above)."
            if self.download
            else "Download is off: add dataset.download=true on a machine with internet access."
        )
        return (
            f"{self.name} not found. Expected {list(self.files)} (files or folders) in one of:\n"
            f"{looked}\n{how} Or copy them into {self.data_dir.resolve()} (set dataset.data_dir to "
            f"use another folder). {self.download_hint}"
        )

    def load(self, train: bool):
        raise NotImplementedError("Event data sets are read through their caches (setup).")

    # Caches, splits, loaders.

    def _samples(
        self, folder: Path, split: str, events: bool
    ) -> Iterator[tuple[np.ndarray, int, int]]:
        for sample, label, where in self.read(folder, split):
            if not 0 <= label < self.num_classes:
                raise DataError(
                    f"{where}: {self.name} {split} label {label} outside 0..{self.num_classes - 1} "
                    f"(dataset.num_classes {self.num_classes})."
                )
            check_events(sample, self.sensor, where)  # whatever the reader: nothing off the sensor is cached
            sample = self.transforms.clean(sample)
            if events:
                yield sample, 0, label
            else:
                try:
                    cells, steps = self.spec.to_sparse(sample, self.sensor)
                except ValueError as error:  # its frames would be too many: say which sample
                    raise type(error)(f"{where}: {error}") from None
                yield cells, steps, label

    def cache(self, split: str, events: bool = False) -> CachedSamples:
        """The cache of ``split`` (frames, or events when ``events``), built if missing."""
        folder = self.folder()
        settings = {
            "dataset": self.name,
            "split": split,
            "kind": "events" if events else "frames",
            "files": file_fingerprint(self.source_files(folder, split)),
            "frames": None if events else self.spec.settings(),
            "clean": self.transforms.deterministic_settings(),
            "reader": self.reader_settings(),
        }
        dtype = EVENT_DTYPE if events else SPARSE_DTYPE
        name = f"{self.name.lower().replace(' ', '_')}-{split}"
        samples = load_or_build(
            self.cache_dir, name, settings, dtype, self._samples(folder, split, events)
        )
        # Checked on every open, not only when built: the entry may be shared by configs that differ
        # in num_classes (which does not change the entry's content, so it is not in its key).
        labels = samples.labels
        if len(labels) and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DataError(
                f"{self.name} {split}: the labels span {labels.min()}..{labels.max()}, outside "
                f"0..{self.num_classes - 1} (dataset.num_classes {self.num_classes}); read from "
                f"{samples.folder} (a cache of the files in {folder}). Set dataset.num_classes to the data set's "
                "number of classes."
            )
        return samples

    def prepare_data(self) -> None:
        super().prepare_data()  # finds or downloads the files
        self._caches()

    def _caches(self) -> dict[str, CachedSamples]:
        events = self.transforms.augments
        caches = {"train": self.cache("train", events=events), "test": self.cache("test")}
        if self.official_val:
            caches["val"] = self.cache("val")
        return caches

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        caches = self._caches()
        train, events = caches["train"], self.transforms.augments
        make = partial(
            EventFrameDataset, frame_shape=self.frame_shape, spec=self.spec, sensor=self.sensor
        )
        augment = self.transforms if events else None
        if self.official_val:
            self.train_set = make(train, np.arange(len(train)), events=events, augment=augment)
            self.val_set = make(caches["val"], np.arange(len(caches["val"])), events=False)
        else:
            n = len(train)
            n_val = self.val_size if isinstance(self.val_size, int) else round(self.val_size * n)
            if not 0 < n_val < n:
                raise ValueError(
                    f"val_size {self.val_size} leaves no training data: the {self.name} "
                    f"training set has {n} samples."
                )
            order = torch.randperm(
                n, generator=torch.Generator().manual_seed(self.split_seed)
            ).numpy()
            self.train_set = make(train, order[n_val:], events=events, augment=augment)
            self.val_set = make(train, order[:n_val], events=events)  # never augmented
        test = caches["test"]
        self.test_set = make(test, np.arange(len(test)), events=False)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            collate_fn=partial(pad_collate, with_lengths=self.return_lengths),
        )
