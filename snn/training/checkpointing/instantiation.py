"""Building objects from Hydra configs (``_target_`` mappings) with errors that name the config."""

from __future__ import annotations

import importlib
import math
from collections.abc import Mapping
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from torch.utils._python_dispatch import TorchDispatchMode


def build_from_config(spec: Any, what: str) -> Any:
    """``instantiate(spec)`` for a mapping with ``_target_``; anything else is returned as is.

    A ValueError raised by the target (a bad config value) comes out as a ValueError naming the
    config, not wrapped in Hydra's InstantiationException.
    """
    if not isinstance(spec, Mapping):
        return spec
    if "_target_" not in spec:
        raise ValueError(f"The {what} config needs a _target_ (e.g. torch.optim.Adam), got keys {sorted(spec)}.")
    return instantiate_config(spec, what, _convert_="all")


def instantiate_config(spec: Any, what: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate(spec, **kwargs)``, with a ``_target_`` that cannot be found explained
    (:func:`unlocatable_target`) in a ValueError naming the ``what`` config (``callbacks.my_callback``);
    so is a component that refuses its arguments with a ValueError (a config error, not a traceback
    from inside Hydra)."""
    try:
        return instantiate(spec, **kwargs)
    except InstantiationException as error:
        target = spec.get("_target_") if isinstance(spec, Mapping) else None
        unlocated = unlocatable_target(target, what) if str(error).startswith("Error locating") else None
        if unlocated:
            raise ValueError(unlocated) from error
        if isinstance(error.__cause__, ValueError):
            raise ValueError(f"Invalid {what} config: {error.__cause__}") from error.__cause__
        raise


def unlocatable_target(target: Any, what: str) -> str | None:
    """Why the ``_target_`` of the ``what`` config cannot be found, or None when it can: the module
    that failed to import (the target's own package, or a package it imports) and how to make it
    importable, or the module that lacks the name. Hydra says only "Error locating target"."""
    if not isinstance(target, str) or not target:
        return f"The {what} config's _target_ must be a dotted path like mypackage.module.Class, got {target!r}."
    parts = target.split(".")
    for i in range(len(parts) - 1, 0, -1):
        module_name = ".".join(parts[:i])
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
                continue  # this module (or its package) does not exist: look at the shorter prefix
            return (f"The {what} config's _target_ {target!r} cannot be built: importing the module {module_name!r} "
                    f"failed because the module {error.name!r} it imports is not installed ({error}). Install it "
                    "(pip install <its package>) in this environment.")
        except Exception as error:  # a module that raises while it is imported
            return (f"The {what} config's _target_ {target!r} cannot be built: importing the module {module_name!r} "
                    f"raised {type(error).__name__}: {error}")
        found: Any = module
        for k, name in enumerate(parts[i:], start=i):
            if not hasattr(found, name):
                where = ".".join(parts[:k])
                return (f"The {what} config's _target_ {target!r} cannot be built: {where!r} "
                        f"({getattr(module, '__file__', None) or 'a namespace package'}) has no attribute or "
                        f"submodule {name!r}; check its spelling.")
            found = getattr(found, name)
        return None
    top = parts[0]
    hint = "A _target_ is a full dotted path (mypackage.module.Class). " if len(parts) == 1 else ""
    return (f"The {what} config's _target_ {target!r} cannot be built: the module {top!r} cannot be imported (no "
            f"module named {top!r} on the Python path). {hint}If it is your own code, start from the "
            f"folder that holds {top}/ with it on the path (PYTHONPATH=<that folder> snn-train ...), or install "
            f"its project into this environment (pip install -e <project folder>).")


# Operations that allocate a tensor of a size given in their arguments (and not taken from a tensor).
_FACTORIES = frozenset({"empty", "empty_strided", "zeros", "ones", "full", "rand", "randn", "randint", "normal",
                        "new_empty", "new_empty_strided", "new_zeros", "new_ones", "new_full", "randperm", "eye"})


class AllocationBudget(TorchDispatchMode):
    """Refuses, before allocating, any tensor factory call that would take the tensors built inside
    the ``with`` block past ``budget`` bytes: a config whose sizes disagree with the weights meant for
    it (``hidden=[20000, 20000]`` beside weights of ``[100]``) fails before its layers are allocated.
    ``source`` names the file in the error."""

    def __init__(self, budget: int, source: str, what: str, saved: int):
        super().__init__()
        self.budget, self.source, self.what, self.saved, self.used = int(budget), source, what, saved, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.overloadpacket.__name__
        if name in _FACTORIES:
            if name == "randperm":
                numel = int(args[0])
            elif name == "eye":
                numel = int(args[0]) * int(args[1] if len(args) > 1 and isinstance(args[1], int) else args[0])
            else:
                size = next((a for a in args if isinstance(a, list | tuple)), ())
                numel = math.prod(int(s) for s in size)
            default = torch.int64 if name in ("randperm", "randint") else torch.get_default_dtype()
            dtype = kwargs.get("dtype") or default
            self.used += numel * dtype.itemsize
            if self.used > self.budget:
                raise ValueError(
                    f"The {self.what} config in {self.source} asks for more than its weights hold: building it "
                    f"needs over {self.used / 2**20:,.0f} MiB, its saved tensors are {self.saved / 2**20:,.2f} MiB "
                    f"(allowed while building: {self.budget / 2**20:,.0f} MiB). A size in the config (e.g. hidden) "
                    "does not match the saved tensors; nothing was built."
                )
        return func(*args, **kwargs)


def weights_budget(weights: Mapping[str, Any], source: str, what: str = "model") -> AllocationBudget:
    """``with weights_budget(state_dict, path): build(...)``: the tensors built inside may take a
    small multiple of the bytes of ``weights`` (the state dict meant for them, +64 MiB for buffers
    and temporaries), so the sizes a checkpoint's config declares are checked against its saved
    tensors before anything large is allocated."""
    saved = sum(t.numel() * t.element_size() for t in weights.values() if isinstance(t, torch.Tensor))
    return AllocationBudget(4 * saved + 64 * 2**20, source, what, saved)
