"""How the Trainer writes and reads checkpoint files: atomically, never with a non-finite weight, and
reading only intact files as data (``weights_only``).

``SafeCheckpointIO`` is the Trainer's ``CheckpointIO`` plugin (train.py passes it to every Trainer
it builds). A checkpoint is serialised in memory, written to a temporary file in the target's
directory, flushed to disk (fsync) and renamed over the target (``os.replace``, atomic): a reader,
a crash or a full disk sees the previous file or the new one, never a truncated one.
"""

from __future__ import annotations

import contextlib
import io
import os
import secrets
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from snn.errors import CheckpointWriteError, NonFiniteCheckpointError  # noqa: F401 (re-exported)

from .safe_load import read_checkpoint


def _tensors(node: Any, where: str) -> Iterator[tuple[str, torch.Tensor]]:
    if isinstance(node, torch.Tensor):
        yield where, node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from _tensors(value, f"{where}[{key!r}]")
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from _tensors(value, f"{where}[{i}]")


def check_finite(checkpoint: Mapping[str, Any], path: str | Path) -> None:
    """Raises NonFiniteCheckpointError naming the first tensor of the weights (``state_dict``) or the
    optimizer states that holds a NaN or inf. (Callbacks' bookkeeping, e.g. a best score of -inf
    before the first one, is not checked.)"""
    floats = [
        (where, t)
        for key in ("state_dict", "optimizer_states")
        for where, t in _tensors(checkpoint.get(key), key)
        if t.is_floating_point() or t.is_complex()
    ]
    if not floats:
        return
    bad = torch.stack([~torch.isfinite(t).all() for _, t in floats])  # one device sync for all tensors
    if not bool(bad.any()):
        return
    where, tensor = floats[int(bad.nonzero()[0])]
    count = int((~torch.isfinite(tensor)).sum())
    raise NonFiniteCheckpointError(
        f"Refused to write the checkpoint {path}: {where} holds {count} non-finite value(s) (NaN or inf) out of "
        f"{tensor.numel()}; the previous checkpoints are intact."
    )


def _plain_hyper_parameters(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """``checkpoint`` with OmegaConf configs in its hyperparameters turned into dicts and lists, so the
    file loads with ``weights_only=True`` (a DictConfig is a class torch.load would have to build)."""
    hyper_parameters = checkpoint.get("hyper_parameters")
    if not isinstance(hyper_parameters, Mapping):
        return checkpoint
    from omegaconf import Container, OmegaConf

    def plain(value: Any) -> Any:
        if isinstance(value, Container):
            return OmegaConf.to_container(value, resolve=True)
        if isinstance(value, Mapping):
            return {k: plain(v) for k, v in value.items()}
        if type(value) in (list, tuple):
            return type(value)(plain(v) for v in value)
        return value

    checkpoint = dict(checkpoint)
    checkpoint["hyper_parameters"] = plain(dict(hyper_parameters))
    if isinstance(checkpoint.get("hparams_type"), type):
        checkpoint.pop("hparams_type")
    return checkpoint


def _fsync_directory(directory: Path) -> None:
    """Makes the rename durable; not every file system can open a directory, which is fine."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomically(data: bytes, path: str | Path) -> None:
    """Writes ``data`` to ``path`` through a temporary file in the same directory, fsync and
    ``os.replace``. On any failure the temporary file is removed and ``path`` keeps its previous
    contents; an OSError comes out as a CheckpointWriteError of one sentence naming file and cause."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: a fresh file of ours; 0o666 minus the umask, like any file the run writes.
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):
            temporary.unlink()
        if isinstance(error, OSError) and not isinstance(error, CheckpointWriteError):
            cause = error.strerror or str(error) or type(error).__name__
            failure = CheckpointWriteError(
                f"Could not write the checkpoint {path}: {cause}"
                f"{f' (errno {error.errno})' if error.errno else ''}; nothing was written and the previous "
                "checkpoints are intact."
            )
            failure.errno = error.errno
            raise failure from error
        raise
    _fsync_directory(path.parent)


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning's ``CheckpointIO`` for local files: atomic writes that refuse non-finite weights, and
    reads that check the zip checksums and unpickle with ``weights_only=True`` whatever the caller asks."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options.")
        if "://" in str(path):
            raise ValueError(f"{type(self).__name__} writes local files; got {path}.")
        check_finite(checkpoint, path)
        buffer = io.BytesIO()
        torch.save(_plain_hyper_parameters(checkpoint), buffer)
        write_atomically(buffer.getbuffer(), path)

    def load_checkpoint(
        self, path: Any, map_location: Any = lambda storage, loc: storage, weights_only: bool | None = None
    ) -> dict[str, Any]:
        # A caller's weights_only of False is not honoured: a checkpoint is data.
        return read_checkpoint(path, map_location)
