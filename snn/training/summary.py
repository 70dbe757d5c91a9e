"""Callbacks: a model summary that counts neurons as well as parameters."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_only
from rich.console import Console
from rich.table import Table
from torch import nn

from snn.models import SpikeRecorder


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def neuron_counts(net: nn.Module) -> dict[str, int]:
    """Neurons per spiking layer of ``net``, from one forward pass on a zero input (weights untouched)."""
    was_training = net.training
    param = next(net.parameters(), None)
    if param is not None:
        device, dtype = param.device, param.dtype
    else:
        device, dtype = torch.device("cpu"), torch.get_default_dtype()
    recorder = SpikeRecorder(net.spiking_layers())
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, *net.input_shape, device=device, dtype=dtype))  # e.g. float64 under precision=64-true
        return recorder.neurons()
    finally:
        recorder.remove()
        net.train(was_training)


def summary_table(net: nn.Module) -> Table:
    """One row per part of ``net`` (spiking layers one by one) with parameters and neurons."""
    neurons = neuron_counts(net)
    table = Table(title=f"{type(net).__name__}: T={net.T}, dt={net.dt}, decoder={net.decoder}")
    for column in ("layer", "type", "params", "neurons"):
        table.add_column(column, justify="right" if column in ("params", "neurons") else "left")
    # Spiking layers are found by identity: ours sit in a ModuleDict ``spiking``, a user's model may
    # hold them as plain attributes.
    spiking = {id(layer): layer_name for layer_name, layer in net.spiking_layers().items()}
    for name, child in net.named_children():
        if isinstance(child, nn.ModuleDict) and any(id(layer) in spiking for layer in child.values()):
            for layer_name, layer in child.items():
                count = neurons.get(spiking.get(id(layer)))
                table.add_row(f"{name}.{layer_name}", type(layer).__name__, f"{_params(layer):,}",
                              f"{count:,}" if count else "")
        else:
            count = net.num_classes if name == "readout" else neurons.get(spiking.get(id(child)))
            table.add_row(name, type(child).__name__, f"{_params(child):,}", f"{count:,}" if count else "")
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    table.add_section()
    total_neurons = sum(neurons.values()) + net.num_classes
    table.add_row("total", f"{trainable:,} trainable", f"{_params(net):,}", f"{total_neurons:,}")
    return table


class SpikingModelSummary(L.Callback):
    """Prints ``summary_table`` of the LightningModule's ``net`` when fitting starts (rank 0)."""

    @rank_zero_only
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        Console().print(summary_table(pl_module.net))
