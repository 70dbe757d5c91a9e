"""Checkpoints: reading one safely, rebuilding a classifier from it, refusing a mismatched model, exact resume.

A checkpoint written by ``SpikingClassifierModule`` carries the model config in its hyperparameters
(``hyper_parameters["net"]``, and the whole run config under ``"config"`` when train.py wrote it),
so ``load_classifier(path)`` needs no YAML. ``RNGStateCheckpoint`` adds the random number generator
states, which makes a run resumed from an end-of-epoch checkpoint repeat the uninterrupted run
bit for bit (shuffling, Poisson encoding and dropout all draw from these generators).

A checkpoint is data, never code: every read checks the zip's checksums first, unpickles with
``weights_only=True`` (tensors and plain Python values only; nothing in the file is called), and
the configs it carries may only build our own classes (``snn.models`` networks, ``torch.optim``
optimizers and schedulers) before Hydra instantiates anything from them.
"""

from __future__ import annotations

import inspect
import pickle
import random
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import nn

import snn.models

from .module import SpikingClassifierModule, build_from_config


class CheckpointError(ValueError):
    """A checkpoint file that is refused: missing parts, damaged, or asking for more than data."""


def _public_classes(module: Any, base: type | tuple[type, ...]) -> frozenset[str]:
    """The import paths (``module.Name`` and the defining ``module.sub.Name``) of ``module``'s public
    classes derived from ``base``: what a checkpoint's ``_target_`` may name."""
    paths = set()
    for name in getattr(module, "__all__", [n for n in dir(module) if not n.startswith("_")]):
        obj = getattr(module, name, None)
        if isinstance(obj, type) and issubclass(obj, base):
            paths |= {f"{module.__name__}.{name}", f"{obj.__module__}.{obj.__qualname__}"}
    return frozenset(paths)


# What each instantiated hyperparameter of a checkpoint may build (its _target_ and every nested one).
ALLOWED_TARGETS: dict[str, frozenset[str]] = {
    "net": _public_classes(snn.models, nn.Module),
    "optimizer": _public_classes(torch.optim, torch.optim.Optimizer),
    "scheduler": _public_classes(
        torch.optim.lr_scheduler, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
    ),
}


def check_targets(hyper_parameters: Mapping[str, Any], path: str | Path) -> None:
    """Refuses (CheckpointError) a checkpoint whose net, optimizer or scheduler config names any
    ``_target_`` outside ``ALLOWED_TARGETS``, or carries an OmegaConf interpolation (``${...}``,
    which would run resolvers): Hydra instantiates these configs, so they decide what code runs."""

    def walk(node: Any, where: str, allowed: frozenset[str], section: str) -> None:
        if isinstance(node, Mapping):
            target = node.get("_target_", None)
            if "_target_" in node and (not isinstance(target, str) or target not in allowed):
                kinds = {"net": "snn.models classes", "optimizer": "torch.optim optimizers",
                         "scheduler": "torch.optim.lr_scheduler schedulers"}[section]
                raise CheckpointError(
                    f"{path} asks to build {target!r} ({where}['_target_']), but a checkpoint may only build "
                    f"{kinds}; it was refused and nothing from it was built or run."
                )
            for key, value in node.items():
                walk(value, f"{where}[{key!r}]", allowed, section)
        elif isinstance(node, list | tuple):
            for i, value in enumerate(node):
                walk(value, f"{where}[{i}]", allowed, section)
        elif isinstance(node, str) and "${" in node:
            raise CheckpointError(
                f"{path} carries the config interpolation {node!r} at {where}, which would run a resolver when "
                "the model is built; checkpoints store resolved values, so it was refused."
            )

    for section, allowed in ALLOWED_TARGETS.items():
        walk(hyper_parameters.get(section), f"hyper_parameters[{section!r}]", allowed, section)


def check_map_location(map_location: Any) -> None:
    """A ValueError in one sentence when ``map_location`` names a device this machine does not have."""
    if not isinstance(map_location, str | torch.device):
        return  # a dict or a function: torch.load applies it
    try:
        device = torch.device(map_location)
    except (RuntimeError, ValueError):
        raise ValueError(f"map_location={map_location!r} is not a device (e.g. 'cpu', 'cuda', 'cuda:1').") from None
    backend = getattr(torch, device.type, None) if device.type in ("cuda", "mps", "xpu") else None
    if backend is None:
        return
    if not backend.is_available():
        raise ValueError(
            f"map_location={map_location!r} asks for a {device.type.upper()} device, but this machine has none "
            f"(torch.{device.type}.is_available() is False); load with map_location='cpu'."
        )
    count = backend.device_count() if hasattr(backend, "device_count") else 1
    if device.index is not None and device.index >= count:
        raise ValueError(f"map_location={map_location!r}: this machine has {count} {device.type} device(s).")


def verify_integrity(path: Path) -> None:
    """Refuses (CheckpointError) a file that is not a complete zip archive (every ``torch.save`` file
    since torch 1.6 is one) or whose stored CRC-32 checksums do not match its contents. torch.load
    checks neither; this reads the file once."""
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as error:
        raise CheckpointError(
            f"{path} is not a readable checkpoint (corrupt or truncated?): not a complete zip archive ({error})."
        ) from None
    if damaged is not None:
        raise CheckpointError(
            f"{path} is damaged: the checksum of its part {damaged!r} does not match its contents (a flipped bit or "
            "a bad copy); nothing was loaded, copy the file again or use another checkpoint."
        )


def _refused(error: pickle.UnpicklingError) -> str:
    """What a weights_only unpickling refused, from torch's message: the type or function it names,
    else torch's reason."""
    message = str(error)
    found = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"<class '([\w.]+)'>", message)
    if found:
        name = found.group(1)
        return f"refers to {name if '.' in name else f'builtins.{name}'}"  # torch drops 'builtins.'
    reasons = [line.strip() for line in message.split("WeightsUnpickler error:")[-1].splitlines() if line.strip()]
    return f"holds something else ({reasons[0].rstrip('.')})" if reasons else "holds something else"


def read_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The object ``torch.save`` wrote to ``path``, after checking the file's integrity, unpickled with
    ``weights_only=True``: tensors and plain values only, nothing in the file is run. Errors
    (FileNotFoundError, CheckpointError, ValueError for a device) are one sentence naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    check_map_location(map_location)
    verify_integrity(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" not in str(error):
            raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): {error}") from None
        raise CheckpointError(
            f"{path} {_refused(error)}, but a checkpoint may hold only tensors and plain values (dicts, lists, "
            "tuples, strings, numbers, None), so it was refused and nothing in it was run; "
            "if you wrote the file yourself, load it once with torch.load(path, weights_only=False) where you trust "
            "it and save it again with that object replaced by plain values (OmegaConf.to_container for configs)."
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        if "on a CUDA device" in str(error):
            raise ValueError(
                f"{path} holds tensors saved on a CUDA device and this machine has no CUDA; load it with "
                "map_location='cpu'."
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): {error}") from None


def load_checkpoint(path: str | Path, map_location: Any = "cpu") -> dict[str, Any]:
    """The checkpoint dictionary in ``path``, read safely (``read_checkpoint``), with a clear error for a
    missing, damaged or foreign file and for a model config that would build anything but our classes."""
    path = Path(path)
    checkpoint = read_checkpoint(path, map_location)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict).")
    hyper_parameters = checkpoint.get("hyper_parameters", {})
    net = hyper_parameters.get("net") if isinstance(hyper_parameters, Mapping) else None
    if not isinstance(net, Mapping) or "_target_" not in net:
        raise CheckpointError(
            f"{path} does not record the model config (hyper_parameters['net'] with a _target_): "
            "it was not written by SpikingClassifierModule built from a config."
        )
    check_targets(hyper_parameters, path)
    return checkpoint


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
            f"Resume with the run's own config, e.g. python train.py --config-path <run dir>/.hydra --config-name "
            f"config ckpt_path={path}, or evaluate it with train=false (which rebuilds the model from the checkpoint)."
        )


def load_classifier(path: str | Path, map_location: Any = "cpu") -> nn.Module:
    """The trained network (``nn.Module``, eval mode) of a checkpoint, built from the config it carries.

    The file is read with ``load_checkpoint`` (integrity, ``weights_only``, only ``snn.models``
    classes built), so an untrusted checkpoint can be refused but cannot run code.

    >>> net = load_classifier("outputs/.../checkpoints/last.ckpt")  # doctest: +SKIP
    >>> logits = net(images)                                         # [B, num_classes]
    """
    checkpoint = load_checkpoint(path, map_location)
    net = build_from_config(checkpoint["hyper_parameters"]["net"], "model")
    state = {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
    try:
        net.load_state_dict(state)
    except RuntimeError as error:
        raise ValueError(f"The weights in {path} do not fit the model its config builds: {error}") from None
    return net.to(map_location if isinstance(map_location, str | torch.device) else "cpu").eval()


def load_module(path: str | Path, map_location: Any = "cpu") -> SpikingClassifierModule:
    """The ``SpikingClassifierModule`` of a checkpoint (what ``load_from_checkpoint`` returns), built
    only after ``load_checkpoint`` has checked the file and every ``_target_`` in its hyperparameters
    (the module's ``__init__`` instantiates the net, optimizer and scheduler configs)."""
    checkpoint = load_checkpoint(path, map_location)
    accepted = inspect.signature(SpikingClassifierModule.__init__).parameters
    module = SpikingClassifierModule(**{k: v for k, v in checkpoint["hyper_parameters"].items() if k in accepted})
    module.on_load_checkpoint(checkpoint)
    try:
        module.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as error:
        raise ValueError(f"The weights in {path} do not fit the model its config builds: {error}") from None
    return module.to(map_location if isinstance(map_location, str | torch.device) else "cpu")


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


def set_rng_states(states: Mapping[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


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
            set_rng_states(self._pending)
            self._pending = None
