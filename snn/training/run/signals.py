"""Signals: a run stopped by SIGTERM (a scheduler's, a sweeper's) ends with SIGTERM's exit code."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import lightning as L

SIGTERM_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM


@contextlib.contextmanager
def exit_on_sigterm(trainer: L.Trainer) -> Iterator[None]:
    """Ends the process with exit code 143 when the trainer received SIGTERM.

    Lightning catches SIGTERM itself (``trainer.received_sigterm``) and stops its loops with a
    ``SIGTERMException``, a SystemExit with code 0, which a scheduler or sweeper would count as a
    success (``InterruptCheckpoint`` has saved ``interrupted.ckpt`` by then).
    """
    try:
        yield
    except SystemExit:
        if not trainer.received_sigterm:
            raise
    else:
        if not trainer.received_sigterm:
            return
    print(f"Stopped by SIGTERM (exit code {SIGTERM_EXIT}).", file=sys.stderr)
    raise SystemExit(SIGTERM_EXIT)
