"""A disk cache of per-sample arrays (sparse frames or events), keyed by the settings behind them.

One cache entry is a folder ``<root>/<name>-<key>/`` where ``key`` hashes every setting that changes
its content (the dataset files' names, sizes and modification times, the frame spec, denoising, the
format version): a changed setting is a new key, so a stale cache is never read. The folder holds

- ``data.bin``: the samples' records, concatenated (read back as a read-only ``np.memmap``);
- ``index.npz``: ``offsets [N + 1]``, ``steps [N]`` (T of each sample's frames) and ``labels [N]``;
- ``settings.json``: what the key hashes, for people looking at the folder.

Writes are atomic: everything goes into a temporary folder that is renamed into place when done, so
a crash or a second process writing the same entry never leaves a half-written cache. A temporary
folder is named ``.<entry>.<host>.<pid>.<random>``; one left by a killed build is removed by the next
build in the same root once its owner is gone (same host, no such process) or, from another host,
once nothing in it has changed for ``STALE_SECONDS``. Entries get the permissions of the user's umask
(a cache shared by a group stays readable to the group).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from snn.errors import DataError

FORMAT_VERSION = 2  # bump when the stored layout or a reader's output changes (2: events checked on the sensor)
TEMPORARY = re.compile(r"\.[^.]+\.([^.]+)\.(\d+)\.[0-9a-f]{8}")  # .<entry>.<host>.<pid>.<random>
STALE_SECONDS = 24 * 3600  # a temporary folder from another host untouched this long is a dead build's


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
        n = len(self.labels)
        if (len(self.offsets) != n + 1 or len(self.steps) != n or self.offsets[0] != 0
                or (np.diff(self.offsets) < 0).any() or self.offsets[-1] * np.dtype(dtype).itemsize != size):
            raise DataError(f"The cache entry {folder} is inconsistent (its index does not match data.bin): "
                            "delete the folder; it is rebuilt from the data set's files.")
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
    remove_stale_builds(folder.parent)
    tmp = folder.parent / f".{folder.name}.{host()}.{os.getpid()}.{secrets.token_hex(4)}"
    tmp.mkdir()  # mode 0o777 less the umask (tempfile.mkdtemp would make it 0o700)
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


def host() -> str:
    """This machine's name as it appears in temporary folders' names (without dots)."""
    return socket.gethostname().replace(".", "_")


def _owner_gone(owner_host: str, pid: int) -> bool:
    """Whether the process that named a temporary folder ``owner_host``/``pid`` has ended (only
    knowable on this host)."""
    if owner_host != host():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _last_change(folder: Path) -> float:
    """The newest modification time of ``folder`` and the files in it."""
    times = [folder.stat().st_mtime]
    times += [p.stat().st_mtime for p in folder.iterdir() if p.is_file()]
    return max(times)


def remove_stale_builds(root: Path) -> list[Path]:
    """Removes the temporary folders of builds that died (see the module docstring) and returns
    them; a live build's folder, here or on another host, is left alone."""
    removed = []
    for tmp in root.glob(".*"):
        name = TEMPORARY.fullmatch(tmp.name)
        if name is None or not tmp.is_dir():
            continue
        try:
            stale = _owner_gone(name[1], int(name[2])) or time.time() - _last_change(tmp) > STALE_SECONDS
        except FileNotFoundError:  # its build just finished or removed it
            continue
        if stale:
            shutil.rmtree(tmp, ignore_errors=True)
            removed.append(tmp)
    return removed
