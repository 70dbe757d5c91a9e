"""The API reference's glue: what each package exports, and links written with package paths.

Each object is documented once, on the page of the module that defines it
(``snn.neurons.adex.LIFAdEx``), by the recursive autosummary of ``docs/api.rst``. A package page
lists the names its ``__all__`` exports (``package_exports``, passed to the module template).
Docstrings and guides often name the public path (``snn.neurons.LIFAdEx``): ``resolve_public_path``
finds the object and links to the page of its definition. A name of another project (torch,
Lightning, ...) has no page here, since fetching its inventory would take the network: it is
shown as code, unlinked; a name of snn that does not resolve stays an error.
"""

import ast
import builtins
import functools
import importlib
import importlib.util
import inspect
import pkgutil
import re

from sphinx.addnodes import pending_xref

PACKAGES = ("snn.neurons", "snn.models", "snn.data", "snn.training", "snn.interop", "snn.errors", "snn.train")
# Short names other projects' docstrings and annotations use for their own modules.
ALIASES = {"nn": "torch.nn", "F": "torch.nn.functional", "np": "numpy", "L": "lightning", "pl": "lightning.pytorch",
           "plt": "matplotlib.pyplot"}


def package_exports() -> dict[str, list[tuple[str, str, bool]]]:
    """``{package: [(exported name, full name of its definition, is a constant), ...]}`` for
    every package of snn that declares ``__all__`` (the module template lists them on the
    package's page)."""
    exports = {}
    for module in _modules():
        names = getattr(module, "__all__", None)
        if names and hasattr(module, "__path__"):
            exports[module.__name__] = [(name, f"{_home(module, name)}.{name}", _is_constant(getattr(module, name)))
                                        for name in names]
    return exports


def module_constants() -> dict[str, list[str]]:
    """``{module: [public names it assigns at top level]}``: the constants a docstring links to
    with ``:data:`` (``REGISTRY``, ``PARAMETER_RANGES``), documented on their module's page."""
    return {module.__name__: sorted(name for name in _assigned(module) if not _is_alias(getattr(module, name, None)))
            for module in _modules()}


def _is_constant(value) -> bool:
    return not (inspect.isclass(value) or inspect.isroutine(value) or inspect.ismodule(value))


def _is_alias(value) -> bool:
    """A module, class or function bound to a second name (``urlopen = urllib.request.urlopen``,
    kept so tests can patch it) is not a constant of this module."""
    return inspect.ismodule(value) or inspect.isclass(value) or inspect.isroutine(value)


def shadowed_modules() -> dict[str, list[tuple[str, list[str]]]]:
    """``{package: [(submodule, [its classes and functions]), ...]}`` for the submodules whose
    name the package rebinds (``snn.neurons.trajectory`` is a module and, in ``snn.neurons``, the
    function ``trajectory``): autosummary cannot import such a module by name, so the package's
    page documents its members itself."""
    shadowed = {}
    for module in _modules():
        if not hasattr(module, "__path__"):
            continue
        for info in pkgutil.iter_modules(module.__path__):
            value = getattr(module, info.name, None)
            if info.name.startswith("_") or value is None or inspect.ismodule(value):
                continue
            sub = importlib.import_module(f"{module.__name__}.{info.name}")
            members = [name for name, obj in vars(sub).items() if not name.startswith("_")
                       and (inspect.isclass(obj) or inspect.isfunction(obj)) and obj.__module__ == sub.__name__]
            shadowed.setdefault(module.__name__, []).append((sub.__name__, members))
    return shadowed


@functools.cache
def _modules() -> tuple:
    """Every public module of the documented packages that imports here (an optional extra that
    is missing, triton say, leaves its modules out)."""
    found = []
    for package in PACKAGES:
        root = importlib.import_module(package)
        found.append(root)
        for info in pkgutil.walk_packages(getattr(root, "__path__", []), package + "."):
            if any(part.startswith("_") for part in info.name.split(".")):
                continue
            try:
                found.append(importlib.import_module(info.name))
            except ImportError:
                continue
    return tuple(found)


@functools.cache
def _assigned(module) -> frozenset[str]:
    """The public names a module's own top-level statements assign (not import)."""
    try:
        tree = ast.parse(inspect.getsource(module))
    except (OSError, TypeError):
        return frozenset()
    names = set()
    for node in tree.body:
        for target in _targets(node):
            if isinstance(target, ast.Name) and not target.id.startswith("_"):
                names.add(target.id)
    return frozenset(names)


def _targets(node) -> list:
    """The targets of a top-level assignment statement (none for any other statement)."""
    if isinstance(node, ast.Assign):
        return node.targets
    return [node.target] if isinstance(node, ast.AnnAssign) else []


def _home(module, name: str) -> str:
    """The module whose page documents ``module.name``: where a class or function was defined,
    and for a constant the first module (this one or a submodule) that assigns it."""
    obj = getattr(module, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        if obj.__module__.startswith("snn") and obj.__qualname__ == name:
            return obj.__module__
    inside = [m for m in _modules() if m.__name__ == module.__name__ or m.__name__.startswith(module.__name__ + ".")]
    for candidate in [*inside, *_modules()]:
        if name in _assigned(candidate) and getattr(candidate, name, None) is obj:
            return candidate.__name__
    return module.__name__


def resolve_public_path(app, env, node: pending_xref, contnode):
    """Resolve a Python cross-reference that Sphinx could not: a public path of snn
    (``snn.neurons.LIFAdEx``) becomes a link to the definition's page; another project's name
    becomes plain code (its inventory would have to be fetched); anything else stays unresolved."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"]
    root = target.lstrip("~.").split(".")[0]
    if not target.lstrip("~.").startswith("snn.") and target.lstrip("~.").startswith("_"):
        return contnode  # a private name has no page: shown as code
    if root != "snn" and (root in ALIASES or hasattr(builtins, root) or _importable(root)):
        return contnode
    if any(part.startswith("_") and not part.startswith("__") for part in target.split(".")):
        return contnode  # a private name has no page: shown as code
    # A name written as the docstring's module sees it (``SpikingSequential`` in snn.interop,
    # which imports it) or by its public path (``snn.neurons.LIFAdEx``): link to the definition.
    if target.startswith("snn."):
        candidates = [target]
    else:
        module, cls = node.get("py:module"), node.get("py:class")
        candidates = [f"{module}.{cls}.{target}", f"{module}.{target}"] if cls else [f"{module}.{target}"]
        candidates = [c for c in candidates if c.startswith("snn.")]
    domain = env.get_domain("py")
    for candidate in candidates:
        canonical = _canonical(candidate)
        if canonical is None or canonical == target:
            continue
        retry = node.deepcopy()
        retry["reftarget"] = canonical
        found = domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], canonical, retry, contnode)
        if found is not None:
            return found
    # Last, a bare name that one documented object of snn carries (``LOG_LINES`` in the summary
    # of quiet_third_party, shown on the snn.training page): Sphinx's own rule for ``.name``.
    if "." not in target:
        matches = [full for full in domain.objects if full.startswith("snn.") and full.endswith("." + target)]
        if len(matches) == 1:
            retry = node.deepcopy()
            retry["reftarget"] = matches[0]
            return domain.resolve_xref(env, node["refdoc"], app.builder, node["reftype"], matches[0], retry, contnode)
    return None


def constant_docstring(app, what, name, obj, options, lines):
    """A constant's documentation is the comment above its assignment (``# ...`` lines, or a
    comment on the same line), as the code writes it; never its type's docstring (dict's,
    numpy.dtype's), which autodoc would otherwise show."""
    if what not in ("data", "attribute"):
        return
    doc = getattr(type(obj), "__doc__", None)
    if isinstance(doc, str) and "\n".join(lines).strip() == inspect.cleandoc(doc).strip():
        lines.clear()
    if lines or what != "data":
        return
    module_name, _, constant = name.rpartition(".")
    comment = _comments(module_name).get(constant)
    if comment:
        lines.extend(comment)


@functools.cache
def _comments(module_name: str) -> dict[str, list[str]]:
    """``{constant: its comment lines}`` for the top-level assignments of a module."""
    try:
        source = inspect.getsource(importlib.import_module(module_name))
    except (ImportError, OSError, TypeError):
        return {}
    text = source.splitlines()
    found = {}
    for node in ast.parse(source).body:
        names = [t.id for t in _targets(node) if isinstance(t, ast.Name)]
        if not names:
            continue
        above, row = [], node.lineno - 2
        while row >= 0 and text[row].lstrip().startswith("#"):
            above.insert(0, text[row].lstrip()[1:].strip())
            row -= 1
        same_line = text[node.end_lineno - 1].partition("  # ")[2].strip()
        lines = above or ([same_line] if same_line else [])
        if lines:
            for name in names:
                found[name] = [" ".join(lines)]
    return found


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _canonical(target: str) -> str | None:
    """``snn.neurons.LIFAdEx.forward`` -> ``snn.neurons.adex.LIFAdEx.forward``, by importing."""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        try:
            module = importlib.import_module(".".join(parts[:split]))
        except ImportError:
            continue
        if not hasattr(module, parts[split]):
            return None
        return ".".join([_home(module, parts[split]), *parts[split:]])
    return None


def _default_text(value) -> str:
    """A NamedTuple field's default as a reader writes it: a 0-dim tensor as its number."""
    if hasattr(value, "numel") and value.numel() == 1:
        value = value.item()
    return repr(value)


def namedtuple_defaults(app, what, name, obj, options, lines):
    """Parameters NamedTuples (``LIFAdExParameters``...): each documented field gets its default
    after its description (its unit is in the description); the field attributes lose the
    "Alias for field number N" that ``namedtuple`` writes for them."""
    if what == "attribute" and len(lines) == 1 and re.fullmatch(r"Alias for field number \d+", lines[0].strip()):
        lines.clear()
        return
    defaults = getattr(obj, "_field_defaults", None) if what == "class" else None
    if not defaults:
        return
    for row in range(len(lines) - 1, -1, -1):
        match = re.match(r":param (\w+):", lines[row])
        if match and match.group(1) in defaults:
            end = row
            while end + 1 < len(lines) and lines[end + 1].startswith(" ") and lines[end + 1].strip():
                end += 1
            lines[end] = lines[end].rstrip(".") + f"; default ``{_default_text(defaults[match.group(1)])}``"


def namedtuple_signature(app, what, name, obj, options, signature, return_annotation):
    """A parameters NamedTuple's signature with its defaults as numbers, not tensor reprs."""
    defaults = getattr(obj, "_field_defaults", None) if what == "class" else None
    if defaults and hasattr(obj, "_fields"):
        fields = [f"{f}={_default_text(defaults[f])}" if f in defaults else f for f in obj._fields]
        return f"({', '.join(fields)})", return_annotation
    return None


def setup(app):
    app.connect("missing-reference", resolve_public_path)
    app.connect("autodoc-process-docstring", constant_docstring)
    app.connect("autodoc-process-docstring", namedtuple_defaults)
    app.connect("autodoc-process-signature", namedtuple_signature)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
