"""Spiking neuron models with surrogate gradients. Depends on torch alone.

Layers take time-major input ``[T, B, ...]`` and return ``(outputs for all steps, final state)``;
cells take one step ``[B, ...]``. ``state=None`` starts from rest.
"""

from .adex import (
    LIFAdEx,
    LIFAdExCell,
    LIFAdExFeedForwardState,
    LIFAdExParameters,
    LIFAdExRecurrent,
    LIFAdExRecurrentCell,
    LIFAdExState,
    lif_adex_current_encoder,
    lif_adex_feed_forward_step,
    lif_adex_step,
)
from .li import LI, LICell, LILinearCell, LIParameters, LIState, li_feed_forward_step, li_step
from .lif import (
    LIF,
    LIFCell,
    LIFFeedForwardState,
    LIFParameters,
    LIFRecurrent,
    LIFRecurrentCell,
    LIFState,
    lif_current_encoder,
    lif_feed_forward_integral,
    lif_feed_forward_step,
    lif_step,
    lif_step_integral,
)
from .surrogate import SURROGATES, register_surrogate, spike
from .trajectory import Trajectory, trajectory

# The Triton kernels' first-use check needs the layers above, so they register its cases here.
from .fused.triton import cases as _triton_first_use_cases  # noqa: E402, F401  (isort: skip)

__all__ = [
    "LI", "LICell", "LILinearCell", "LIParameters", "LIState", "li_feed_forward_step", "li_step",
    "LIF", "LIFCell", "LIFFeedForwardState", "LIFParameters", "LIFRecurrent", "LIFRecurrentCell",
    "LIFState", "lif_current_encoder", "lif_feed_forward_integral", "lif_feed_forward_step", "lif_step",
    "lif_step_integral",
    "LIFAdEx", "LIFAdExCell", "LIFAdExFeedForwardState", "LIFAdExParameters", "LIFAdExRecurrent",
    "LIFAdExRecurrentCell", "LIFAdExState", "lif_adex_current_encoder", "lif_adex_feed_forward_step",
    "lif_adex_step",
    "SURROGATES", "register_surrogate", "spike",
    "Trajectory", "trajectory",
]
