"""Run directories: one per run, claimed atomically, never reused, removed again when the run is
refused before training.

A run's directory is ``outputs/<name>/<date>_<time>_<run_id>`` (``conf/config.yaml``): ``name`` the
experiment, else ``<model>-<dataset>``; ``run_id`` a token drawn once per process, so two runs
started in the same second never share a directory. A directory given on the command line
(``hydra.run.dir=...``) is claimed with a lock before Hydra writes ``.hydra/`` into it, and refused
when an earlier run wrote there. The lock file is never one planted by someone else (a symbolic
link, a fifo, another user's file): those are refused without writing anything; so are a planted
log file or ``.hydra/`` (checked once, before anything is written) and a run directory that is a
symbolic link or not a directory.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import secrets
import socket
import stat
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from snn.errors import ConfigError

from .log import close_log_files_in, report
from .naming import register_run_name
from .resume import requeued_slurm_job

RUN_LOCK = ".run.lock"
_claimed: dict[Path, int] = {}  # run directories this process holds -> descriptor of their locked RUN_LOCK
_created: set[Path] = set()  # directories this process created (a refused run removes them again)
_new_locks: set[int] = set()  # descriptors of lock files this process has just created, until claimed
_preexisting: dict[Path, set[str]] = {}  # claimed run directories that existed -> the names they held then
_RUN_ID = secrets.token_hex(3)
# What a run refused before training leaves in its directory; anything else keeps the directory.
_REFUSED_RUN_FILES = {".hydra": {"config.yaml", "hydra.yaml", "overrides.yaml"}}


def register_run_id() -> None:
    """Registers the ``${run_id:}`` and ``${run_name:}`` resolvers that ``hydra.run.dir`` and
    ``hydra.sweep.dir`` use."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: _RUN_ID, use_cache=True)
    register_run_name()  # snn/training/run/naming.py: runs, sweeps and evaluations


def claim_run_dir(output_dir: Path, data_dir: Path | None = None, before_hydra: bool = False) -> None:
    """Claims ``output_dir`` for this process's run, atomically, then checks that no earlier run wrote there.

    The claim is an exclusive ``flock`` on ``output_dir/.run.lock``, held until ``release_run_dir``
    or the end of the process; the OS drops it when the process dies, so a crashed run leaves no
    stale claim (its outputs still keep the directory from being reused). Of two runs started
    together on one directory exactly one gets the lock; the other is refused. A directory this
    process holds already (``__main__`` claims ``hydra.run.dir`` before Hydra writes ``.hydra/``
    into it) is only checked again. Claimed ``before_hydra``, a ``.hydra/`` already there is an
    earlier run's (however quickly that run ended), so the directory is refused.
    """
    check_run_dir_path(output_dir)
    output_dir = output_dir.resolve()
    if output_dir in _claimed:
        check_fresh_output_dir(output_dir, data_dir)
        return
    _created.update(p for p in [output_dir, *output_dir.parents] if not p.exists())
    existed = output_dir.is_dir() and output_dir not in _created
    held_before = {p.name for p in output_dir.iterdir()} - {RUN_LOCK} if existed else set()
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = output_dir / RUN_LOCK
    while True:
        fd = open_run_lock(lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            _new_locks.discard(fd)
            os.close(fd)
            raise ConfigError(
                f"The run directory {output_dir} is in use by another run right now ({holder}); two runs never "
                "share a directory. Choose another hydra.run.dir (or paths.output_dir), or leave it to the default, "
                "which is unique per run."
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.lstat(lock).st_ino:  # not a file its last holder has just removed
                break
        _new_locks.discard(fd)
        os.close(fd)
    try:
        check_fresh_output_dir(output_dir, data_dir, hydra_config_is_ours=not before_hydra)
    except BaseException:
        if fd in _new_locks:  # still locked: a waiting claimant re-checks the inode
            os.unlink(lock)
        _new_locks.discard(fd)
        os.close(fd)
        raise
    _new_locks.discard(fd)
    _preexisting.setdefault(output_dir, held_before)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _claimed[output_dir] = fd


def open_run_lock(lock: Path) -> int:
    """A descriptor of the run lock file ``lock``, created if missing, opened without following a
    symbolic link and refused (ConfigError, nothing written) unless it is a regular file of this
    user with no other name: a planted link, fifo, directory or someone else's file never becomes
    the lock, and the file it points to is never truncated or written."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        try:
            fd = os.open(lock, flags | os.O_EXCL, 0o644)
            _new_locks.add(fd)  # created now: a refused claim removes it again
        except FileExistsError:
            fd = os.open(lock, flags, 0o644)
    except OSError as error:
        kind = "a symbolic link" if lock.is_symlink() else "a directory" if lock.is_dir() else "not openable"
        raise ConfigError(_foreign_lock(lock, f"{kind} ({error.strerror})")) from None
    info = os.fstat(fd)
    problem = (
        "not a regular file" if not stat.S_ISREG(info.st_mode)
        else f"owned by another user (uid {info.st_uid})" if info.st_uid != os.geteuid()
        else f"a file with {info.st_nlink} names (a hard link)" if info.st_nlink != 1
        else None
    )
    if problem:
        os.close(fd)
        raise ConfigError(_foreign_lock(lock, problem))
    return fd


def _foreign_lock(lock: Path, what: str) -> str:
    return (f"The run lock {lock} is {what}, not a lock file this program created; the run directory "
            f"{lock.parent} is not used and nothing was written to it. If you put it there, remove it; otherwise "
            "someone else prepared this directory: choose another hydra.run.dir (or paths.output_dir), or leave it "
            "to the default, which is unique per run.")


def release_run_dir(output_dir: Path) -> None:
    """Ends this process's claim on ``output_dir`` (removing the lock file)."""
    fd = _claimed.pop(output_dir.resolve(), None)
    if fd is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(output_dir.resolve() / RUN_LOCK)  # under the lock: a waiting claimant re-checks the inode
        os.close(fd)


@atexit.register
def _release_all() -> None:
    for output_dir in list(_claimed):
        release_run_dir(output_dir)


def check_run_dir_path(output_dir: Path) -> None:
    """Refuses (ConfigError, one sentence) a run directory given as a symbolic link (the run would
    write wherever it points) or as something that is not a directory (a regular file: Hydra and
    the lock would fail with a raw FileExistsError)."""
    given = Path(os.path.abspath(output_dir))
    if given.is_symlink():
        raise ConfigError(
            f"The run directory {given} is a symbolic link (to {os.readlink(given)}); a run writes only into a real "
            "directory, so nothing was written. Give the directory itself as hydra.run.dir (or paths.output_dir), or "
            "leave it to the default, which is unique per run.")
    if given.exists() and not given.is_dir():
        raise ConfigError(
            f"The run directory {given} exists and is not a directory; nothing was written. Choose another "
            "hydra.run.dir (or paths.output_dir), or leave it to the default, which is unique per run.")


def _planted(entry: Path) -> str | None:
    """What makes ``entry`` (a file the run writes to: a log, ``.hydra/`` and its files) something this
    program did not create, or None: a symbolic link, a fifo or device, another user's file, a file
    with other names (a hard link)."""
    info = entry.lstat()
    if stat.S_ISLNK(info.st_mode):
        return f"a symbolic link (to {os.readlink(entry)})"
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        return "not a regular file"
    if info.st_uid != os.geteuid():
        return f"owned by another user (uid {info.st_uid})"
    if stat.S_ISREG(info.st_mode) and info.st_nlink != 1:
        return f"a file with {info.st_nlink} names (a hard link)"
    return None


def check_no_planted_files(output_dir: Path) -> None:
    """Refuses (ConfigError) a run directory holding, among the names a run writes to (``*.log``,
    ``.hydra/`` and the files in it), one it did not create (see :func:`_planted`): a planted
    ``train.log -> /victim`` would have the run append its log to the victim. Checked once, before
    anything is written; the other names a run writes (checkpoints, TensorBoard files) must not
    exist at all (:func:`check_fresh_output_dir`)."""
    entries = [e for e in output_dir.iterdir() if e.suffix == ".log" or e.name == ".hydra"]
    hydra = output_dir / ".hydra"
    if hydra.is_dir() and not hydra.is_symlink():
        entries += list(hydra.iterdir())
    for entry in entries:
        problem = _planted(entry)
        if problem:
            raise ConfigError(
                f"{entry} is {problem}, not a file this program wrote; the run directory {output_dir} is not used and "
                "nothing was written to it. If you put it there, remove it; otherwise choose another hydra.run.dir "
                "(or paths.output_dir), or leave it to the default, which is unique per run.")


def check_fresh_output_dir(output_dir: Path, data_dir: Path | None = None, hydra_config_is_ours: bool = True) -> None:
    """Refuses a run directory where an earlier run already wrote something (besides job logs, this
    run's lock and, when Hydra wrote it for this run, ``.hydra/``), or that holds a planted link
    among those (:func:`check_no_planted_files`): nothing is ever overwritten or written through a
    link. The one exception is a requeued SLURM job, which continues in its own directory."""
    if not output_dir.is_dir():
        return
    check_no_planted_files(output_dir)
    ours = {output_dir / RUN_LOCK, data_dir} | ({output_dir / ".hydra"} if hydra_config_is_ours else set())
    previous = sorted(p.name for p in output_dir.iterdir() if p not in ours and p.suffix != ".log")
    if previous and not requeued_slurm_job(output_dir):
        raise ConfigError(
            f"The run directory {output_dir} already holds another run's outputs ({', '.join(previous)}); "
            "nothing is overwritten. Choose a new hydra.run.dir (or paths.output_dir), or leave it to the default, "
            "which is unique per run. To continue that run, start a new one with ckpt_path=<its checkpoint>."
        )


def discard_run_dir(output_dir: Path) -> bool:
    """Undoes what a run refused before training wrote to ``output_dir``: Hydra's record of the run
    (``.hydra/``), its log and its lock, when that is all it wrote; the directory itself goes when
    this process created it (with the folders created for it, once empty). A directory the run did
    not claim, or one that holds anything else, is left alone. True if anything was removed."""
    output_dir = output_dir.resolve()
    if not output_dir.is_dir() or (output_dir not in _created and output_dir not in _claimed):
        return False  # never a directory another process holds
    kept = set() if output_dir in _created else _preexisting.get(output_dir, set())
    entries = [e for e in output_dir.iterdir() if e.name not in kept]
    for entry in entries:
        known = _REFUSED_RUN_FILES.get(entry.name)
        if entry.is_symlink() or not (
            (entry.is_file() and (entry.suffix == ".log" or entry.name == RUN_LOCK))
            or (known is not None and entry.is_dir() and {p.name for p in entry.iterdir()} <= known)
        ):
            return False
    release_run_dir(output_dir)
    close_log_files_in(output_dir)  # train.log: closed before it goes
    for entry in entries:
        if entry.is_dir():
            for file in entry.iterdir():
                file.unlink()
            entry.rmdir()
        else:
            entry.unlink(missing_ok=True)  # the lock went with release_run_dir
    if output_dir not in _created:
        return True
    output_dir.rmdir()
    for folder in output_dir.parents:  # and the folders created for it, now empty
        if folder not in _created or any(folder.iterdir()):
            break
        folder.rmdir()
    return True


def discard_refused_run(cfg: DictConfig, default_run_dir: bool) -> None:
    """Removes the run directories of a run refused before training (see ``discard_run_dir``): the
    one Hydra made for it (``hydra.run.dir``, new when it is the default, unique per run) and
    ``paths.output_dir``. ``default_run_dir``: whether ``hydra.run.dir`` is the default one (no
    ``hydra.run.dir=`` on the command line)."""
    from hydra.core.hydra_config import HydraConfig

    folders = [Path(cfg.paths.output_dir)]
    if HydraConfig.initialized():
        hydra_dir = Path(HydraConfig.get().runtime.output_dir).resolve()
        if default_run_dir:
            _created.add(hydra_dir)
        folders.append(hydra_dir)
    for folder in dict.fromkeys(f.resolve() for f in folders):
        discard_run_dir(folder)


def claim_fixed_run_dir(conf_dir: Path, overrides: list[str]) -> None:
    """Claims a run directory given on the command line (``hydra.run.dir=...``) before Hydra writes
    ``.hydra/`` into it, so that a second run on it is refused before it overwrites the first's
    config. Default directories are unique per run: nothing to claim, but the folders above one
    that do not exist yet are noted, so that a refused run removes what it created. ``conf_dir``: the
    config root."""
    if rank_zero_only.rank != 0:
        return
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(str(conf_dir.resolve()), version_base="1.3"):
            hydra_cfg = compose("config", overrides=overrides, return_hydra_config=True)
            given = Path(os.path.abspath(str(OmegaConf.select(hydra_cfg, "hydra.run.dir"))))
            run_dir = given.resolve()
    except Exception:  # an interpolation only Hydra's run can resolve: train() claims the directory instead
        return
    if any(o.startswith("hydra.run.dir=") for o in overrides):
        claim_run_dir(given, before_hydra=True)
    else:
        _created.update(p for p in run_dir.parents if not p.exists())


def print_run_outputs(output_dir: Path, trainer: L.Trainer) -> None:
    """Reports where a finished run wrote its config and each logger's files."""
    report(f"Run directory: {output_dir}  (config in .hydra/config.yaml when started from the command line)")
    for logger in trainer.loggers:
        if getattr(logger, "log_dir", None) is None:  # fast_dev_run's DummyLogger writes nothing
            continue
        hint = f"  (open with: tensorboard --logdir {output_dir})" if isinstance(logger, TensorBoardLogger) else ""
        report(f"{type(logger).__name__} logs: {Path(logger.log_dir).resolve()}{hint}")
