"""Train a spiking classifier: ``python train.py model=adex dataset=mnist [key=value ...]``.

Fits, tests the best checkpoint and returns the validation metric ``optimized_metric`` (for
sweepers: ``python train.py -m model=adex,lif seed=1,2``). Config: ``conf/config.yaml``.
Resume: ``ckpt_path=<run>/checkpoints/last.ckpt``; evaluate a checkpoint: ``train=false ckpt_path=...``.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import hydra
import lightning as L
from hydra.errors import ConfigCompositionException, MissingConfigException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import DictConfig, OmegaConf

from snn.training import (
    DataError,
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
    # Checkpoints are written atomically and read as data only (weights_only), whatever the config says.
    plugins = [*(instantiate(cfg.trainer.get("plugins")) or []), SafeCheckpointIO()]
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=plugins)
    return module, datamodule, trainer


def check_fresh_output_dir(output_dir: Path, data_dir: Path | None = None) -> None:
    """Refuses a run directory where an earlier run already wrote something (besides Hydra's
    ``.hydra/`` and job log, written just before this run started): nothing is ever overwritten."""
    if not output_dir.is_dir():
        return
    ours = {output_dir / ".hydra", data_dir}
    previous = sorted(p.name for p in output_dir.iterdir() if p not in ours and p.suffix != ".log")
    if previous:
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


def train(cfg: DictConfig) -> float:
    """Runs one training as configured by ``cfg`` and returns the best ``cfg.optimized_metric``.

    With ``cfg.ckpt_path`` it resumes that checkpoint (whose model config must match ``cfg.model``);
    with ``cfg.train`` false it only tests the checkpoint and returns its test accuracy.
    """
    L.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.paths.output_dir).resolve()
    if rank_zero_only.rank == 0:  # DDP's other processes share rank 0's directory
        check_fresh_output_dir(output_dir, Path(cfg.paths.data_dir).resolve())
    ckpt_path, fit = cfg.get("ckpt_path"), cfg.get("train", True)
    try:
        module, datamodule, trainer = build(cfg)
        if ckpt_path:
            checkpoint = load_checkpoint(ckpt_path)
            if fit:
                check_model_config(checkpoint, module.hparams.net, ckpt_path)
            del checkpoint
        elif not fit:
            raise ValueError("train=false evaluates a checkpoint: add ckpt_path=<path to a .ckpt file>.")
    except (ValueError, FileNotFoundError) as error:
        raise ConfigError(str(error)) from error
    if not fit:
        return evaluate(ckpt_path, datamodule, trainer)

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
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


if __name__ == "__main__":
    # Check plain single runs before Hydra starts (sweeps and --config-path runs are Hydra's to check).
    args = sys.argv[1:]
    if not any(a.startswith("-") for a in args):
        problem = explain_composition_error(args)
        if problem:
            sys.exit(f"Config error: {problem}")
    main()
