"""snn: spiking neural networks in PyTorch.

``snn.neurons`` (torch only), ``snn.models`` (no Lightning), ``snn.training`` (Lightning + Hydra).
``snn.export_nir`` / ``snn.import_nir`` load :mod:`snn.interop.nir` (and the ``nir`` package) on
first use, so ``import snn`` stays light. ``snn.__version__`` is the installed distribution's
(``snn-adex``) version.
"""


def _version() -> str:
    """The version of ``snn-adex``: in a source checkout (installed editable or not at all) the one its
    pyproject.toml declares, since an editable install's metadata is as old as its last ``pip
    install``; otherwise the installed distribution's metadata."""
    import tomllib
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file():
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        if project.get("name") == "snn-adex":
            return project["version"]
    try:
        return version("snn-adex")
    except PackageNotFoundError:  # a copy of the snn folder alone, neither installed nor a checkout
        return "0+unknown"


__version__ = _version()

_LAZY = {"export_nir": "snn.interop.nir", "import_nir": "snn.interop.nir"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'snn' has no attribute {name!r}")
