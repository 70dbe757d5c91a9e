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


# The config keys that size the arrays of a run, as they are named on the command line.
SIZE_KEYS = ("model.T", "model.hidden", "model.conv.channels", "model.input_shape", "dataset.input_shape",
             "dataset.T", "dataset.batch_size")


def _size_settings(cfg: DictConfig) -> str:
    """``key=value`` of every :data:`SIZE_KEYS` entry the config sets (resolved)."""
    from omegaconf import OmegaConf

    found = []
    for key in SIZE_KEYS:
        value = OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
        if value is not None:
            value = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
            found.append(f"{key}={value}".replace(" ", ""))
    return ", ".join(found)


def check_config_sizes(cfg: DictConfig, model_spec) -> None:
    """Refuses, before anything is allocated, a config that sizes one array of the run past
    ``SNN_MAX_ALLOC_GB`` (:mod:`snn.data.limits`): a weight (the model built on the ``meta`` device,
    see :mod:`snn.models.footprint`), a spiking layer's ``[T, batch_size, neurons]`` arrays or the
    input batch ``[batch_size, *input_shape]``. The message names the keys that set the sizes and
    the estimate. ``model_spec``: the resolved model config (a mapping with ``_target_``)."""
    import math

    from snn.data.limits import SizeLimitError, check_bytes
    from snn.models.footprint import BYTES, build_on_meta, model_footprint

    from ..checkpointing.instantiation import build_from_config

    try:
        meta_model = build_on_meta(lambda: build_from_config(model_spec, "model"))
    except ValueError:  # a bad value: the same sentence the real build would give
        raise
    except Exception:  # a model whose constructor needs values (not shapes): built for real, unestimated
        return
    footprint = model_footprint(meta_model)
    batch_size = cfg.dataset.get("batch_size")
    batch_size = batch_size if isinstance(batch_size, int) and batch_size > 0 else 1
    arrays = {}
    largest = footprint.largest_weight()
    if largest is not None:
        name, shape = largest
        arrays[f"the weight {name} {list(shape)}"] = math.prod(shape) * BYTES
    for name, nbytes in footprint.layer_array_bytes(batch_size).items():
        arrays[f"each of the {footprint.arrays[name]} [T, batch, neurons] = [{footprint.T}, {batch_size}, "
               f"{footprint.neurons[name]}] arrays of layer {name}"] = nbytes
    input_shape = getattr(meta_model, "input_shape", None)
    if input_shape:
        arrays[f"the input batch {[batch_size, *input_shape]}"] = batch_size * math.prod(input_shape) * BYTES
    if not arrays:
        return
    what, nbytes = max(arrays.items(), key=lambda kv: kv[1])
    total = footprint.weight_bytes() + footprint.activation_bytes(batch_size)
    try:
        check_bytes(nbytes, f"The config's sizes ({_size_settings(cfg)}) make arrays too large for this "
                    f"machine's limit: {what}", "reduce these sizes")
    except SizeLimitError as error:
        raise SizeLimitError(f"{error} In all, the weights and one batch's activations would take "
                             f"{total / 2**30:,.1f} GiB; nothing was allocated.") from None
