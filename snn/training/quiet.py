"""The third-party lines a training run does not print, each dropped by its source and its message.

A run prints our lines (config errors, the model summary, where the run directory is), Lightning's
progress bar and its metric tables. What else the libraries we call write there is advice for
other products, a deprecation inside another library that no user of ours can act on, or a line
that contradicts what we do:

- Lightning's "💡 Tip: ... litlogger / litmodels" (an advertisement, on every run);
- "`weights_only` was not set, defaulting to `False`" (Lightning, when it saves the checkpoint of
  an interrupted run: we load checkpoints with ``weights_only=True``, ``snn.training.checkpointing.safe_load``);
- torch's FutureWarning "``isinstance(treespec, LeafSpec)`` is deprecated", raised by Lightning's
  own ``_pytree`` module (nothing in our code uses it);
- alembic's INFO lines when Optuna's sweeper opens or creates its SQLite study (``setup plugin
  alembic.autogenerate.*``, seven of them, then ``Context impl SQLiteImpl``, ``Will assume
  non-transactional DDL``, ``Running upgrade ...``): Hydra's logging sends every INFO line to the
  console. Its warnings and errors still show.

Each filter matches one logger (or one warning's module) and the start of one message, so any
other line of those libraries still shows. :func:`quiet_third_party` installs them; calling it
again changes nothing.
"""

from __future__ import annotations

import logging
import warnings

# (logger, the start of each message dropped from it; None: every record below WARNING)
LOG_LINES: dict[str, tuple[str, ...] | None] = {
    "lightning.pytorch.utilities.rank_zero": ("💡 Tip:",),
    "lightning.fabric.utilities.rank_zero": ("💡 Tip:",),
    "lightning.pytorch.trainer.connectors.checkpoint_connector": ("`weights_only` was not set",),
    "alembic.runtime.migration": None,
    "alembic.runtime.plugins": None,
}
# (category, message regex, module regex) for warnings.filterwarnings
WARNINGS = [
    (FutureWarning, r"`isinstance\(treespec, LeafSpec\)` is deprecated", r"lightning\.pytorch\.utilities\._pytree"),
]


class _DropLines(logging.Filter):
    """Drops the records of its logger whose message starts with one of ``starts`` (``None``: every
    record below WARNING)."""

    def __init__(self, starts: tuple[str, ...] | None):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        if self.starts is None:
            return record.levelno >= logging.WARNING
        return not str(record.msg).startswith(self.starts)


def quiet_third_party() -> None:
    """Installs the filters of :data:`LOG_LINES` and :data:`WARNINGS` (idempotent)."""
    for name, starts in LOG_LINES.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropLines) for f in logger.filters):
            logger.addFilter(_DropLines(starts))
    for category, message, module in WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
