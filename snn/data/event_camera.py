"""N-MNIST and DVS128 Gesture: event-camera recordings, read from the files as distributed.

N-MNIST (34 x 34 pixels, 2 polarities, 10 digits): folders ``Train/<digit>/*.bin`` and
``Test/<digit>/*.bin``. Each file is a stream of 40-bit events: byte 0 is x, byte 1 is y, bit 7 of
byte 2 the polarity and the remaining 23 bits the timestamp in microseconds (big-endian). An event
with y = 240 marks a timestamp overflow (+2^13 us to all later events), as in the authors' reader.

DVS128 Gesture (128 x 128 pixels, 2 polarities, 11 classes), in either layout:

- as distributed by IBM (``DvsGesture/``): AEDAT 3.1 recordings ``userNN_<lighting>.aedat``, each
  with ``userNN_<lighting>_labels.csv`` (``class,startTime_usec,endTime_usec``; classes 1-11) that
  cuts it into gestures, and ``trials_to_train.txt``/``trials_to_test.txt`` naming the recordings of
  each split. AEDAT 3.1: a text header (lines starting with ``#``, ending with ``#!END-HEADER``),
  then packets of a 28-byte header and ``eventCapacity`` records of ``eventSize`` bytes; polarity
  events (type 1) are ``uint32 data, int32 timestamp``: validity bit 0, polarity bit 1, y bits
  2-16, x bits 17-31, timestamp + ``eventTSOverflow << 31``.
- as tonic downloads it (``ibmGestureTrain/``, ``ibmGestureTest/``): one ``<class 0-10>.npy`` per
  gesture, columns x, y, p, t (ms), already cut. This is what ``download=true`` fetches.

Own readers rather than tonic's: N-MNIST is six lines of numpy; tonic 1.7.0's reader of IBM's
AEDAT files fails (``read_dvs_ibm`` unpacks two values from a header function that returns three)
and its DVSGesture reads only the re-cut npy copy; and tonic would add GPL-3.0 code plus librosa,
numba and scikit-learn to the install.
"""

from __future__ import annotations

import csv
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from snn.errors import DataError

from .binning import checked_columns, make_events
from .datamodule import EventDataModule
from .download import Remote
from .limits import check_elements

NMNIST_SIZE = 34
NMNIST_OVERFLOW_Y = 240
DVS_SIZE = 128
AEDAT_PACKET = struct.Struct(
    "<hhiiiiii"
)  # type, source, size, TS offset, TS overflow, capacity, number, valid
POLARITY_EVENT = 1
POLARITY_RECORD = np.dtype([("data", "<u4"), ("t", "<i4")])


def read_nmnist(path: Path) -> np.ndarray:
    """The events of one N-MNIST ``.bin`` file."""
    raw = np.fromfile(path, dtype=np.uint8)
    if len(raw) % 5:
        raise DataError(
            f"{path} is truncated or not an N-MNIST file: {len(raw)} bytes is not a "
            "multiple of the 5-byte event. Delete it and fetch it again."
        )
    raw = raw.reshape(-1, 5).astype(np.int64)  # [N * 5] -> [N, 5]
    x, y = raw[:, 0], raw[:, 1]
    p = raw[:, 2] >> 7
    t = ((raw[:, 2] & 127) << 16) | (raw[:, 3] << 8) | raw[:, 4]
    overflow = y == NMNIST_OVERFLOW_Y
    t = t + np.cumsum(overflow) * 2**13
    x, y, p, t = x[~overflow], y[~overflow], p[~overflow], t[~overflow]
    if len(x) and (x.max() >= NMNIST_SIZE or y.max() >= NMNIST_SIZE):
        raise DataError(
            f"{path} has pixels outside the 34 x 34 sensor: corrupt or not N-MNIST. "
            "Delete it and fetch it again."
        )
    return make_events(t, x, y, p)


def read_aedat31(path: Path) -> np.ndarray:
    """The polarity events of one AEDAT 3.1 file (other event types are skipped)."""
    data = path.read_bytes()

    def bad(what: str) -> DataError:
        return DataError(f"{path} {what}. Delete it and fetch it again.")

    if not data.startswith(b"#!AER-DAT3"):
        raise bad("is not an AEDAT 3.x file (no '#!AER-DAT3' header)")
    end = data.find(b"#!END-HEADER")
    if end < 0:
        raise bad("has no '#!END-HEADER' line: truncated header")
    pos = data.find(b"\n", end) + 1
    chunks = []
    while pos < len(data):
        if pos + AEDAT_PACKET.size > len(data):
            raise bad(f"is truncated: a packet header at byte {pos} is cut off")
        kind, _, size, _, overflow, capacity, number, _ = AEDAT_PACKET.unpack_from(data, pos)
        pos += AEDAT_PACKET.size
        if size <= 0 or capacity < 0 or not 0 <= number <= capacity:
            raise bad(f"has a corrupt packet header at byte {pos - AEDAT_PACKET.size}")
        if pos + capacity * size > len(data):
            raise bad(f"is truncated: a packet of {capacity} events at byte {pos} is cut off")
        if kind == POLARITY_EVENT:
            if size != POLARITY_RECORD.itemsize:
                raise bad(f"has polarity events of {size} bytes, expected 8")
            records = np.frombuffer(data, dtype=POLARITY_RECORD, count=number, offset=pos)
            chunks.append((records, overflow))
        pos += capacity * size
    if not chunks:
        return make_events(np.zeros(0, np.int64), 0)
    bits = np.concatenate([r["data"] for r, _ in chunks]).astype(np.int64)
    t = np.concatenate([r["t"].astype(np.int64) + (overflow << 31) for r, overflow in chunks])
    valid = (bits & 1).astype(bool)
    bits, t = bits[valid], t[valid]
    x, y = (bits >> 17) & 0x7FFF, (bits >> 2) & 0x7FFF
    if len(x) and (x.max() >= DVS_SIZE or y.max() >= DVS_SIZE):
        raise bad("has pixels outside the 128 x 128 sensor: corrupt or not DVS128")
    return make_events(t, x, y, (bits >> 1) & 1)


def read_gesture_labels(path: Path) -> list[tuple[int, int, int]]:
    """``(class 0-10, start, end)`` rows of a ``*_labels.csv`` file (times in microseconds)."""
    try:
        with open(path, newline="") as f:
            rows = [row for row in csv.reader(f) if row]
        header, body = rows[0], rows[1:]
        if [h.strip() for h in header[:3]] != ["class", "startTime_usec", "endTime_usec"]:
            raise ValueError(f"header {header}")
        segments = [(int(c) - 1, int(start), int(end)) for c, start, end in (r[:3] for r in body)]
    except (ValueError, IndexError) as error:
        raise DataError(
            f"{path} is not a DVS Gesture labels file ({error}): expected the header "
            "class,startTime_usec,endTime_usec and one row per gesture."
        ) from None
    return segments


class NMNISTDataModule(EventDataModule):
    """N-MNIST from ``Train/`` and ``Test/`` (validation carved from Train with ``split_seed``)."""

    name = "N-MNIST"
    files = ("Train", "Test")
    subfolder = "NMNIST"
    sensor = (2, NMNIST_SIZE, NMNIST_SIZE)
    download_hint = "The files are the Train.zip and Test.zip of N-MNIST (Orchard et al., 2015)."
    remotes = (  # Mendeley Data copies; checksums as in tonic 1.7.0
        Remote(
            "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
            "39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded",
            "train.zip",
            "20959b8e626244a1b502305a9e6e2031",
        ),
        Remote(
            "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
            "05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded",
            "test.zip",
            "69ca8762b2fe404d9b9bad1103e97832",
        ),
    )

    def __init__(self, input_shape=(30, 2, 34, 34), num_classes: int = 10, **kwargs: Any):
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)

    def _labelled(self, folder: Path, split: str) -> list[tuple[Path, int]]:
        root = folder / ("Train" if split == "train" else "Test")
        digits = sorted(d for d in root.iterdir() if d.is_dir() and d.name.isdigit())
        if not digits:
            raise DataError(f"{root} has no digit folders (0/ ... 9/) of .bin files.")
        return [(path, int(d.name)) for d in digits for path in sorted(d.glob("*.bin"))]

    def source_files(self, folder: Path, split: str) -> list[Path]:
        return [path for path, _ in self._labelled(folder, split)]

    def read(self, folder: Path, split: str) -> Iterator[tuple[np.ndarray, int, str]]:
        for path, label in self._labelled(folder, split):
            yield read_nmnist(path), label, str(path)


class DVSGestureDataModule(EventDataModule):
    """DVS128 Gesture in IBM's or tonic's layout (see the module docstring); validation carved from
    the training recordings with ``split_seed``."""

    name = "DVS Gesture"
    files = ("trials_to_train.txt", "trials_to_test.txt")
    npy_folders = ("ibmGestureTrain", "ibmGestureTest")
    subfolder = "DvsGesture"
    sensor = (2, DVS_SIZE, DVS_SIZE)
    download_hint = (
        "Or tonic's copy: the folders ibmGestureTrain/ and ibmGestureTest/ (what "
        "dataset.download=true fetches)."
    )
    remotes = (  # tonic's re-cut copy on figshare (IBM's original needs a login)
        Remote(
            "https://figshare.com/ndownloader/files/38022171",
            "ibmGestureTrain.tar.gz",
            "3a8f0d4120a166bac7591f77409cb105",
        ),
        Remote(
            "https://figshare.com/ndownloader/files/38020584",
            "ibmGestureTest.tar.gz",
            "56070e45dadaa85fff82e0fbfbc06de5",
        ),
    )

    def __init__(self, input_shape=(30, 2, 32, 32), num_classes: int = 11, **kwargs: Any):
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)

    def locate(self) -> Path | None:
        for folder in self.search_dirs:
            if all((folder / n).is_file() for n in self.files) or all(
                (folder / n).is_dir() for n in self.npy_folders
            ):
                return folder
        return None

    def _is_npy(self, folder: Path) -> bool:
        return not (folder / self.files[0]).is_file()

    def _recordings(self, folder: Path, split: str) -> list[Path]:
        trials = folder / ("trials_to_train.txt" if split == "train" else "trials_to_test.txt")
        names = [line.strip() for line in trials.read_text().splitlines() if line.strip()]
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise DataError(f"{trials} names recordings missing from {folder}: {missing[:5]}.")
        return [folder / n for n in names]

    def _npy_files(self, folder: Path, split: str) -> list[Path]:
        return sorted((folder / self.npy_folders[split != "train"]).glob("*/*.npy"))

    def source_files(self, folder: Path, split: str) -> list[Path]:
        if self._is_npy(folder):
            return self._npy_files(folder, split)
        recordings = self._recordings(folder, split)
        return [*recordings, *(p.with_name(f"{p.stem}_labels.csv") for p in recordings)]

    def read(self, folder: Path, split: str) -> Iterator[tuple[np.ndarray, int, str]]:
        if self._is_npy(folder):
            for path in self._npy_files(folder, split):
                if not path.stem.isdigit():
                    raise DataError(f"{path}: tonic's DVS Gesture files are named by their class (0.npy ... "
                                    "10.npy); this name is not a class number. Remove the file or fetch the "
                                    "folders again.")
                yield read_gesture_npy(path), int(path.stem), str(path)
            return
        for recording in self._recordings(folder, split):
            events = read_aedat31(recording)
            labels = recording.with_name(f"{recording.stem}_labels.csv")
            for k, (label, start, end) in enumerate(read_gesture_labels(labels)):
                segment = events[(events["t"] >= start) & (events["t"] < end)].copy()
                segment["t"] -= start
                yield segment, label, f"{recording} (gesture {k + 1} of {labels})"


def read_gesture_npy(path: Path) -> np.ndarray:
    """One gesture of tonic's copy: an ``[N, 4]`` array of x, y, p, t (milliseconds).

    The header is read first and its declared shape checked against the file's size (and the
    allocation limit) before the events are read; every event is checked against the 128 x 128
    sensor and both polarities (``checked_columns``)."""

    def bad(what: str) -> DataError:
        return DataError(f"{path} {what}. Delete it and fetch it again.")

    try:
        with open(path, "rb") as f:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)  # refuses headers over 10 kB
            start = f.tell()
    except (ValueError, OSError, EOFError) as error:
        raise bad(f"is not a readable .npy file ({error})") from None
    if dtype.hasobject or dtype.kind not in "iuf" or len(shape) != 2 or shape[1] != 4:
        raise bad(f"holds a {dtype} array of shape {list(shape)}, expected numbers of shape [N, 4] (x, y, p, t)")
    declared = shape[0] * 4 * dtype.itemsize
    size = path.stat().st_size - start
    if size != declared:
        raise bad(f"declares {shape[0]} events ({declared} bytes) but holds {size} bytes of data: truncated or "
                  "corrupt")
    check_elements(shape, 8, f"The events of {path}", "check the file")
    array = np.fromfile(path, dtype=dtype, count=shape[0] * 4, offset=start)
    array = array.reshape(shape, order="F" if fortran else "C")  # [N * 4] -> [N, 4]
    t = np.round(array[:, 3].astype(np.float64) * 1000)  # ms -> us; NaN and inf are refused below
    return checked_columns(str(path), (2, DVS_SIZE, DVS_SIZE), t - (t.min() if len(t) else 0),
                           array[:, 0], array[:, 1], array[:, 2])
