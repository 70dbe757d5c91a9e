"""One limit on what a config or a file may make us allocate, checked from shapes before allocating.

A typo in a config (``dataset.T=10000000``) or a file that declares more than it holds should end in
an error naming the setting or the file, not in a machine swapping or an out-of-memory kill minutes
later. Every size that comes from a config or a file is checked here, as the bytes of the one array
it would make: at most ``SNN_MAX_ALLOC_GB`` GiB (an environment variable, default 4).
"""

from __future__ import annotations

import math
import os

from snn.errors import SizeLimitError  # noqa: F401 (re-exported)

ENV = "SNN_MAX_ALLOC_GB"
DEFAULT_GB = 4.0



def max_bytes() -> int:
    """The limit in bytes: ``SNN_MAX_ALLOC_GB`` GiB (a positive number), by default 4 GiB."""
    text = os.environ.get(ENV, "").strip()
    if not text:
        return int(DEFAULT_GB * 2**30)
    try:
        gib = float(text)
    except ValueError:
        gib = math.nan
    if not (math.isfinite(gib) and gib > 0):
        raise ValueError(f"{ENV}={text!r} is not a positive number of GiB (e.g. {ENV}=32).")
    return int(gib * 2**30)


def check_bytes(nbytes: int, what: str, fix: str) -> None:
    """Raises ``SizeLimitError`` when ``nbytes`` (what ``what`` would allocate) exceeds the limit;
    the message says what asked for it, ``fix`` (the setting or file to change) and how to raise it."""
    limit = max_bytes()
    if nbytes > limit:
        raise SizeLimitError(
            f"{what} would allocate {nbytes / 2**30:,.1f} GiB, more than the {limit / 2**30:g} GiB "
            f"allowed: {fix}. If the machine really has the memory, raise the limit with the environment "
            f"variable {ENV} (e.g. {ENV}={max(2 * limit, nbytes) / 2**30:.0f})."
        )


def check_elements(shape, itemsize: int, what: str, fix: str) -> None:
    """``check_bytes`` for an array of ``shape`` and ``itemsize`` bytes per element (exact integers:
    no overflow however absurd the shape)."""
    check_bytes(math.prod(int(s) for s in shape) * int(itemsize), what, fix)
