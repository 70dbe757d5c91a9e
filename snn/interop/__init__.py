"""Moving networks to and from other tools.

- :mod:`snn.interop.nir`: NIR graphs (``export_nir``, ``import_nir``); needs the ``nir`` extra
  (``pip install -e ".[nir]"``) and is imported only when used.
- :mod:`snn.interop.sequential`: :class:`SpikingSequential`, the time-major chain of layers that
  ``import_nir`` builds (torch only).
"""

from .sequential import Scale, SpikingSequential

__all__ = ["Scale", "SpikingSequential"]
