"""A configurable convolutional front end: blocks of conv -> norm -> activation -> pool.

Convolutions use ``padding="same"`` (stride 1) and pooling halves height and width, so the output
shape is known from the config alone (``ConvEncoder.output_shape``), without a dummy forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

NORMS = ("batch", "group", "none")
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "none": nn.Identity,
}
POOLS: dict[str, type[nn.Module] | None] = {"max": nn.MaxPool2d, "avg": nn.AvgPool2d, "none": None}


def _choose(what: str, value: str, choices) -> str:
    if value not in choices:
        raise ValueError(f"Unknown {what} {value!r}; choose one of {sorted(choices)}.")
    return value


def _per_block(name: str, value, n: int) -> list:
    """One value per block: a scalar is repeated, a list must have one entry per block."""
    if isinstance(value, str | int) or value is None:
        return [value] * n
    value = list(value)
    if len(value) != n:
        raise ValueError(f"conv {name} has {len(value)} entries {value} but there are {n} blocks (channels).")
    return value


def make_norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm2d, GroupNorm (up to 8 groups that divide ``channels``) or nothing."""
    _choose("norm", kind, NORMS)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        groups = max(g for g in range(1, min(8, channels) + 1) if channels % g == 0)
        return nn.GroupNorm(groups, channels)
    return nn.Identity()


def make_pool(kind: str) -> nn.Module:
    """A 2x2 pooling with stride 2, or nothing."""
    _choose("pool", kind, POOLS)
    pool = POOLS[kind]
    return nn.Identity() if pool is None else pool(2)


class ConvBlock(nn.Sequential):
    """conv (same padding, no bias when normalised) -> norm -> activation -> pool."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        norm: str = "batch",
        activation: str = "relu",
        pool: str = "max",
    ):
        if in_channels <= 0 or out_channels <= 0 or kernel_size <= 0:
            raise ValueError(
                f"ConvBlock needs positive channels and kernel size, got in={in_channels}, "
                f"out={out_channels}, kernel_size={kernel_size}."
            )
        _choose("activation", activation, ACTIVATIONS)
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding="same", bias=norm == "none"),
            make_norm(norm, out_channels),
            ACTIVATIONS[activation](),
            make_pool(pool),
        )
        self.pooled = pool != "none"


class ConvEncoder(nn.Sequential):
    """``len(channels)`` ConvBlocks: ``[N, C, H, W] -> [N, channels[-1], H / 2^p, W / 2^p]``.

    ``kernel_size``, ``norm``, ``activation`` and ``pool`` are one value for all blocks or a list
    with one value per block.
    """

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int] = (16, 32),
        kernel_size: int | Sequence[int] = 5,
        norm: str | Sequence[str] = "batch",
        activation: str | Sequence[str] = "relu",
        pool: str | Sequence[str] = "max",
    ):
        channels = [int(c) for c in channels]
        if not channels:
            raise ValueError("ConvEncoder needs at least one block: channels is empty (use conv: null for none).")
        n = len(channels)
        kernels, norms = _per_block("kernel_size", kernel_size, n), _per_block("norm", norm, n)
        acts, pools = _per_block("activation", activation, n), _per_block("pool", pool, n)
        ins = [in_channels, *channels[:-1]]
        super().__init__(
            *(ConvBlock(i, o, k, nm, a, p)
              for i, o, k, nm, a, p in zip(ins, channels, kernels, norms, acts, pools, strict=True))
        )
        self.out_channels = channels[-1]

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, int, int]:
        """``(C, H, W)`` of the output for an input of shape ``(C_in, H, W)``."""
        _, h, w = input_shape
        for block in self:
            if block.pooled:
                h, w = h // 2, w // 2
        if h == 0 or w == 0:
            raise ValueError(f"The input {list(input_shape)} is too small for {len(self)} pooling blocks.")
        return self.out_channels, h, w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"ConvEncoder expects images [N, C, H, W], got shape {list(x.shape)}.")
        return super().forward(x)
