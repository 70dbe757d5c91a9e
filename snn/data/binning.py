"""Events -> frames: counts of events per time bin, (polarity,) row and column.

Every reader returns events as one structured array of ``EVENT_DTYPE``: ``t`` in integer
microseconds from the start of the sample, ``x``/``y`` the pixel (audio: ``x`` is the cochlea
channel, ``y`` is 0), ``p`` the polarity (audio: 0). A sensor is ``(P, H, W)`` (N-MNIST
``(2, 34, 34)``, SHD ``(1, 1, 700)``), and its frames are ``[T, P, H, W]`` counts.

``FrameSpec`` says how time is cut into T bins:

- ``time_bins=N``: N bins spanning ``duration`` (or, when it is null, each sample's own length);
- ``bin_width=w`` seconds: ``T = ceil(duration / w)``, or with no ``duration`` as many bins as the
  sample needs: T then differs between samples and batches are padded (see ``pad_collate``).

``duration`` cuts every sample at that time (events later than it are dropped). ``downsample=k``
pools k x k pixels (audio: k channels) into one by summing counts; ``polarity=false`` merges ON and
OFF events into one channel.

Frames are stored sparsely (flat index into ``[T, P, H, W]`` and count) between binning and the
batch: an N-MNIST sample has ~4k events but 69k frame cells at T = 30.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

from snn.errors import DataError

from .limits import check_elements

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "<i1")])
# One non-zero frame cell: its flat index into [T, P, H, W] and its event count.
SPARSE_DTYPE = np.dtype([("index", "<i4"), ("count", "<u2")])


def make_events(t, x, y=0, p=0) -> np.ndarray:
    """A structured ``EVENT_DTYPE`` array from columns (scalars broadcast)."""
    t = np.asarray(t)
    events = np.empty(t.shape[0], dtype=EVENT_DTYPE)
    events["t"], events["x"], events["y"], events["p"] = t, x, y, p
    return events


# Largest event time in microseconds a reader accepts: ~146,000 years, far past any recording, and far
# enough below int64's range that binning arithmetic on it cannot wrap.
MAX_TIME_US = 2**62
FIELDS = {"x": "x (column)", "y": "y (row)", "p": "p (polarity)", "t": "t (microseconds)"}


def _limits(sensor: tuple[int, int, int]) -> dict[str, int]:
    """Exclusive upper bounds of each event field on the sensor ``(P, H, W)`` (the lower bound is 0)."""
    return {"x": sensor[2], "y": sensor[1], "p": sensor[0], "t": MAX_TIME_US}


def _check_range(column: np.ndarray, name: str, sensor: tuple[int, int, int], where: str) -> None:
    size = _limits(sensor)[name]
    if column.size and (column.min() < 0 or column.max() >= size):
        bad = int(np.count_nonzero((column < 0) | (column >= size)))
        raise DataError(
            f"{where}: {bad} event(s) have {FIELDS[name]} outside 0..{size - 1} (values from {column.min()} to "
            f"{column.max()}) for the {'x'.join(map(str, sensor))} (P x H x W) sensor: corrupt, or not this data "
            "set's file. Delete it and fetch it again; nothing was cached from it."
        )


def check_events(events: np.ndarray, sensor: tuple[int, int, int], where: str) -> None:
    """Raises ``DataError`` naming ``where`` (the file, and sample) unless every event of the
    structured ``events`` lies on the sensor ``(P, H, W)``: ``0 <= x < W``, ``0 <= y < H``,
    ``0 <= p < P`` and ``0 <= t < MAX_TIME_US``. Binning trusts these ranges: an event outside them
    would land in another pixel, polarity or frame, or outside the frames."""
    for name in FIELDS:
        _check_range(events[name], name, sensor, where)


def checked_columns(where: str, sensor: tuple[int, int, int], t_us, x, y=0, p=0) -> np.ndarray:
    """``make_events`` from columns of any numeric dtype (floats included), after checking them:
    finite whole numbers on the sensor, times in ``[0, MAX_TIME_US)`` (see ``check_events``).
    Checked before the conversion, which would otherwise wrap (``y = 40000`` as int16 is negative)."""
    columns = {"t": np.asarray(t_us), "x": np.asarray(x), "y": np.asarray(y), "p": np.asarray(p)}
    for name, column in columns.items():
        if column.dtype.kind not in "iubf":
            raise DataError(f"{where}: the {FIELDS[name]} column has dtype {column.dtype}, expected numbers.")
        if column.dtype.kind == "f" and column.size and not (
            np.isfinite(column).all() and (column == np.round(column)).all()
        ):
            raise DataError(
                f"{where}: the {FIELDS[name]} column holds values that are not finite whole numbers (NaN, inf or "
                "fractions): corrupt, or not this data set's file. Delete it and fetch it again; nothing was "
                "cached from it."
            )
        _check_range(column, name, sensor, where)
    return make_events(columns["t"].astype(np.int64), columns["x"], columns["y"], columns["p"])


@dataclass(frozen=True)
class FrameSpec:
    """How events become ``[T, P, H, W]`` frames (see the module docstring)."""

    time_bins: int | None = None
    bin_width: float | None = None  # seconds
    duration: float | None = None  # seconds
    downsample: int = 1
    polarity: bool = True

    def __post_init__(self):
        if (self.time_bins is None) == (self.bin_width is None):
            raise ValueError(
                "frames: set exactly one of time_bins (a fixed number of bins) and bin_width "
                f"(seconds per bin); got time_bins={self.time_bins!r}, "
                f"bin_width={self.bin_width!r}."
            )
        if self.time_bins is not None and (
            not isinstance(self.time_bins, int) or self.time_bins <= 0
        ):
            raise ValueError(f"frames.time_bins must be a positive int, got {self.time_bins!r}.")
        if self.bin_width is not None and not self.bin_width > 0:
            raise ValueError(f"frames.bin_width must be > 0 seconds, got {self.bin_width!r}.")
        if self.duration is not None and not self.duration > 0:
            raise ValueError(f"frames.duration must be > 0 seconds or null, got {self.duration!r}.")
        if not isinstance(self.downsample, int) or self.downsample <= 0:
            raise ValueError(f"frames.downsample must be a positive int, got {self.downsample!r}.")

    def settings(self) -> dict:
        return asdict(self)

    @property
    def steps(self) -> int | None:
        """T when every sample has the same number of bins, else None (padded batches)."""
        if self.time_bins is not None:
            return self.time_bins
        if self.duration is not None:
            return math.ceil(round(self.duration / self.bin_width, 9))
        return None

    def frame_shape(self, sensor: tuple[int, int, int]) -> tuple[int, int, int]:
        """``(P, H, W)`` of one frame after downsampling and polarity merging."""
        p, h, w = sensor
        k = self.downsample
        # Audio sensors are (1, 1, channels): the single row is not pooled.
        return (p if self.polarity else 1, h if h == 1 else math.ceil(h / k), math.ceil(w / k))

    def _edges(self, events: np.ndarray) -> tuple[int, float]:
        """``(T, bin width in microseconds)`` for this sample."""
        if self.duration is not None:
            span = self.duration * 1e6
        else:
            span = float(events["t"].max()) + 1.0 if len(events) else 1.0
        if self.time_bins is not None:
            return self.time_bins, span / self.time_bins
        width = self.bin_width * 1e6
        return self.steps or max(1, math.ceil(span / width)), width

    def to_sparse(self, events: np.ndarray, sensor: tuple[int, int, int]) -> tuple[np.ndarray, int]:
        """``(non-zero cells as SPARSE_DTYPE, T)`` of the frames of ``events``."""
        p_n, h_n, w_n = self.frame_shape(sensor)
        if self.duration is not None:
            events = events[events["t"] < self.duration * 1e6]
        steps, width = self._edges(events)
        if steps * p_n * h_n * w_n >= 2**31:
            raise ValueError(f"{steps} frames of {p_n}x{h_n}x{w_n} exceed the sparse index range (2^31 cells): "
                             "set frames.duration, or fewer or wider bins.")
        check_elements((steps, p_n, h_n, w_n), 4, f"The {steps} frames of one sample",
                       "set frames.duration, or fewer or wider bins")
        k = self.downsample
        k_y = 1 if sensor[1] == 1 else k  # audio's single row is not pooled
        t = np.minimum(
            (events["t"] / width).astype(np.int64), steps - 1
        )  # the last edge is inclusive
        p = events["p"].astype(np.int64) if self.polarity else 0
        y = events["y"].astype(np.int64) // k_y
        x = events["x"].astype(np.int64) // k
        flat = ((t * p_n + p) * h_n + y) * w_n + x  # [T, P, H, W] row-major
        index, count = np.unique(flat, return_counts=True)
        cells = np.empty(len(index), dtype=SPARSE_DTYPE)
        cells["index"], cells["count"] = index, np.minimum(count, np.iinfo(np.uint16).max)
        return cells, steps


def densify(cells: np.ndarray, steps: int, frame_shape: tuple[int, ...]) -> torch.Tensor:
    """Sparse cells -> float frames ``[T, *frame_shape]``.

    Built in numpy: torch's fills run on its thread pool, which in the main process of a busy
    machine cost milliseconds per sample (benchmarks/RESULTS.md, "Event data loaders").
    """
    frames = np.zeros(steps * math.prod(frame_shape), dtype=np.float32)
    frames[cells["index"]] = cells["count"]
    return torch.from_numpy(frames).view(steps, *frame_shape)  # [T * P * H * W] -> [T, P, H, W]


def pad_collate(batch: list[tuple[torch.Tensor, int]], with_lengths: bool = False):
    """Stacks ``(frames [T_i, ...], label)`` into ``(x [B, T_max, ...], y [B])``, zero-padding
    shorter samples at the end; with ``with_lengths`` also ``lengths [B]`` (the T_i, int64), from
    which a mask is ``arange(T_max) < lengths[:, None]``."""
    lengths = torch.tensor([frames.shape[0] for frames, _ in batch], dtype=torch.long)
    first = batch[0][0]
    x = np.zeros(
        (len(batch), int(lengths.max()), *first.shape[1:]), dtype=np.float32
    )  # see densify
    for i, (frames, _) in enumerate(batch):
        x[i, : frames.shape[0]] = frames.numpy()
    x = torch.from_numpy(x)
    y = torch.tensor([int(label) for _, label in batch], dtype=torch.long)
    return (x, y, lengths) if with_lengths else (x, y)
