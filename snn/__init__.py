"""snn: spiking neural networks in PyTorch.

``snn.neurons`` (torch only), ``snn.models`` (no Lightning), ``snn.training`` (Lightning + Hydra).
``snn.export_nir`` / ``snn.import_nir`` load :mod:`snn.interop.nir` (and the ``nir`` package) on
first use, so ``import snn`` stays light.
"""

_LAZY = {"export_nir": "snn.interop.nir", "import_nir": "snn.interop.nir"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'snn' has no attribute {name!r}")
