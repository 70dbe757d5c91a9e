r"""The discretised neuron equations in the kernels' constants, written once in Python.

The step functions (:func:`~snn.neurons.adex.lif_adex_feed_forward_step`,
:func:`~snn.neurons.lif.lif_feed_forward_step`, :func:`~snn.neurons.li.li_feed_forward_step`),
whose docstrings state the equations, call these with
:math:`c_{\text{mem}} = \Delta t\, \tau_{\text{mem}}^{-1}`,
:math:`c_{\text{syn}} = -\Delta t\, \tau_{\text{syn}}^{-1}` and
:math:`c_{\text{ada}} = \Delta t\, \tau_{\text{ada}}^{-1}`; the ``compile`` backend's step bodies
(:mod:`~snn.neurons.fused.python.feed_forward`) call them with the same constants computed once per layer call
(:func:`.fused.spec.kernel_parameters`), so both round alike. This module sits below both (it
imports torch and :mod:`~snn.neurons.constants` only), which is why the equations are here and not in the
step functions' own modules: the fused loops may not import the neuron modules, which import them.
"""

from __future__ import annotations

import torch

from .constants import EXP_ARGUMENT_MAX


def adex_membrane(x, v, i, a, c_mem, c_syn, delta_T, v_leak, v_th):
    """AdEx's synapse and membrane before the spike: ``(i_j, v_d, i')`` (see
    :func:`~snn.neurons.adex.lif_adex_feed_forward_step`)."""
    i_jump = i + x
    exp_argument = torch.clamp((v - v_th) / delta_T, max=EXP_ARGUMENT_MAX)
    v_decayed = v + c_mem * ((v_leak - v) + delta_T * torch.exp(exp_argument) + i_jump - a)
    i_decayed = i_jump + c_syn * i_jump
    return i_jump, v_decayed, i_decayed


def adex_adaptation(v, a, c_ada, adaptation_current, v_leak):
    """AdEx's adaptation before the spike's jump, ``a_d``, driven by the voltage ``v``: the one
    entering the step (``euler``) or the one after its reset (``symplectic``)."""
    return a + c_ada * (adaptation_current * (v - v_leak) - a)


def leaky_subthreshold(x, v, i, c_mem, c_syn, v_leak):
    """The leaky synapse and membrane of LIF (before the spike) and LI: ``(i_j, v_d, i')`` (see
    :func:`~snn.neurons.lif.lif_feed_forward_step`)."""
    i_jump = i + x
    v_decayed = v + c_mem * ((v_leak - v) + i_jump)
    i_decayed = i_jump + c_syn * i_jump
    return i_jump, v_decayed, i_decayed


def after_reset(z, v_decayed, v_reset):
    """The voltage after the spike ``z`` (0 or 1): ``(1 - z) v_d + z v_reset``; both products are
    exact, so it is ``v_d`` or ``v_reset`` to the bit."""
    return (1 - z) * v_decayed + z * v_reset
