"""Run directories: one per run, claimed atomically, never reused.

A run's directory is ``outputs/<date>/<time>_<run_id>`` (``conf/config.yaml``), ``run_id`` a token
drawn once per process, so two runs started in the same second never share a directory. A
directory given on the command line (``hydra.run.dir=...``) is claimed with a lock before Hydra
writes ``.hydra/`` into it, and refused when an earlier run wrote there.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import secrets
import socket
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from .config_errors import ConfigError
from .resume import requeued_slurm_job

RUN_LOCK = ".run.lock"
_claimed: dict[Path, int] = {}  # run directories this process holds -> descriptor of their locked RUN_LOCK
_RUN_ID = secrets.token_hex(3)


def register_run_id() -> None:
    """Registers the ``${run_id:}`` resolver that ``hydra.run.dir`` and ``hydra.sweep.dir`` use."""
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", lambda: _RUN_ID, use_cache=True)


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
    output_dir = output_dir.resolve()
    if output_dir in _claimed:
        check_fresh_output_dir(output_dir, data_dir)
        return
    output_dir.mkdir(parents=True, exist_ok=True)
    lock = output_dir / RUN_LOCK
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ConfigError(
                f"The run directory {output_dir} is in use by another run right now ({holder}); two runs never "
                "share a directory. Choose another hydra.run.dir (or paths.output_dir), or leave it to the default, "
                "which is unique per run."
            ) from None
        with contextlib.suppress(FileNotFoundError):
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:  # not a file its last holder has just removed
                break
        os.close(fd)
    try:
        check_fresh_output_dir(output_dir, data_dir, hydra_config_is_ours=not before_hydra)
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)
    _claimed[output_dir] = fd


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


def check_fresh_output_dir(output_dir: Path, data_dir: Path | None = None, hydra_config_is_ours: bool = True) -> None:
    """Refuses a run directory where an earlier run already wrote something (besides job logs, this
    run's lock and, when Hydra wrote it for this run, ``.hydra/``): nothing is ever overwritten. The
    one exception is a requeued SLURM job, which continues in its own directory."""
    if not output_dir.is_dir():
        return
    ours = {output_dir / RUN_LOCK, data_dir} | ({output_dir / ".hydra"} if hydra_config_is_ours else set())
    previous = sorted(p.name for p in output_dir.iterdir() if p not in ours and p.suffix != ".log")
    if previous and not requeued_slurm_job(output_dir):
        raise ConfigError(
            f"The run directory {output_dir} already holds another run's outputs ({', '.join(previous)}); "
            "nothing is overwritten. Choose a new hydra.run.dir (or paths.output_dir), or leave it to the default, "
            "which is unique per run. To continue that run, start a new one with ckpt_path=<its checkpoint>."
        )


def claim_fixed_run_dir(conf_dir: Path, overrides: list[str]) -> None:
    """Claims a run directory given on the command line (``hydra.run.dir=...``) before Hydra writes
    ``.hydra/`` into it, so that a second run on it is refused before it overwrites the first's
    config (default directories are unique per run: nothing to claim). ``conf_dir``: the config root."""
    if rank_zero_only.rank != 0 or not any(o.startswith("hydra.run.dir=") for o in overrides):
        return
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(str(conf_dir.resolve()), version_base="1.3"):
            hydra_cfg = compose("config", overrides=overrides, return_hydra_config=True)
            run_dir = OmegaConf.select(hydra_cfg, "hydra.run.dir")
    except Exception:  # an interpolation only Hydra's run can resolve: train() claims the directory instead
        return
    claim_run_dir(Path(str(run_dir)), before_hydra=True)


def print_run_outputs(output_dir: Path, trainer: L.Trainer) -> None:
    """Prints where a finished run wrote its config and each logger's files."""
    print(f"Run directory: {output_dir}  (config in .hydra/config.yaml when started from the command line)")
    for logger in trainer.loggers:
        if getattr(logger, "log_dir", None) is None:  # fast_dev_run's DummyLogger writes nothing
            continue
        hint = f"  (open with: tensorboard --logdir {output_dir})" if isinstance(logger, TensorBoardLogger) else ""
        print(f"{type(logger).__name__} logs: {Path(logger.log_dir).resolve()}{hint}")
