"""Reading the IDX files of the MNIST family (plain or gzip) with checks that name the bad file.

Format (big-endian): two zero bytes, a type code, the number of dimensions ``n``, ``n`` uint32
sizes, then the data. Anything else (a truncated download, an HTML error page saved under the
file's name, a wrong file) raises ``ValueError`` naming the file and what is wrong with it.
"""

from __future__ import annotations

import gzip
import io
import math
import zlib
from pathlib import Path

import numpy as np
import torch

from snn.errors import DataError

from .limits import check_bytes, max_bytes

# IDX type code -> numpy dtype (big-endian)
IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    limit = max_bytes()
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as f:
            data = f.read(limit + 1)  # a small file can unpack to any size: read no more than allowed
    except (EOFError, OSError, zlib.error) as error:
        raise DataError(f"{path} is a corrupt or truncated gzip file ({error}); "
                        "delete it and fetch it again.") from None
    check_bytes(len(data), f"Unpacking {path}", "check the file (MNIST's largest unpacks to 47 MB)")
    return data


def read_idx(path: str | Path) -> torch.Tensor:
    """The array stored in the IDX file ``path`` (``.gz`` or not) as a tensor of its own type."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in IDX_TYPES or data[3] == 0:
        raise DataError(
            f"{path} is not an IDX file: its header {data[:4].hex(' ') or '(empty)'} should be "
            "00 00 <type> <ndim> with type in 08 09 0b 0c 0d 0e; delete it and fetch it again."
        )
    dtype, ndim = np.dtype(IDX_TYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated: its header announces {ndim} dimensions "
                        f"but the file ends after {len(data)} bytes.")
    shape = tuple(int(s) for s in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = math.prod(shape) * dtype.itemsize  # exact: a hostile shape cannot wrap around
    if len(data) - header != expected:
        problem = "truncated" if len(data) - header < expected else "longer than announced"
        raise DataError(
            f"{path} is {problem}: shape {list(shape)} of {dtype.name} needs {expected} bytes of data, "
            f"found {len(data) - header}; delete it and fetch it again."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(array.astype(dtype.newbyteorder("="), copy=True))

