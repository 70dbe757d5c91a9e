"""Event transforms, chosen in the dataset config's ``transforms`` block.

``denoise`` is deterministic and applied to every split before binning (its result is cached).
``time_jitter``, ``space_jitter`` and ``drop_event`` are augmentations: applied to training samples
only, drawn anew every time a sample is loaded, so the training split then caches events rather
than frames and bins them in the loader.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def denoise(events: np.ndarray, filter_time: int) -> np.ndarray:
    """Drops isolated events: an event is kept when one of its 4 neighbouring pixels had an event
    less than ``filter_time`` microseconds before it (or at the same time, earlier in the stream).

    The rule of tonic's ``Denoise``, vectorised: for each direction, the latest earlier event at
    the neighbour is found by binary search in the events sorted by (pixel, position in stream).
    Polarity is ignored; a pixel without earlier events counts as silent.
    """
    n = len(events)
    if n == 0:
        return events
    order = np.argsort(events["t"], kind="stable")
    events = events[order]
    x, y, t = events["x"].astype(np.int64), events["y"].astype(np.int64), events["t"]
    width = int(x.max()) + 3  # a margin: neighbours of the edge pixels have their own keys
    pixel = (y + 1) * width + (x + 1)
    key = pixel * n + np.arange(n)  # sorted by pixel, then by position in the stream
    by_key = np.argsort(key)
    sorted_key, sorted_t = key[by_key], t[by_key]
    keep = np.zeros(n, dtype=bool)
    for shift in (1, -1, width, -width):
        neighbour = pixel + shift
        # Index of the last event at `neighbour` before position i: one left of the insertion point.
        j = np.searchsorted(sorted_key, neighbour * n + np.arange(n)) - 1
        found = (j >= 0) & (sorted_key[np.maximum(j, 0)] // n == neighbour)
        keep |= found & (sorted_t[np.maximum(j, 0)] > t - filter_time)
    return events[keep]


@dataclass(frozen=True)
class EventTransforms:
    """The ``transforms`` config block: 0 turns each off."""

    denoise: float = 0.0  # seconds: keep events with a neighbour event this recent
    time_jitter: float = 0.0  # seconds: std of Gaussian noise added to every timestamp
    space_jitter: float = 0.0  # pixels (audio: channels): std of Gaussian noise on x and y
    drop_event: float = 0.0  # probability of dropping each event

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not isinstance(value, int | float) or value < 0:
                raise ValueError(f"transforms.{name} must be a number >= 0, got {value!r}.")
        if self.drop_event >= 1:
            raise ValueError(
                f"transforms.drop_event is a probability < 1, got {self.drop_event!r}."
            )

    @property
    def augments(self) -> bool:
        """Whether training samples are randomised (and so cannot be cached as frames)."""
        return bool(self.time_jitter or self.space_jitter or self.drop_event)

    def deterministic_settings(self) -> dict:
        """What changes the cached data (the augmentations do not: they run after the cache)."""
        return {"denoise": self.denoise}

    def clean(self, events: np.ndarray) -> np.ndarray:
        """The deterministic part, applied before caching."""
        return denoise(events, round(self.denoise * 1e6)) if self.denoise else events

    def augment(
        self, events: np.ndarray, sensor: tuple[int, int, int], rng: np.random.Generator
    ) -> np.ndarray:
        """The random part: jitter and drop, then events that left the sensor are removed."""
        if self.drop_event:
            events = events[rng.random(len(events)) >= self.drop_event]
        events = events.copy()
        if self.time_jitter:
            t = events["t"] + np.round(rng.normal(0.0, self.time_jitter * 1e6, len(events)))
            events["t"] = np.maximum(t, 0)
            events = events[np.argsort(events["t"], kind="stable")]
        if self.space_jitter:
            _, h, w = sensor
            x = events["x"] + np.round(rng.normal(0.0, self.space_jitter, len(events)))
            y = events["y"] + (
                np.round(rng.normal(0.0, self.space_jitter, len(events))) if h > 1 else 0
            )
            inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
            events["x"], events["y"] = np.clip(x, 0, w - 1), np.clip(y, 0, h - 1)
            events = events[inside]
        return events
