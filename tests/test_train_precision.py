"""train.py with ``trainer.precision=bf16-mixed`` on the CPU (Lightning's autocast), one tiny run per
model family: feed-forward, conv (spiking conv layers) and recurrent (with a Linear between two
recurrent layers, the issue's failing case), each on the default backend (``auto``: ``cpp`` here).
The neuron layers compute in float32 inside autocast (snn.neurons.module); the dtype rule on every
backend is tests/neurons/test_mixed_precision.py's."""

import lightning as L
import pytest
import torch

from snn.training.run import run as train
from tests.helpers import make_cfg, with_callback

FAMILIES = {
    "feed_forward": ("model=adex", "dataset=synthetic", "model.T=6", "model.conv=null", "model.hidden=16"),
    "conv": ("model=adex_conv", "dataset=synthetic", "model.T=6"),
    "recurrent": ("model=radex", "dataset=store_recall", "model.feedforward=true", "model.hidden=[8,8]"),
}


class Watch(L.Callback):
    """Records the training step's autocast dtype, the loss and whether the weights moved."""

    def on_train_start(self, trainer, pl_module):
        self.before = {n: p.detach().clone() for n, p in pl_module.named_parameters()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.loss = outputs["loss"].detach() if isinstance(outputs, dict) else outputs.detach()

    def on_fit_end(self, trainer, pl_module):
        self.after = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        self.constants = [layer.v_th for layer in pl_module.net.spiking_layers().values()]
        self.plugin = trainer.precision


@pytest.mark.parametrize("family", list(FAMILIES))
def test_bf16_mixed_trains_every_model_family(tmp_path, monkeypatch, family):
    watch = Watch()
    with_callback(monkeypatch, watch)
    train(make_cfg(tmp_path, *FAMILIES[family], "trainer.precision=bf16-mixed", "debug=fdr"))
    assert watch.plugin == "bf16-mixed" and torch.isfinite(watch.loss)
    moved = [n for n in watch.before if not torch.equal(watch.before[n], watch.after[n])]
    assert moved and all(torch.isfinite(p).all() for p in watch.after.values())
    assert all(p.dtype == torch.float32 for p in watch.after.values())
    assert watch.constants and all(c.dtype == torch.float64 for c in watch.constants)
