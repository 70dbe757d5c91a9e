"""What ``trust=[...]`` grants: the user's own classes, and nothing reachable through them.

A checkpoint's configs name the classes Hydra builds (``_target_``). Hydra resolves a dotted path
attribute by attribute, so a package that merely does ``from torch import nn`` makes
``mynet.nn.functional.torch.ops.load_library`` a path "inside ``mynet``": comparing names lets a
file reach anything the user's code imports. Trust therefore resolves the path itself, step by
step, the way Hydra will:

- every module on the path must be a module *of the trusted package*, reached under its own name
  (``mynet.layers`` is the module ``mynet.layers``; ``mynet.torch`` is the module ``torch`` and ends
  the walk); modules are imported only inside the trusted package;
- the object at the end must be a class or a plain Python function, *defined* in the trusted package
  or class (its ``__module__``), and reachable again by its own qualified name from there: no
  builtin, bound method or instance, nothing defined elsewhere and re-exported.

A trust entry names the user's own code: a package or module (``mynet``, ``mynet.layers``) or one
class (``mypkg.optim.Lion``). It may not name the standard library, a framework or any of its
subpackages, a package installed from another distribution (site-packages), ``snn`` itself or
``__main__``: their callables open files, load libraries and run commands.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import site
import sys
import sysconfig
import types
from functools import cache
from typing import Any

from snn.errors import TrustError

# Top-level packages no trust entry may name, whatever their location (an editable or source checkout
# of a framework is still the framework). Installed distributions are refused by where they live.
FRAMEWORKS = frozenset({
    "torch", "torchvision", "torchaudio", "torchmetrics", "triton", "lightning", "pytorch_lightning",
    "lightning_fabric", "lightning_utilities", "hydra", "omegaconf", "numpy", "scipy", "h5py", "nir", "snn",
    "optuna", "hydra_plugins", "pytest", "_pytest", "setuptools", "pip", "pkg_resources", "__main__", "builtins",
})

PURPOSE = ("trust is for your own code, so that checkpoints of your runs can build your classes: name your "
           "package (trust=[mynet]) or single classes of it (trust=[mypkg.optim.Lion])")


@cache
def _installed_roots() -> tuple[str, ...]:
    """Folders of installed code: the standard library, site-packages (the environment's and the
    user's), and the environment's prefixes."""
    roots = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots |= set(site.getsitepackages()) | {site.getusersitepackages()}
    return tuple(sorted({os.path.realpath(r) for r in roots if r}))


@cache
def _installed_location(top: str) -> str | None:
    """Where the top-level package ``top`` is installed, when it lives among installed code (not
    imported: ``find_spec`` of a top-level name reads the finders only), else None."""
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    places = [spec.origin] if spec.origin and spec.origin not in ("built-in", "frozen") else []
    places += list(spec.submodule_search_locations or [])
    if spec.origin in ("built-in", "frozen"):
        return spec.origin
    for place in places:
        real = os.path.realpath(place)
        for root in _installed_roots():
            if real == root or real.startswith(root + os.sep):
                return real
    return None


def check_trust_entry(entry: str) -> None:
    """Raises TrustError when the (dotted) trust ``entry`` names the standard library, a framework or
    any subpackage of one, another installed distribution's package, ``snn`` or ``__main__``."""
    top = entry.split(".")[0]
    if top in sys.stdlib_module_names or top in sys.builtin_module_names:
        what = "the standard library"
    elif top in FRAMEWORKS:
        what = {"snn": "snn itself (its own classes need no trust)",
                "__main__": "__main__ (whatever script runs, not a package of yours)"}.get(top, f"the framework {top}")
    else:
        where = _installed_location(top)
        if where is None:
            return
        what = f"a package installed from another distribution ({where})"
    raise TrustError(f"trust entry {entry!r} names {what}, whose callables can open files, load libraries and run "
                     f"commands: {PURPOSE}.")


def _inside(name: str, root: str) -> bool:
    return name == root or name.startswith(root + ".")


def _genuine_module(path: str, value: Any) -> bool:
    return isinstance(value, types.ModuleType) and value.__name__ == path


def _walk(path: str, root_package: str) -> tuple[Any, str | None]:
    """``(object, None)`` at the dotted ``path``, resolved as Hydra does (attribute first, then an
    import), or ``(None, why not)``. Modules are imported only inside ``root_package`` and every
    module on the way must be reached under its own name."""
    parts = path.split(".")
    try:
        obj: Any = importlib.import_module(parts[0])
    except Exception as error:  # ImportError, or the package's own code failing: name it
        return None, f"its package {parts[0]!r} cannot be imported ({type(error).__name__}: {error})"
    walked = parts[0]
    for part in parts[1:]:
        if isinstance(obj, types.ModuleType) and not _genuine_module(walked, obj):
            return None, f"{walked!r} is the module {obj.__name__!r} re-exported, not a module of your package"
        nxt = f"{walked}.{part}"
        if part.startswith("__") and part.endswith("__"):
            return None, f"{nxt!r} is a special attribute"
        try:
            value = getattr(obj, part)
        except AttributeError:
            if not (isinstance(obj, types.ModuleType) and _inside(nxt, root_package)):
                return None, f"{walked!r} has no attribute {part!r}"
            try:
                value = importlib.import_module(nxt)
            except Exception as error:
                return None, f"{nxt!r} cannot be imported ({type(error).__name__}: {error})"
        obj, walked = value, nxt
    if isinstance(obj, types.ModuleType) and not _genuine_module(walked, obj):
        return None, f"{walked!r} is the module {obj.__name__!r} re-exported, not a module of your package"
    return obj, None


def trusted_object_problem(target: str, entry: str) -> str | None:
    """Why ``target`` (a ``_target_``, under the trust ``entry``: equal to it or inside it) is not one
    of the user's own classes or functions, or None when it is (see the module docstring)."""
    root_package = entry.split(".")[0]
    obj, problem = _walk(target, root_package)
    if problem:
        return problem
    if not isinstance(obj, type) and not isinstance(obj, types.FunctionType):
        return f"it is {'a module' if isinstance(obj, types.ModuleType) else type(obj).__name__!r}, not a class"
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", "")
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return "it has no importable qualified name"
    if isinstance(obj, types.FunctionType) and "." in qualname:
        return f"it is the method {qualname}, not a class or a module-level function"
    # The entry's own scope: a package or module trusts what is defined inside it; a class entry
    # trusts the class it names, defined in the module (or package) that holds that name.
    entry_obj, entry_problem = _walk(entry, root_package)
    if entry_problem:
        return f"the trust entry {entry!r} does not resolve: {entry_problem}"
    if isinstance(entry_obj, types.ModuleType):
        scope = entry
    elif target == entry:
        scope = entry.rpartition(".")[0]
    else:
        return f"the trust entry {entry!r} is a single class, and {target!r} is not that class"
    if not _inside(module, scope):
        return f"it is {module}.{qualname}, defined outside {scope!r}"
    canonical, canonical_problem = _walk(f"{module}.{qualname}", root_package)
    if canonical_problem or canonical is not obj:
        return f"it is not reachable by its own name {module}.{qualname}"
    return None
