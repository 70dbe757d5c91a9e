"""TensorBoard views of a spiking network in training: each view is a callback, on or off in
conf/callbacks/.

- :mod:`~snn.training.monitoring.statistics`: :class:`SpikeStatistics` (per layer and epoch:
  silent and saturated fractions, per-neuron rate histograms, the training rate) and
  :class:`NeuronParameterHistograms` (learnable neuron constants);
- :mod:`~snn.training.monitoring.plots`: :class:`SpikeRasterPlot`, a raster and voltage traces of
  one validation sample;
- :mod:`~snn.training.monitoring.hparams`: :class:`ConfigHyperparameters`, the values runs are
  compared by in the HPARAMS tab;
- :mod:`~snn.training.monitoring.logging_interval`: :class:`LoggingInterval`, per-step metrics often
  enough in short epochs;
- :mod:`~snn.training.monitoring.epoch_log`: :class:`EpochLog`, a line per epoch and one for the
  test into the run's log.

Spikes come from :class:`snn.models.SpikeRecorder`, voltages and states from
:func:`snn.neurons.trajectory`; the networks satisfy :class:`snn.models.SpikingModel`.
"""

from .epoch_log import EpochLog
from .hparams import COLUMNS, ConfigHyperparameters, comparison_hparams, flatten_config
from .logging_interval import LoggingInterval, logging_interval
from .plots import (
    SpikeRasterPlot,
    max_pool_time,
    order_neurons,
    pick_neurons,
    raster_figure,
    record,
    trace_figure,
)
from .statistics import NeuronParameterHistograms, NeuronSpikeCounts, SpikeStatistics
from .writer import tensorboard

__all__ = [
    "COLUMNS",
    "EpochLog",
    "ConfigHyperparameters",
    "comparison_hparams",
    "flatten_config",
    "LoggingInterval",
    "logging_interval",
    "SpikeRasterPlot",
    "max_pool_time",
    "order_neurons",
    "pick_neurons",
    "raster_figure",
    "record",
    "trace_figure",
    "NeuronParameterHistograms",
    "NeuronSpikeCounts",
    "SpikeStatistics",
    "tensorboard",
]
