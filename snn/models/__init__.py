"""Spiking network models built from ``snn.neurons``: plain ``nn.Module`` classes, no training stack."""

from .classifiers import DECODERS, SpikingClassifier, SpikingConvClassifier
from .contract import SpikingModel, check_model
from .conv import ConvBlock, ConvEncoder
from .encoders import ENCODERS, ConstantCurrentEncoder, LatencyEncoder, PoissonEncoder, make_encoder
from .layers import NEURONS, make_neurons
from .monitor import SpikeRecorder
from .sequence import SEQUENCE_DECODERS, SpikingSequenceClassifier

__all__ = [
    "DECODERS", "NEURONS", "SpikingClassifier", "SpikingConvClassifier", "make_neurons",
    "ConvBlock", "ConvEncoder",
    "ENCODERS", "ConstantCurrentEncoder", "LatencyEncoder", "PoissonEncoder", "make_encoder",
    "SpikeRecorder", "SpikingModel", "check_model",
    "SEQUENCE_DECODERS", "SpikingSequenceClassifier",
]
