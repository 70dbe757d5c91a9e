"""The run's log: ``<run dir>/train.log`` (Hydra's file handler on the root logger) holds our lines
and Lightning's, with their times; the console shows the messages alone (``conf/config.yaml``,
``hydra.job_logging``). Outside a Hydra run (tests, notebooks) our lines are printed."""

from __future__ import annotations

import logging
import os
import stat
import sys

log = logging.getLogger("train")


class NoFollowFileHandler(logging.FileHandler):
    """Hydra's file handler for ``train.log`` (``conf/config.yaml``, ``hydra.job_logging``), opening the
    file without following a symbolic link and refusing anything but a regular file of this user with
    one name: a ``train.log -> /victim`` planted in a run directory never gets the run's log appended
    to its target (the run directory is also checked before Hydra starts, with a one-line error)."""

    def _open(self):
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        flags |= os.O_TRUNC if "w" in self.mode else os.O_APPEND
        fd = os.open(self.baseFilename, flags, 0o644)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_uid != os.geteuid():
            os.close(fd)
            raise OSError(f"{self.baseFilename} is not a log file this program created (a fifo, another user's file "
                          "or a hard link); nothing was written to it.")
        os.set_blocking(fd, True)
        return os.fdopen(fd, self.mode, encoding=self.encoding, errors=self.errors)


def log_to_run_log() -> None:
    """Sends Lightning's log records to the root logger, which Hydra writes to the run's log file
    and the console. Lightning, imported before Hydra configured logging, gave its loggers their
    own console handlers and cut them off from the root."""
    if not logging.getLogger().handlers:
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        for handler in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
            logger.removeHandler(handler)
        logger.propagate = True


def report(message: str) -> None:
    """A line for the user: into the run's log (and on the console) in a Hydra run, printed otherwise."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized() and logging.getLogger().handlers:
        log.info(message)
    else:
        print(message)


def exit_with(message: str) -> None:
    """Ends the process with ``message`` on stderr and a copy in the run's log file (if it still has one)."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, message, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    sys.exit(message)


def close_log_files_in(folder) -> None:
    """Closes and drops the root logger's file handlers writing into ``folder`` (before it is removed)."""
    from pathlib import Path

    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, logging.FileHandler)]:
        if Path(handler.baseFilename).resolve().parent == Path(folder).resolve():
            root.removeHandler(handler)
            handler.close()
