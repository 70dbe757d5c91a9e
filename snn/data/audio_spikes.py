"""Spiking Heidelberg Digits (SHD) and Spiking Speech Commands (SSC): audio as spikes of 700
cochlea channels, from the published HDF5 files.

Each file holds ``spikes/times`` (one float array of spike times in seconds per sample),
``spikes/units`` (the matching channel indices, 0..699) and ``labels``. SHD has 20 classes (digits
0-9 in English and German) in ``shd_train.h5``/``shd_test.h5``: its validation set is carved from
the training file (``val_size``, ``split_seed``). SSC has 35 classes and an official validation
file, ``ssc_valid.h5``, which is used as is.

Own reader rather than tonic's ``SHD``/``SSC``: reading these files is a few lines of h5py (a
dependency already), and tonic would add GPL-3.0 code plus librosa, numba and scikit-learn to the
install for no gain in correctness. Frames are ``[T, channels]``: ``frames.downsample=5`` sums
every 5 channels (700 -> 140, as in SE-adLIF's setup).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from snn.errors import DataError
from snn.hdf5_structure import structure_problem

from .binning import checked_columns
from .datamodule import EventDataModule
from .download import Remote
from .limits import check_elements

CHANNELS = 700
BASE_URL = "https://zenkelab.org/datasets/"
CHUNK = 1024  # samples read from the file at once: SSC's training file is ~2 GB


def declared_storage(dataset: Any, n: int) -> str | None:
    """Why ``dataset`` (h5py) cannot hold the ``n`` elements its shape declares, or None: without
    compression every element takes its type's size in the file (a variable-length one, a 16-byte
    reference), so less storage than that means the file declares samples it does not hold."""
    stored, element = dataset.id.get_storage_size(), dataset.id.get_type().get_size()
    if dataset.id.get_create_plist().get_nfilters() == 0 and stored < n * element:
        return f"{dataset.name} declares {n} samples but stores {stored} bytes, not the {n * element} they need"
    return None


def read_hdf5(path: Path, channels: int = CHANNELS) -> Iterator[tuple[np.ndarray, int]]:
    """``(events, label)`` of every sample in an SHD/SSC file; a damaged file raises DataError.

    A file that reads outside itself or loops is refused first (:mod:`snn.hdf5_structure`). The
    sizes the file declares are checked against what it stores before anything is read (a few-kB
    file declaring 10^8 samples is refused at once), and every sample's times, units and label
    before they are converted (times beyond ``MAX_TIME_US`` would wrap in int64)."""
    import h5py  # the `train` stack does not need it: imported only when audio data is read

    def bad(what: str) -> DataError:
        return DataError(f"{path} {what}. Delete it and fetch it again (dataset.download=true).")

    try:
        f = h5py.File(path, "r")
    except OSError as error:
        raise bad(f"is not a readable HDF5 file ({error})") from None
    with f:
        problem = structure_problem(f)  # before any node is opened: it may read another file
        if problem:
            raise bad(f"is not a self-contained SHD/SSC file: {problem}")
        try:
            times, units, labels = f["spikes/times"], f["spikes/units"], f["labels"]
        except KeyError as error:
            raise bad(
                f"lacks {error.args[0] if error.args else 'a dataset'}: an SHD/SSC file has "
                "spikes/times, spikes/units and labels"
            ) from None
        if any(d.ndim != 1 for d in (times, units, labels)):
            raise bad("holds spikes/times, spikes/units or labels that are not one-dimensional")
        n = len(labels)
        if len(times) != n or len(units) != n:
            raise bad(f"holds {len(times)} spike-time and {len(units)} unit arrays for {n} labels")
        if labels.dtype.kind not in "iuf":
            raise bad(f"has labels of dtype {labels.dtype}, expected integers")
        short = next(filter(None, (declared_storage(d, n) for d in (times, units, labels))), None)
        if short or n > path.stat().st_size:
            raise bad(f"is truncated or corrupt: {short or f'it declares {n} samples in {path.stat().st_size} bytes'}")
        check_elements((n,), 8, f"The index of the {n} samples of {path}", "check the file")
        for start in range(0, n, CHUNK):
            try:
                chunk = (
                    times[start : start + CHUNK],
                    units[start : start + CHUNK],
                    labels[start : start + CHUNK],
                )
            except (OSError, ValueError) as error:
                raise bad(f"is truncated or corrupt near sample {start} ({error})") from None
            for i, (t, u, label) in enumerate(zip(*chunk, strict=True)):
                where = f"{path} sample {start + i}"
                if len(t) != len(u):
                    raise bad(f"sample {start + i} has {len(t)} spike times but {len(u)} units")
                if not (np.isfinite(label) and label == int(label)):
                    raise DataError(f"{where}: label {label} is not a whole number. Delete the file and fetch "
                                    "it again (dataset.download=true).")
                t_us = np.round(np.asarray(t, dtype=np.float64) * 1e6)
                yield checked_columns(where, (1, 1, channels), t_us, u), int(label)


class _HeidelbergDataModule(EventDataModule):
    """SHD and SSC: one HDF5 file per split (see the module docstring)."""

    sensor = (1, 1, CHANNELS)
    audio = True
    split_files: dict[str, str] = {}

    def __init__(self, input_shape=(100, 140), num_classes: int = 20, **kwargs: Any):
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)

    def source_files(self, folder: Path, split: str) -> list[Path]:
        return [folder / self.split_files[split]]

    def read(self, folder: Path, split: str) -> Iterator[tuple[np.ndarray, int, str]]:
        path = folder / self.split_files[split]
        for i, (events, label) in enumerate(read_hdf5(path)):
            yield events, label, f"{path} sample {i}"


class SHDDataModule(_HeidelbergDataModule):
    """Spiking Heidelberg Digits: 20 classes; validation carved from the training file."""

    name = "SHD"
    files = ("shd_train.h5", "shd_test.h5")
    split_files = {"train": "shd_train.h5", "test": "shd_test.h5"}
    subfolder = "SHD"
    download_hint = "The files are on zenkelab.org/datasets (shd_train.h5.zip, shd_test.h5.zip)."
    remotes = (  # checksums as in tonic 1.7.0
        Remote(
            BASE_URL + "shd_train.h5.zip", "shd_train.h5.zip", "f3252aeb598ac776c1b526422d90eecb"
        ),
        Remote(BASE_URL + "shd_test.h5.zip", "shd_test.h5.zip", "1503a5064faa34311c398fb0a1ed0a6f"),
    )


class SSCDataModule(_HeidelbergDataModule):
    """Spiking Speech Commands: 35 classes; the official validation file is the validation set."""

    name = "SSC"
    files = ("ssc_train.h5", "ssc_valid.h5", "ssc_test.h5")
    split_files = {"train": "ssc_train.h5", "val": "ssc_valid.h5", "test": "ssc_test.h5"}
    subfolder = "SSC"
    official_val = True
    download_hint = "The files are on zenkelab.org/datasets (ssc_{train,valid,test}.h5.zip)."
    remotes = (
        Remote(
            BASE_URL + "ssc_train.h5.zip", "ssc_train.h5.zip", "d102be95e7144fcc0553d1f45ba94170"
        ),
        Remote(
            BASE_URL + "ssc_valid.h5.zip", "ssc_valid.h5.zip", "b4eee3516a4a90dd0c71a6ac23a8ae43"
        ),
        Remote(BASE_URL + "ssc_test.h5.zip", "ssc_test.h5.zip", "a35ff1e9cffdd02a20eb850c17c37748"),
    )

    def __init__(self, num_classes: int = 35, **kwargs: Any):
        super().__init__(num_classes=num_classes, **kwargs)
