"""Train a spiking classifier: ``python train.py model=adex dataset=mnist [key=value ...]``.

Fits, tests the best checkpoint and returns the validation metric ``optimized_metric`` (for
sweepers: ``python train.py -m model=adex,lif seed=1,2``). Config: ``conf/config.yaml``.
Resume: ``ckpt_path=<run>/checkpoints/last.ckpt``; evaluate a checkpoint: ``train=false ckpt_path=...``.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import secrets
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import hydra
import lightning as L
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from omegaconf import DictConfig, OmegaConf

from snn.data import DataError
from snn.training import (
    CheckpointWriteError,
    NonFiniteCheckpointError,
    NonFiniteError,
    SafeCheckpointIO,
    SpikingClassifierModule,
    build_from_config,
    check_model_config,
    load_checkpoint,
    load_module,
)

CONF_DIR = Path(__file__).parent / "conf"

# Run directories are outputs/<date>/<time>_<run_id>: a token drawn once per process, so two runs
# started in the same second never share (and overwrite) a directory.
_RUN_ID = secrets.token_hex(3)
if not OmegaConf.has_resolver("run_id"):
    OmegaConf.register_new_resolver("run_id", lambda: _RUN_ID, use_cache=True)


SIGTERM_EXIT = 143  # 128 + SIGTERM, what a shell reports for a process ended by SIGTERM


class ConfigError(ValueError):
    """A bad config value, a missing or mismatched checkpoint: reported in one paragraph, no traceback."""


def _container(node) -> dict | None:
    return None if node is None else OmegaConf.to_container(node, resolve=True)


def build(cfg: DictConfig) -> tuple[SpikingClassifierModule, L.LightningDataModule, L.Trainer]:
    """The LightningModule, DataModule and Trainer described by ``cfg`` (nothing is read or run).

    The model comes first: its checks (T, neuron kind and parameters, surrogate, decoder...) fail
    before anything else is set up.
    """
    module = SpikingClassifierModule(
        net=_container(cfg.model),
        optimizer=_container(cfg.optimizer),
        scheduler=_container(cfg.scheduler),
        scheduler_interval=cfg.scheduler_interval,
        **cfg.regularizer,
        config=_container(cfg),
    )
    datamodule = build_from_config(cfg.dataset, "dataset")
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values() if c]
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c]
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    overrides = {}
    if cfg.trainer.get("sync_batchnorm") and not _sync_batchnorm_works(cfg.trainer.get("accelerator", "auto")):
        overrides["sync_batchnorm"] = False
        rank_zero_info("trainer.sync_batchnorm is off: SyncBatchNorm runs on GPUs only, so here each process "
                       "normalises with its own batch statistics.")
    # Checkpoints are written atomically and read as data only (weights_only), whatever the config says.
    plugins = [*(instantiate(cfg.trainer.get("plugins")) or []), SafeCheckpointIO()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins, **overrides)
    return module, datamodule, trainer


def _sync_batchnorm_works(accelerator) -> bool:
    """Whether torch's SyncBatchNorm runs on ``accelerator`` ("auto" resolved the way Lightning does):
    it needs CUDA (or XPU, HPU...), not the CPU or Apple's MPS."""
    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator, MPSAccelerator

    if isinstance(accelerator, CPUAccelerator | MPSAccelerator):
        return False
    if accelerator in ("auto", "gpu"):  # Lightning prefers MPS to CUDA, and takes the CPU when neither is there
        return not MPSAccelerator.is_available() and (accelerator == "gpu" or CUDAAccelerator.is_available())
    return accelerator not in ("cpu", "mps")


RUN_LOCK = ".run.lock"
_claimed: dict[Path, int] = {}  # run directories this process holds -> descriptor of their locked RUN_LOCK


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


def _requeued_slurm_job(output_dir: Path) -> bool:
    """A SLURM job requeued by Lightning's auto-requeue (on SIGUSR1) restarts in its own run directory
    and resumes from the ``hpc_ckpt_N.ckpt`` its previous attempt saved there."""
    restarts = os.environ.get("SLURM_RESTART_COUNT", "0")
    return restarts.isdigit() and int(restarts) > 0 and any(output_dir.glob("hpc_ckpt_*.ckpt"))


def check_fresh_output_dir(output_dir: Path, data_dir: Path | None = None, hydra_config_is_ours: bool = True) -> None:
    """Refuses a run directory where an earlier run already wrote something (besides job logs, this
    run's lock and, when Hydra wrote it for this run, ``.hydra/``): nothing is ever overwritten. The
    one exception is a requeued SLURM job, which continues in its own directory."""
    if not output_dir.is_dir():
        return
    ours = {output_dir / RUN_LOCK, data_dir} | ({output_dir / ".hydra"} if hydra_config_is_ours else set())
    previous = sorted(p.name for p in output_dir.iterdir() if p not in ours and p.suffix != ".log")
    if previous and not _requeued_slurm_job(output_dir):
        raise ConfigError(
            f"The run directory {output_dir} already holds another run's outputs ({', '.join(previous)}); "
            "nothing is overwritten. Choose a new hydra.run.dir (or paths.output_dir), or leave it to the default, "
            "which is unique per run. To continue that run, start a new one with ckpt_path=<its checkpoint>."
        )


def evaluate(ckpt_path: str, datamodule: L.LightningDataModule, trainer: L.Trainer) -> float:
    """Tests the checkpoint's model (rebuilt from the config the checkpoint carries) on ``cfg.dataset``.

    ``load_module`` checks the file (integrity, weights_only, only our classes in its configs) before
    the module's ``__init__`` instantiates anything from it."""
    try:
        module = load_module(ckpt_path, map_location="cpu")
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error
    net = module.net
    if tuple(net.input_shape) != tuple(datamodule.input_shape) or net.num_classes != datamodule.num_classes:
        raise ConfigError(
            f"The checkpoint {ckpt_path} takes inputs {list(net.input_shape)} with {net.num_classes} classes, the "
            f"dataset config gives {list(datamodule.input_shape)} with {datamodule.num_classes}; pick its dataset "
            "(the checkpoint's config: torch.load(path)['hyper_parameters']['config']['dataset'])."
        )
    print(f"Evaluating {Path(ckpt_path).resolve()} (model from the checkpoint's config) on {datamodule.name}")
    results = trainer.test(module, datamodule=datamodule)
    return float(results[0]["test/acc"])


def fit_metrics(module: SpikingClassifierModule) -> list[str]:
    """The metrics ``SpikingClassifierModule._step`` logs while fitting: what ``optimized_metric`` and
    a checkpoint's ``monitor`` can name (test metrics come after fitting; callbacks' statistics go to
    the loggers only)."""
    layers = module.recorder.names
    names = ["val/acc", "val/loss", "train/acc", "train/loss", "loss"]
    names += [f"spikes/{layer}/{kind}" for kind in ("val_rate", "rate") for layer in layers]
    return names + (["train/rate_penalty"] if module.hparams.rate_weight > 0 else [])


def check_monitored_metrics(cfg: DictConfig, module: SpikingClassifierModule) -> None:
    """Refuses, before any data is read, an ``optimized_metric`` or a callback ``monitor`` that the
    module never logs (otherwise found out only after the first epoch)."""
    logged = fit_metrics(module)
    named = {"optimized_metric": cfg.optimized_metric}
    for key, callback in (cfg.get("callbacks") or {}).items():
        if callback and callback.get("monitor"):
            named[f"callbacks.{key}.monitor"] = callback.monitor
    for key, metric in named.items():
        if metric not in logged:
            later = " (test metrics are logged only after training)" if str(metric).startswith("test/") else ""
            raise ValueError(f"{key}={metric} is not a metric logged during training{later}; "
                             f"choose one of {', '.join(logged)}.")


def check_epochs_left(checkpoint: dict, trainer_cfg: DictConfig, path: str) -> None:
    """Refuses to resume a checkpoint that already reached ``trainer.max_epochs`` or ``max_steps``
    (Lightning would return at once, without a single metric)."""
    fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
    epochs = fit_loop.get("epoch_progress", {}).get("current", {})
    finished = epochs.get("processed")  # an end-of-epoch checkpoint is written before the epoch counts as completed
    in_epoch = isinstance(finished, int) and epochs.get("started", 0) > finished
    if in_epoch and fit_loop.get("epoch_loop.batch_progress", {}).get("is_last_batch"):
        finished += 1  # stopped after the epoch's last batch: Lightning resumes with the next epoch
    max_epochs, max_steps = trainer_cfg.get("max_epochs"), trainer_cfg.get("max_steps")
    if isinstance(finished, int) and finished > 0 and max_epochs is not None and 0 <= max_epochs <= finished:
        raise ValueError(
            f"The checkpoint {path} already finished epoch {finished - 1} ({finished} epochs), and "
            f"trainer.max_epochs={max_epochs} leaves nothing to train: raise trainer.max_epochs (above {finished})."
        )
    step = checkpoint.get("global_step")
    if isinstance(step, int) and max_steps is not None and 0 <= max_steps <= step:
        raise ValueError(
            f"The checkpoint {path} already took {step} optimizer steps, and trainer.max_steps={max_steps} "
            f"leaves nothing to train: raise trainer.max_steps (above {step})."
        )


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


def train(cfg: DictConfig) -> float:
    """Runs one training as configured by ``cfg`` and returns the best ``cfg.optimized_metric``.

    With ``cfg.ckpt_path`` it resumes that checkpoint (whose model config must match ``cfg.model``);
    with ``cfg.train`` false it only tests the checkpoint and returns its test accuracy.
    """
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir).resolve()
    if rank_zero_only.rank == 0:  # DDP's other processes share rank 0's directory
        claim_run_dir(output_dir, Path(cfg.paths.data_dir).resolve())
    ckpt_path, fit = cfg.get("ckpt_path"), cfg.get("train", True)
    try:
        module, datamodule, trainer = build(cfg)
        if fit:
            check_monitored_metrics(cfg, module)
        if ckpt_path:
            checkpoint = load_checkpoint(ckpt_path)
            if fit:
                check_model_config(checkpoint, module.hparams.net, ckpt_path)
                check_epochs_left(checkpoint, cfg.trainer, ckpt_path)
            del checkpoint
        elif not fit:
            raise ValueError("train=false evaluates a checkpoint: add ckpt_path=<path to a .ckpt file>.")
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error
    if not fit:
        with exit_on_sigterm(trainer):
            return evaluate(ckpt_path, datamodule, trainer)

    resume = ckpt_path
    if _requeued_slurm_job(output_dir):  # resume from the checkpoint Lightning saved on SIGUSR1
        resume = "hpc"
        rank_zero_info(f"Requeued SLURM job: continuing in {output_dir} from its latest hpc_ckpt_N.ckpt.")
    with exit_on_sigterm(trainer):
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        except (FileNotFoundError, DataError) as error:  # missing or damaged data files: the message says what to do
            raise ConfigError(str(error)) from error
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint is not None else ""

    metric_name = cfg.optimized_metric
    if checkpoint is not None and checkpoint.monitor == metric_name and checkpoint.best_model_score is not None:
        value = float(checkpoint.best_model_score)
    elif metric_name in metrics:
        value = metrics[metric_name]
    else:
        raise ValueError(f"optimized_metric {metric_name!r} was not logged; logged metrics: {sorted(metrics)}.")

    if cfg.test:
        with exit_on_sigterm(trainer):
            trainer.test(module, datamodule=datamodule, ckpt_path=best_path or None, weights_only=True)

    print(f"Run directory: {output_dir}  (config in .hydra/config.yaml when started from the command line)")
    for logger in trainer.loggers:
        if getattr(logger, "log_dir", None) is None:  # fast_dev_run's DummyLogger writes nothing
            continue
        hint = f"  (open with: tensorboard --logdir {output_dir})" if isinstance(logger, TensorBoardLogger) else ""
        print(f"{type(logger).__name__} logs: {Path(logger.log_dir).resolve()}{hint}")
    if best_path:
        print(f"Best checkpoint ({metric_name} = {value:.4f}): {Path(best_path).resolve()}")
    return value


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    try:
        return train(cfg)
    except ConfigError as error:
        sys.exit(f"Config error: {error}")
    except NonFiniteError as error:  # the message names the step and the last good checkpoint
        sys.exit(f"Training stopped: {error}")
    except (CheckpointWriteError, NonFiniteCheckpointError) as error:  # one sentence: file and cause
        sys.exit(f"Checkpoint not written: {error}")


def explain_composition_error(overrides: list[str]) -> str | None:
    """One paragraph on why Hydra cannot compose ``overrides`` (an unknown key or option) with the
    valid choices, or None when they compose. Hydra's own message lists neither valid keys nor, in
    one line, the options."""
    from hydra import compose, initialize_config_dir

    def compose_(ovs: list[str]) -> DictConfig:
        with initialize_config_dir(str(CONF_DIR.resolve()), version_base="1.3"):
            return compose("config", overrides=ovs)

    try:
        compose_(overrides)
        return None
    except MissingConfigException as error:
        missing = str(error.missing_cfg_file or "")
        group, _, option = missing.rpartition("/")
        if not group or not error.options:
            return " ".join(str(error).split())
        return f"Unknown {group} {option!r}; choose one of {', '.join(error.options)} (the files in conf/{group}/)."
    except ConfigCompositionException as error:
        key = getattr(error.__cause__, "full_key", None)
        if not key:
            return " ".join(str(error).split("Config search path")[0].split())
        parent, _, name = key.rpartition(".")
        others = [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key]
        try:
            node = OmegaConf.select(compose_(others), parent) if parent else compose_(others)
        except Exception:  # the other overrides are broken as well: explain this one alone
            node = None
        where = f"'{parent}'" if parent else "the top level"
        valid = f" Valid keys at {where}: {', '.join(map(str, node))}." if isinstance(node, DictConfig) else ""
        return f"Unknown config key {key!r}.{valid} To add a new key on purpose, write +{key}=<value>."
    except Exception:  # anything else (override syntax...) is Hydra's to report
        return None


def claim_fixed_run_dir(overrides: list[str]) -> None:
    """Claims a run directory given on the command line (``hydra.run.dir=...``) before Hydra writes
    ``.hydra/`` into it, so that a second run on it is refused before it overwrites the first's
    config (default directories are unique per run: nothing to claim)."""
    if rank_zero_only.rank != 0 or not any(o.startswith("hydra.run.dir=") for o in overrides):
        return
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(str(CONF_DIR.resolve()), version_base="1.3"):
            hydra_cfg = compose("config", overrides=overrides, return_hydra_config=True)
            run_dir = OmegaConf.select(hydra_cfg, "hydra.run.dir")
    except Exception:  # an interpolation only Hydra's run can resolve: train() claims the directory instead
        return
    claim_run_dir(Path(str(run_dir)), before_hydra=True)


if __name__ == "__main__":
    # Check plain single runs before Hydra starts (sweeps and --config-path runs are Hydra's to check).
    args = sys.argv[1:]
    if not any(a.startswith("-") for a in args):
        problem = explain_composition_error(args)
        if problem:
            sys.exit(f"Config error: {problem}")
        try:
            claim_fixed_run_dir(args)
        except ConfigError as error:
            sys.exit(f"Config error: {error}")
    main()
