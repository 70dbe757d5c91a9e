"""The model summary's neuron column, for our models and for a user's own."""

from torch import nn

from snn.models import SpikingClassifier
from snn.neurons import LI, LIFAdEx
from snn.training.summary import summary_table


def rows(table) -> dict[str, str]:
    """layer name -> its cell in the neurons column."""
    return dict(zip(table.columns[0]._cells, table.columns[3]._cells, strict=True))


class OwnNet(nn.Module):
    """A user's model: spiking layers as plain attributes, not in a ModuleDict ``spiking``."""

    input_shape, num_classes, T, dt, decoder = (6,), 3, 4, 1e-3, "max"

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 5)
        self.adex = LIFAdEx()
        self.out = nn.Linear(5, 3)
        self.readout = LI()

    def spiking_layers(self):
        return {"hidden": self.adex}

    def forward(self, x):
        z, _ = self.adex(self.fc(x).expand(self.T, -1, -1))
        return self.readout(self.out(z))[0].max(0).values


def test_a_users_spiking_layer_held_as_an_attribute_shows_its_neurons():
    cells = rows(summary_table(OwnNet()))
    assert cells["adex"] == "5" and cells["fc"] == "" and cells["readout"] == "3" and cells["total"] == "8"


def test_our_classifiers_spiking_layers_are_listed_one_by_one():
    net = SpikingClassifier(input_shape=(1, 4, 4), num_classes=2, T=3, conv=None, hidden=[7, 5])
    cells = rows(summary_table(net))
    assert {k: v for k, v in cells.items() if k.startswith("spiking.")} == {
        f"spiking.{name}": n for name, n in zip(net.spiking_layers(), ("7", "5"), strict=True)}
    assert cells["total"] == "14"
