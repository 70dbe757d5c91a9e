r"""NIR (Neuromorphic Intermediate Representation) export and import: ``pip install -e ".[nir]"``.

``export_nir(model, sample_input)`` writes the network as a ``nir.NIRGraph``; ``import_nir(graph)``
builds a :class:`~snn.interop.sequential.SpikingSequential` of our layers that runs ``[T, B, ...]``.
``nir.write(path, graph)`` stores a graph as HDF5; ``import_nir(path)`` reads one safely.

What the graph holds
--------------------
A NIR graph describes one time step of the network; time is implicit. So the graph starts after the
input encoder (its input is what the encoder gives at one step: the image times ``scale`` for
constant-current coding) and ends at the readout voltages (the decoder, max or mean over time, is not
a NIR node). ``graph.metadata`` records ``dt`` and, for our classifiers, ``T``, the encoder and the
decoder, so the rest can be rebuilt. Layers map one to one:

==========================  =============================================================
ours                        NIR
==========================  =============================================================
``nn.Linear``               ``Affine`` (``Linear`` without bias)
``nn.Conv2d``               ``Conv2d``; a following eval-mode ``BatchNorm2d`` is folded in
``nn.Flatten``              ``Flatten`` over dims of one sample, counted from the end
                            (``start_dim=-3`` for ``[C, H, W]``): the same dims with or without a
                            batch in front, so importers that hand them to ``torch.nn.Flatten``
                            (norse 1.1, snntorch 1.0) flatten per sample at any batch size
``nn.AvgPool2d``            ``AvgPool2d`` (``SumPool2d`` when ``divisor_override=1``); with
                            ``avg_pool="sum"``: ``SumPool2d`` and the ``1 / (k_h k_w)`` folded into
                            the next Linear or Conv2d (exact for power-of-two areas such as 2x2)
``LIF``                     ``CubaLIF``
``LI``                      ``CubaLI``
``LIFRecurrent``            ``Linear`` (input weights), then a sub-graph ``input -> CubaLIF ->
                            output`` with the recurrent edge ``CubaLIF -> Linear -> CubaLIF``
``nn.Dropout``              nothing (identity at inference)
==========================  =============================================================

Our classifiers and Sequentials are read layer by layer. Any other ``nn.Module`` is traced with
nirtorch (torch.fx): its forward must call the layers on the whole sequence ``[T, B, ...]`` (no loop
over time, no branching on values); an addition of two layers' outputs becomes two edges into the
next node (NIR sums a node's inputs); a :class:`SpikingSequential` inside is spliced in as its chain.
Each layer is converted at the shape it saw when the model ran one step of ``sample_input``.

Units and discretisation
------------------------
NIR's ``CubaLIF`` is :math:`\tau_{syn}\dot I = -I + w_{in} S`,
:math:`\tau_{mem}\dot v = v_{leak} - v + R I`. Its documentation speaks of milliseconds, but the
importers that consume it (norse 1.1 ``from_nir(graph, dt=...)``, snntorch 1.0
``import_from_nir``, which fixes ``dt = 1e-4``) read time constants in **seconds** and integrate
with explicit Euler at step ``dt``, the input :math:`S` being the value that arrives at one step:

.. math::
    I_t = I_{t-1} + \tfrac{\Delta t}{\tau_{syn}} (-I_{t-1} + w_{in} x_t), \qquad
    v_t = v_{t-1} + \tfrac{\Delta t}{\tau_{mem}} (v_{leak} - v_{t-1} + R I_t).

We write that reading: ``tau_syn = 1 / tau_syn_inv`` and ``tau_mem = 1 / tau_mem_inv`` in seconds,
``r = 1`` and ``w_in = tau_syn / dt``. With these values the Euler equations above are our
:func:`~snn.neurons.lif.lif_feed_forward_step` exactly (:math:`I_t` is our :math:`i_j`, the
current after the input jump), so norse's importer given the same ``dt`` reproduces our spikes
(for ``v_leak = v_reset = 0``: norse 1.1 resets to 0 whatever ``v_reset`` says and lets its
synapse leak towards ``v_leak`` too). ``export_nir(..., r="tau_mem/dt")`` writes the same network
with ``r = tau_mem / dt`` and every voltage times ``tau_mem / dt`` (the membrane equation is linear
in them), the only ``r`` snntorch's importer accepts.
On import the general case is honoured: the input is scaled by ``r * w_in * dt / tau_syn`` (a
``Scale`` layer, left out when it is 1), which is exact because the synapse is linear. ``LIF`` and
``LI`` nodes (no synapse) become our LIF and LI with ``tau_syn_inv = 1 / dt``: the current then
lasts exactly one step, and the input scale is ``r``.

Surrogate gradients are not part of NIR: their name and steepness go into each node's metadata
(``method``, ``alpha``) and come back on import. Learnable neuron constants come back as fixed ones.

Other libraries (tests/interop/test_nir_libraries.py pins each statement)
-------------------------------------------------------------------------
- norse 1.1 ``from_nir(graph, dt=graph.metadata["dt"])`` gives our spikes, recurrent sub-graphs
  included. It maps no ``CubaLI`` (nor ``LI``): nirtorch then leaves the classifiers' readout node
  out and joins the edges around it, so the module returns the readout's input current (run
  ``model.readout`` on it for the voltages). It maps no ``AvgPool2d`` either (``from_nir`` then
  fails): export average pools with ``avg_pool="sum"``.
- snntorch 1.0 ``import_from_nir(graph)`` simulates at ``dt = 1e-4`` s, accepts ``CubaLIF`` only
  with ``r = tau_mem / dt`` and ``v_leak = 0``, and refuses ``CubaLI``: export a model with
  ``dt = 1e-4`` as ``export_nir(model, r="tau_mem/dt", readout=False)`` and its spikes, recurrent
  layers included, are ours; its neurons keep their state inside the module between calls, so use a
  fresh module per sequence.
- Graphs written by norse 1.1's ``to_nir`` hold ``tau = dt / tau_inv`` (``5e-06`` for
  ``tau_syn_inv = 200`` at its default ``dt = 1e-3``), ``w_in = r = 1`` (the input is added to the
  current as it is) and no ``dt``: ``import_nir(graph, dt=<the dt given to to_nir>,
  convention="norse")`` fires as norse does (``LIFCell``: ``CubaLIF``; ``LIFBoxCell``: ``LIF``;
  ``LIBoxCell``: ``LI``). Read as seconds such a graph has time constants shorter than ``dt``
  (unstable Euler steps); ``import_nir`` refuses it and names this convention.
- Graphs written by snntorch 1.0's ``export_to_nir`` are in seconds for ``dt = 1e-4`` (not
  recorded): ``import_nir(graph, dt=1e-4)`` fires as ``Leaky``, ``Synaptic``, ``RLeaky`` and
  ``RSynaptic`` with ``reset_mechanism="zero", reset_delay=False`` do. snntorch writes neither its
  reset (by default subtraction, one step late) nor its delay: the graph means a reset to
  ``v_reset``. Its recurrent layers are a cycle ``neuron <-> Affine`` in the graph; we read the
  cycle as a recurrent layer and add the recurrent bias to the bias of the Affine before it.

Files
-----
``import_nir(path)`` reads the HDF5 datasets' declared shapes and dtypes before any data and refuses
a file that declares more than ``max_bytes`` (256 MiB by default; a parameter) or links to other
files. Every numeric field of every node must be finite and every time constant positive; the error
names the node and the field.

What cannot be exported
-----------------------
AdEx (:class:`~snn.neurons.adex.LIFAdEx`): NIR has no adaptive neuron. A sub-graph cannot stand in
for it either: the exponential upswing :math:`\Delta_T \exp((v - v_{th}) / \Delta_T)` and the
sub-threshold coupling :math:`a_{current}(v - v_{leak})` both need the membrane voltage of a spiking
neuron as a signal, and NIR's spiking nodes output only spikes (and no node computes ``exp``).
Only the spike-triggered jump of :math:`a` could be built (a ``CubaLI`` driven by the spikes), which
would not be the same neuron; export refuses rather than drop terms silently. ReLU and max pooling
(the conventional conv encoder of ``SpikingClassifier``; ``conv.activation=none`` with average or no
pooling exports) and GroupNorm have no NIR node either.
"""

from .nir_export import export_nir
from .nir_import import import_nir

__all__ = ["export_nir", "import_nir"]
