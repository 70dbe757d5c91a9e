"""Downloads with MD5 checks, and unpacking of .zip, .tar(.gz) and .gz archives.

A download goes to a temporary file that is renamed into place only after its checksum matched,
so a broken connection never leaves a file that looks complete (nor a partial one: the temporary
file goes with the failure). A failed download leaves none of the folders it created
(:func:`removing_new_folders`: ``python train.py`` offline left an empty ``data/MNIST/raw``).
``urlopen`` is looked up at call time so tests can replace it (this machine has no network).
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from snn.errors import DataError

urlopen = urllib.request.urlopen


@dataclass(frozen=True)
class Remote:
    """One file of a data set: where to get it and its MD5 (as published with the data set, or by
    tonic 1.7.0, which downloads the same files)."""

    url: str
    filename: str
    md5: str


@contextmanager
def removing_new_folders(*folders: Path) -> Iterator[None]:
    """On an exception inside the block, removes those of ``folders`` and their parents that did not
    exist when it started and are empty after it (deepest first), then re-raises: a failed download
    leaves no empty folders behind. A folder that existed before, or holds anything, is kept."""
    new: set[Path] = set()
    for folder in folders:
        folder = Path(folder).absolute()
        new.update(p for p in (folder, *folder.parents) if not p.exists())
    try:
        yield
    except BaseException:
        for folder in sorted(new, key=lambda p: len(p.parts), reverse=True):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                pass
        raise


def md5sum(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch(remote: Remote, folder: Path) -> Path:
    """``folder/remote.filename``, downloaded unless a file with the right checksum is there."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / remote.filename
    if path.is_file() and md5sum(path) == remote.md5:
        return path
    with tempfile.NamedTemporaryFile(
        dir=folder, prefix=f".{remote.filename}.", delete=False
    ) as tmp:
        try:
            with urlopen(remote.url) as response:
                shutil.copyfileobj(response, tmp)
        except BaseException:
            Path(tmp.name).unlink()  # a cut transfer leaves no partial file
            raise
    got = md5sum(Path(tmp.name))
    if got != remote.md5:
        Path(tmp.name).unlink()
        raise DataError(
            f"The download of {remote.url} has MD5 {got}, expected {remote.md5}: "
            "the transfer was cut or the file changed upstream. Try again."
        )
    Path(tmp.name).replace(path)
    return path


def unpack(archive: Path, folder: Path) -> None:
    """Unpacks ``archive`` into ``folder`` (a ``.gz`` of one file loses its suffix)."""
    name = archive.name
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            z.extractall(folder)
    elif name.endswith((".tar", ".tar.gz", ".tgz")):
        with tarfile.open(archive) as t:
            t.extractall(folder, filter="data")
    elif name.endswith(".gz"):
        with gzip.open(archive, "rb") as src, open(folder / name[:-3], "wb") as dst:
            shutil.copyfileobj(src, dst)
    else:
        raise ValueError(f"Do not know how to unpack {archive}.")
