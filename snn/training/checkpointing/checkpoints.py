"""Checkpoints: reading one safely, rebuilding a classifier from it, refusing a mismatched model, exact resume.

A checkpoint written by ``SpikingClassifierModule`` carries the model config in its hyperparameters
(``hyper_parameters["net"]``, and the whole run config under ``"config"`` when train.py wrote it),
so ``load_classifier(path)`` needs no YAML. ``RNGStateCheckpoint`` adds the random number generator
states, which makes a run resumed from an end-of-epoch checkpoint repeat the uninterrupted run
bit for bit (shuffling, Poisson encoding and dropout all draw from these generators).

A checkpoint is data, never code: every read goes through
:mod:`~snn.training.checkpointing.safe_load` (zip checksums, ``weights_only=True``, only our own
classes in the configs it carries).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from ..module import SpikingClassifierModule
from .instantiation import build_from_config, weights_budget
from .safe_load import CheckpointError, load_checkpoint, read_checkpoint  # noqa: F401 (re-exported)


def config_differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """``"key: saved -> current"`` for every leaf where two nested configs differ."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            missing = "<absent>"
            out += config_differences(saved.get(key, missing), current.get(key, missing), f"{prefix}{key}.")
        return out
    return [] if saved == current else [f"{prefix.rstrip('.')}: {saved!r} -> {current!r}"]


def check_model_config(checkpoint: Mapping[str, Any], net_config: Mapping[str, Any], path: str | Path) -> None:
    """Raises a ValueError listing the differences when ``checkpoint`` was built from another model config."""
    differences = config_differences(checkpoint["hyper_parameters"]["net"], net_config)
    if differences:
        shown = "; ".join(differences[:12]) + (f"; and {len(differences) - 12} more" if len(differences) > 12 else "")
        raise ValueError(
            f"The checkpoint {path} was trained with a different model config (checkpoint -> this run): {shown}. "
            f"Resume with the run's own config, e.g. snn-train --config-path <run dir>/.hydra --config-name "
            f"config ckpt_path={path}, or evaluate it with train=false (which rebuilds the model from the checkpoint)."
        )


def load_classifier(path: str | Path, map_location: Any = "cpu", trusted: Iterable[str] | str | None = None,
                    ) -> nn.Module:
    """The trained network (``nn.Module``, eval mode) of a checkpoint, built from the config it carries.

    The file is read with ``load_checkpoint`` (integrity, ``weights_only``, only ``snn.models``
    classes built), so an untrusted checkpoint can be refused but cannot run code. A model of your
    own needs your explicit ``trusted=["mynet"]`` (packages or classes, see ``safe_load.trusted_names``).

    >>> net = load_classifier("outputs/.../checkpoints/last.ckpt")  # doctest: +SKIP
    >>> logits = net(images)                                         # [B, num_classes]
    """
    checkpoint = load_checkpoint(path, map_location, trusted)
    state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    with weights_budget(state, str(path)):
        net = build_from_config(checkpoint["hyper_parameters"]["net"], "model")
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"The weights in {path} do not fit the model its config builds: {error}") from None
    return net.to(map_location if isinstance(map_location, str | torch.device) else "cpu").eval()


def load_module(path: str | Path, map_location: Any = "cpu", trusted: Iterable[str] | str | None = None,
                checkpoint: dict[str, Any] | None = None, **overrides: Any) -> SpikingClassifierModule:
    """The ``SpikingClassifierModule`` of a checkpoint, checked before anything is built:
    ``SpikingClassifierModule.load_from_checkpoint`` (which reads through
    :mod:`~snn.training.checkpointing.safe_load`).
    ``checkpoint``: the file's dictionary when the caller has read it already (``load_checkpoint(path,
    map_location, trusted)``), so the file is read and verified once."""
    if checkpoint is not None:
        return SpikingClassifierModule.from_checkpoint(checkpoint, path, map_location=map_location, trusted=trusted,
                                                       **overrides)
    return SpikingClassifierModule.load_from_checkpoint(path, map_location=map_location, trusted=trusted, **overrides)


def rng_states() -> dict[str, Any]:
    """Every global generator's state, as tensors and plain Python values (loadable with weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: Mapping[str, Any]) -> list[str]:
    """Puts back what this machine has generators for; returns what it could not, one phrase each
    (empty: everything). The CPU generators (torch, numpy, Python) always; the CUDA ones of the
    GPUs present, at most as many as the checkpoint holds: a checkpoint written on 4 GPUs resumed
    on 2 restores GPUs 0 and 1 (``torch.cuda.set_rng_state_all`` would fail on the third), one
    written without CUDA leaves the GPUs' generators at the run's seed."""
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = list(states.get("cuda") or [])
    present = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for index, state in enumerate(saved[:present]):
        torch.cuda.set_rng_state(state, index)
    missing = []
    if len(saved) > present:
        here = f"this machine has {present}" if present else "this machine has none"
        missing.append(f"the CUDA generators of {len(saved) - present} of the {len(saved)} GPUs the checkpoint "
                       f"was written on ({here})")
    elif present and not saved:
        missing.append("the CUDA generators (the checkpoint was written without CUDA)")
    return missing


class RNGStateCheckpoint(L.Callback):
    """Saves the random generators' states in every checkpoint and puts them back on resume.

    They are put back when fitting starts, before the training data loader draws its seeds
    (Lightning's sanity check runs in between but restores the generators it used), so the first
    resumed epoch draws what the uninterrupted run drew. In multi-process runs the checkpoint holds
    rank 0's states (all ranks share one seed).
    """

    def __init__(self):
        super().__init__()
        self._pending: dict[str, Any] | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        checkpoint["rng_states"] = rng_states()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        self._pending = checkpoint.get("rng_states")

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            missing = set_rng_states(self._pending)
            self._pending = None
            if missing:
                rank_zero_warn(
                    f"Resumed the random generators of torch, numpy and Python, but not {'; '.join(missing)}: "
                    "those start from the run's seed, so random draws on the GPU (dropout, Poisson coding) "
                    "differ from the uninterrupted run's; the rest of the resume is exact.")
