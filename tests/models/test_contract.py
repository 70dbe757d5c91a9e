"""snn.models.SpikingModel: the contract is checked when the LightningModule builds its network."""

import pytest
import torch
from torch import nn

from snn.models import SpikingClassifier, SpikingConvClassifier, SpikingModel, check_model
from snn.training import SpikingClassifierModule

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True}


@pytest.mark.parametrize("cls", [SpikingClassifier, SpikingConvClassifier])
def test_the_classifiers_satisfy_the_contract(cls):
    conv = {"channels": [2]} if cls is SpikingConvClassifier else None
    net = cls((1, 8, 8), 3, T=4, conv=conv, hidden=5)
    check_model(net)
    assert isinstance(net, SpikingModel)


class Partial(nn.Module):
    """Has spiking layers and a readout but nothing else of the contract."""

    def __init__(self):
        super().__init__()
        self.readout = nn.Identity()

    def spiking_layers(self):
        return {}

    def forward(self, x):
        return x


def test_missing_members_are_named():
    missing = r"missing \['input_shape', 'num_classes', 'T', 'dt', 'decoder'\]"
    with pytest.raises(ValueError, match="Partial .*" + missing):
        check_model(Partial())
    with pytest.raises(ValueError, match="missing"):
        SpikingClassifierModule(net=Partial(), optimizer=ADAM)


def test_unusable_members_are_named():
    net = Partial()
    net.input_shape, net.num_classes, net.T, net.dt, net.decoder = (4,), 3, 0, 0.001, "max"
    problems = r"T must be a positive int, got 0; spiking_layers\(\) must return a non-empty"
    with pytest.raises(ValueError, match=problems):
        check_model(net)
    net.input_shape = [4]
    with pytest.raises(ValueError, match="input_shape must be a tuple of ints"):
        check_model(net)


def test_a_model_that_satisfies_the_contract_trains():
    module = SpikingClassifierModule(net=SpikingClassifier((6,), 2, T=3, hidden=4), optimizer=ADAM)
    assert module(torch.zeros(2, 6)).shape == (2, 2)
