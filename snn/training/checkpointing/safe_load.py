"""Reading a checkpoint file as data: integrity first, then ``weights_only`` unpickling, then the
configs it carries checked before anything is built from them.

A checkpoint is data, never code: every read checks the zip's checksums first, unpickles with
``weights_only=True`` (tensors and plain Python values only; nothing in the file is called), and
the configs it carries may only build our own classes (``snn.models`` networks, ``torch.optim``
optimizers and schedulers) before Hydra instantiates anything from them. This module knows nothing
of the LightningModule, so the module itself can load through it (``load_from_checkpoint``).

Trust is the user's choice, never the file's: ``trusted`` (train.py's ``trust=[...]``,
``load_classifier(path, trusted=[...])``) names the user's own classes, or packages of them, that a
checkpoint may build as well. It never comes from the checkpoint, and it cannot name the standard
library, a framework or another installed library (those can open files and run commands), and it
grants the user's own classes only, never what is reachable through them (:mod:`~snn.training.checkpointing.trust`).
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

import snn.models
from snn.errors import CheckpointError, TrustError  # noqa: F401 (CheckpointError re-exported)

from .trust import check_trust_entry, trusted_object_problem


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


_DOTTED_NAME = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def trusted_names(trusted: Iterable[str] | str | None) -> tuple[str, ...]:
    """``trusted`` checked: each entry a dotted Python name, a package of the user's own code
    (``mynet``: ``mynet.MyNet``, ``mynet.layers.Block``...) or one class (``mypkg.optim.Lion``).
    The standard library, frameworks and their subpackages, other installed distributions, ``snn``
    and ``__main__`` are refused (:func:`snn.training.checkpointing.trust.check_trust_entry`)."""
    if trusted is None:
        return ()
    if isinstance(trusted, str):
        trusted = [trusted]
    names = []
    for entry in trusted:
        if not isinstance(entry, str) or not _DOTTED_NAME.fullmatch(entry):
            raise ValueError(
                f"trust entry {entry!r} is not a Python name: give a package of your own code (trust=[mynet]) or one "
                "class (trust=[mypkg.optim.Lion])."
            )
        check_trust_entry(entry)
        names.append(entry)
    return tuple(names)


def trust_problem(target: str, trusted: Iterable[str]) -> str | None:
    """None when ``target`` is one of the user's own classes (or module-level functions) under a
    ``trusted`` entry, resolved step by step (:func:`snn.training.checkpointing.trust.trusted_object_problem`); else
    why not (``"not trusted"`` when no entry covers it)."""
    entries = [name for name in trusted if target == name or target.startswith(f"{name}.")]
    if not entries or not _DOTTED_NAME.fullmatch(target):
        return "not trusted"
    problems = [trusted_object_problem(target, entry) for entry in entries]
    return None if None in problems else problems[0]


def check_targets(hyper_parameters: Mapping[str, Any], path: str | Path,
                  trusted: Iterable[str] | str | None = None) -> None:
    """Refuses (CheckpointError) a checkpoint whose net, optimizer or scheduler config names any
    ``_target_`` outside ``ALLOWED_TARGETS`` and ``trusted`` (see :func:`trusted_names`), or carries an
    OmegaConf interpolation (``${...}``, which would run resolvers): Hydra instantiates these configs,
    so they decide what code runs."""
    trusted = trusted_names(trusted)
    for section, allowed in ALLOWED_TARGETS.items():
        check_config_targets(hyper_parameters.get(section), f"hyper_parameters[{section!r}]", allowed, path,
                             _KINDS[section], trusted)


_KINDS = {"net": "snn.models classes", "optimizer": "torch.optim optimizers",
          "scheduler": "torch.optim.lr_scheduler schedulers"}


def check_config_targets(node: Any, where: str, allowed: frozenset[str], path: str | Path, kinds: str,
                         trusted: Iterable[str] | str | None = None) -> None:
    """Refuses (CheckpointError) a ``_target_`` in the config ``node`` (read from ``path``, found at
    ``where``) that is neither in ``allowed`` nor ``trusted``, and any ``${...}`` interpolation."""
    trusted = trusted_names(trusted)
    if isinstance(node, Mapping):
        for key in node:
            if isinstance(key, str) and "${" in key:
                raise CheckpointError(
                    f"{path} carries the config interpolation {key!r} in a key at {where}, which would run a "
                    "resolver when the model is built; checkpoints store resolved values, so it was refused.")
        target = node.get("_target_", None)
        if "_target_" in node and not (isinstance(target, str) and target in allowed):
            problem = trust_problem(target, trusted) if isinstance(target, str) else "not a name"
            if problem is not None:
                raise CheckpointError(_refusal(target, where, path, kinds, problem))
        for key, value in node.items():
            check_config_targets(value, f"{where}[{key!r}]", allowed, path, kinds, trusted)
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            check_config_targets(value, f"{where}[{i}]", allowed, path, kinds, trusted)
    elif isinstance(node, str) and "${" in node:
        raise CheckpointError(
            f"{path} carries the config interpolation {node!r} at {where}, which would run a resolver when "
            "the model is built; checkpoints store resolved values, so it was refused."
        )


def _refusal(target: Any, where: str, path: str | Path, kinds: str, problem: str) -> str:
    """The one-sentence refusal of ``target``: what a checkpoint may build, and how trust works."""
    package = target.split(".")[0] if isinstance(target, str) else ""
    if problem != "not trusted":
        how = (f"It lies under your trust list but is not one of your own classes: {problem}; trust grants the "
               "classes your package defines, nothing reachable through them.")
    else:
        try:
            if not package or not _DOTTED_NAME.fullmatch(target):
                raise TrustError("not a name")
            check_trust_entry(package)
            how = (f"If this is your own code and you trust the file's author, allow it: trust=[{package}] on "
                   f"train.py's command line (or in your config), trusted=[{package!r}] in load_classifier / "
                   "load_from_checkpoint. (Fine-tuning with init_from= needs no trust: it builds the model from "
                   "your own config and takes only the file's weights.)")
        except TrustError:
            how = "Standard-library, framework and installed libraries' callables can never be trusted."
    return (f"{path} asks to build {target!r} ({where}['_target_']), but a checkpoint may only build {kinds} "
            f"or classes you trust; it was refused and nothing from it was built or run. {how}")


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
            "if you wrote the file yourself, load it once with full unpickling (torch.load's weights_only off) on a "
            "machine where you trust it and save it again with that object replaced by plain values "
            "(OmegaConf.to_container for configs)."
        ) from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile) as error:
        if "on a CUDA device" in str(error):
            raise ValueError(
                f"{path} holds tensors saved on a CUDA device and this machine has no CUDA; load it with "
                "map_location='cpu'."
            ) from None
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt or truncated?): {error}") from None


def load_checkpoint(path: str | Path, map_location: Any = "cpu",
                    trusted: Iterable[str] | str | None = None) -> dict[str, Any]:
    """The checkpoint dictionary in ``path``, read safely (``read_checkpoint``), with a clear error for a
    missing, damaged or foreign file and for a model config that would build anything but our classes
    and those ``trusted`` (:func:`trusted_names`)."""
    trusted = trusted_names(trusted)
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
    check_targets(hyper_parameters, path, trusted)
    return checkpoint
