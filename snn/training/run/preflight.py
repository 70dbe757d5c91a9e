"""Checks before a run reads any data: what the config asks to monitor is logged, and what the
trainer config asks of the hardware is there."""

from __future__ import annotations

from omegaconf import DictConfig


def check_monitored_metrics(cfg: DictConfig, module) -> None:
    """Refuses, before any data is read, an ``optimized_metric`` or a callback ``monitor`` that the
    module never logs (otherwise found out only after the first epoch). ``module``: a
    :class:`~snn.training.SpikingClassifierModule`."""
    logged = module.fit_metrics()
    named = {"optimized_metric": cfg.optimized_metric}
    for key, callback in (cfg.get("callbacks") or {}).items():
        if callback and callback.get("monitor"):
            named[f"callbacks.{key}.monitor"] = callback.monitor
    for key, metric in named.items():
        if metric not in logged:
            later = " (test metrics are logged only after training)" if str(metric).startswith("test/") else ""
            raise ValueError(f"{key}={metric} is not a metric logged during training{later}; "
                             f"choose one of {', '.join(logged)}.")


def check_trains_something(trainer_cfg: DictConfig) -> None:
    """Refuses a trainer config under which fitting runs no training step (``max_epochs=0``,
    ``max_steps=0``, ``limit_train_batches=0``): Lightning would only run the sanity check and stop,
    leaving no metric to return and no checkpoint to test. ``fast_dev_run`` overrides all three."""
    if trainer_cfg.get("fast_dev_run"):
        return
    for key in ("max_epochs", "max_steps", "limit_train_batches"):
        value = trainer_cfg.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
            raise ValueError(
                f"trainer.{key}={value} trains nothing (the run would stop before its first training step, "
                "with no metric to report and no checkpoint to test): set it to 1 or more "
                "(a short run: trainer.max_epochs=1 trainer.limit_train_batches=<batches>); to only test "
                "a checkpoint: train=false ckpt_path=<path to a .ckpt file>.")


def sync_batchnorm_works(accelerator) -> bool:
    """Whether torch's SyncBatchNorm runs on ``accelerator`` ("auto" resolved the way Lightning does):
    it needs CUDA (or XPU, HPU...), not the CPU or Apple's MPS."""
    from lightning.pytorch.accelerators import CPUAccelerator, CUDAAccelerator, MPSAccelerator

    if isinstance(accelerator, CPUAccelerator | MPSAccelerator):
        return False
    if accelerator in ("auto", "gpu"):  # Lightning prefers MPS to CUDA, and takes the CPU when neither is there
        return not MPSAccelerator.is_available() and (accelerator == "gpu" or CUDAAccelerator.is_available())
    return accelerator not in ("cpu", "mps")
