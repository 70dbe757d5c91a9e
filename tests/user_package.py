"""A researcher's own code, outside ``snn``: a package ``mynet`` with a spiking model (satisfying
``snn.models.SpikingModel``), an optimizer and a scheduler, and a Hydra config folder that names
them, written into a temporary folder for tests that train, resume, evaluate and reload it."""

from __future__ import annotations

import textwrap
from pathlib import Path

MODEL = '''
"""My own spiking classifier: Linear -> LIF -> Linear -> LI readout, max over time."""
import math

import torch
from torch import nn

from snn.neurons import LI, LIF, LIFParameters


class MyNet(nn.Module):
    def __init__(self, input_shape, num_classes, T=4, hidden=8, dt=0.001):
        super().__init__()
        self.input_shape, self.num_classes = tuple(input_shape), int(num_classes)
        self.T, self.dt, self.decoder = int(T), float(dt), "max"
        self.encode = nn.Linear(math.prod(self.input_shape), hidden)
        self.lif = LIF(LIFParameters(alpha=10.0), dt=dt)
        self.project = nn.Linear(hidden, num_classes)
        self.readout = LI(dt=dt)

    def spiking_layers(self):
        return {"hidden": self.lif}

    def forward(self, x):
        current = 5.0 * self.encode(x.flatten(1))           # [B, H]
        z, _ = self.lif(current.expand(self.T, *current.shape))  # [T, B, H]
        v, _ = self.readout(self.project(z))               # [T, B, C]
        return v.max(dim=0).values
'''

OPTIM = '''
"""My own optimizer and scheduler."""
import torch


class Signum(torch.optim.SGD):
    """SGD on the signs of the gradients."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.grad.sign_()
        return super().step(closure)


class Halving(torch.optim.lr_scheduler.StepLR):
    def __init__(self, optimizer, every=1, last_epoch=-1):
        super().__init__(optimizer, step_size=every, gamma=0.5, last_epoch=last_epoch)
'''

DATA = '''
"""My own data set: two Gaussian blobs in 4 dimensions, a LightningDataModule that declares no
input_shape or num_classes (the model config names them)."""
import lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset


class Blobs(L.LightningDataModule):
    def __init__(self, n=64, batch_size=16):
        super().__init__()
        self.n, self.batch_size = int(n), int(batch_size)

    def _loader(self, seed):
        generator = torch.Generator().manual_seed(seed)
        y = torch.randint(0, 2, (self.n,), generator=generator)
        x = torch.randn(self.n, 4, generator=generator) + 2.0 * y[:, None]
        return DataLoader(TensorDataset(x, y), batch_size=self.batch_size)

    def train_dataloader(self):
        return self._loader(0)

    def val_dataloader(self):
        return self._loader(1)

    def test_dataloader(self):
        return self._loader(2)
'''

DATA_CONFIG = '''
_target_: mynet.data.Blobs
n: 64
'''

CONFIG = '''
_target_: mynet.MyNet
input_shape: ${dataset.input_shape}
num_classes: ${dataset.num_classes}
T: 4
hidden: 8
'''


def write_user_package(root: Path) -> tuple[Path, Path]:
    """Writes ``root/code/mynet`` and ``root/conf/{model/mynet,dataset/blobs}.yaml``; returns (code folder,
    config folder)."""
    code, conf = root / "code", root / "conf"
    (code / "mynet").mkdir(parents=True)
    (code / "mynet" / "__init__.py").write_text(textwrap.dedent(MODEL))
    (code / "mynet" / "optim.py").write_text(textwrap.dedent(OPTIM))
    (conf / "model").mkdir(parents=True)
    (conf / "model" / "mynet.yaml").write_text(textwrap.dedent(CONFIG))
    (code / "mynet" / "data.py").write_text(textwrap.dedent(DATA))
    (conf / "dataset").mkdir()
    (conf / "dataset" / "blobs.yaml").write_text(textwrap.dedent(DATA_CONFIG))
    return code, conf


def user_overrides(conf: Path) -> list[str]:
    """The command line of a run on the user's own model, optimizer and scheduler."""
    return [f"hydra.searchpath=[file://{conf}]", "model=mynet", "optimizer._target_=mynet.optim.Signum",
            "~optimizer.weight_decay", "optimizer.lr=0.01", "scheduler._target_=mynet.optim.Halving",
            "~scheduler.T_max"]
