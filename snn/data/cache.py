"""A disk cache of per-sample arrays (sparse frames or events), keyed by the settings behind them.

One cache entry is a folder ``<root>/<name>-<key>/`` where ``key`` hashes every setting that changes
its content (the dataset files' names, sizes and modification times, the frame spec, denoising, the
format version): a changed setting is a new key, so a stale cache is never read. The folder holds

- ``data.bin``: the samples' records, concatenated (read back as a read-only ``np.memmap``);
- ``index.npz``: ``offsets [N + 1]``, ``steps [N]`` (T of each sample's frames) and ``labels [N]``;
- ``settings.json``: what the key hashes, for people looking at the folder.

Writes are atomic: everything goes into a temporary folder that is renamed into place when done, so
a crash or a second process writing the same entry never leaves a half-written cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

FORMAT_VERSION = 1  # bump when the stored layout or a reader's output changes


def settings_key(settings: dict) -> str:
    """A short stable hash of a JSON-serialisable settings dict."""
    text = json.dumps({"format": FORMAT_VERSION, **settings}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_fingerprint(paths: Iterable[Path]) -> list:
    """Name, size and modification time of each file: a replaced file invalidates the cache."""
    return [[str(Path(p).resolve()), (s := Path(p).stat()).st_size, s.st_mtime_ns] for p in paths]


class CachedSamples:
    """The samples of one cache entry: ``records(i)`` (a memmapped view), ``steps``, ``labels``."""

    def __init__(self, folder: Path, dtype: np.dtype):
        self.folder = folder
        index = np.load(folder / "index.npz")
        self.offsets, self.steps, self.labels = index["offsets"], index["steps"], index["labels"]
        size = (folder / "data.bin").stat().st_size
        self.data = (
            np.memmap(folder / "data.bin", dtype=dtype, mode="r")
            if size
            else np.empty(0, dtype=dtype)
        )  # np.memmap refuses empty files

    def __len__(self) -> int:
        return len(self.labels)

    def records(self, i: int) -> np.ndarray:
        return self.data[self.offsets[i] : self.offsets[i + 1]]


def load_or_build(
    root: Path,
    name: str,
    settings: dict,
    dtype: np.dtype,
    samples: Iterable[tuple[np.ndarray, int, int]],
) -> CachedSamples:
    """The entry for ``settings``; built from ``samples`` (``(records, steps, label)``, consumed
    only when the entry is missing) and written atomically first if needed."""
    folder = Path(root) / f"{name}-{settings_key(settings)}"
    if (folder / "index.npz").is_file():
        return CachedSamples(folder, dtype)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        offsets, steps, labels = [0], [], []
        with open(tmp / "data.bin", "wb") as f:
            for records, n_steps, label in samples:
                records = np.ascontiguousarray(records, dtype=dtype)
                f.write(records.tobytes())
                offsets.append(offsets[-1] + len(records))
                steps.append(n_steps)
                labels.append(label)
        np.savez(
            tmp / "index.npz",
            offsets=np.array(offsets, dtype=np.int64),
            steps=np.array(steps, dtype=np.int64),
            labels=np.array(labels, dtype=np.int64),
        )
        (tmp / "settings.json").write_text(json.dumps(settings, indent=1, default=str))
        try:
            os.rename(tmp, folder)  # atomic; fails when another process finished first
        except OSError:
            if not (folder / "index.npz").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return CachedSamples(folder, dtype)
