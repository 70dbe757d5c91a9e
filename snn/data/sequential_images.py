"""Sequential (and permuted) MNIST and Fashion-MNIST: an image's 784 pixels, one per step.

The images come from the image DataModules of :mod:`snn.data.images` (same files, same search
folders and error messages, same train/validation split); this module only turns each batch of
images ``[B, 1, 28, 28]`` into sequences ``[B, T, 1]``:

1. flatten row by row to ``[B, 784]``;
2. with ``permute``, reorder the pixels by one fixed permutation drawn from ``permutation_seed``
   (the same for every image, split and process; it is also saved in checkpoints, see
   ``state_dict``);
3. code every pixel over ``pixels.steps_per_pixel`` steps with an encoder of
   :mod:`snn.models.encoders` (``pixels.kind``): ``constant`` feeds the intensity as input current
   (the default, one step per pixel: ``T = 784``), ``poisson`` draws spikes at ``f_max * pixel``,
   ``latency`` fires once per pixel, the brighter the earlier in its steps.

Batches are ``(x [B, T, 1], y [B])``; ``encoder: events`` tells the models the time axis is in
the data. ``T`` and ``input_shape`` in the config must be ``784 * steps_per_pixel`` and ``[T, 1]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from snn.models.encoders import make_encoder

from .images import FashionMNISTDataModule, MNISTDataModule, collate_to_float
from .limits import check_elements

PIXELS = 28 * 28


def pixel_permutation(seed: int) -> torch.Tensor:
    """The permutation of the 784 pixel positions drawn from ``seed`` (int64 indices)."""
    return torch.randperm(PIXELS, generator=torch.Generator().manual_seed(int(seed)))


class ImagesToSequences:
    """A collate function: ``[(image, label), ...]`` -> ``(x [B, 784 * steps, 1], y [B])``."""

    def __init__(self, permutation: torch.Tensor | None, encoder: torch.nn.Module):
        self.permutation, self.encoder = permutation, encoder

    def __call__(self, batch: list) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = collate_to_float(batch)
        x = images.flatten(1)  # [B, 1, 28, 28] -> [B, 784], row by row
        if self.permutation is not None:
            x = x[:, self.permutation]
        x = self.encoder(x)  # -> [S, B, 784]: S steps per pixel
        return x.permute(1, 2, 0).reshape(x.shape[1], -1, 1), labels  # -> [B, 784 * S, 1]


class SequentialImageDataModule(L.LightningDataModule):
    """Images of ``image_class`` as pixel sequences (see the module docstring).

    Args:
        T, input_shape: ``784 * pixels.steps_per_pixel`` and ``[T, 1]`` (checked).
        encoder: ``events``: the batches have a time axis.
        permute: reorder the pixels by ``pixel_permutation(permutation_seed)``.
        pixels: ``kind`` (constant | poisson | latency), ``steps_per_pixel``, and the encoder's
            options (``scale``, ``f_max``, ``threshold``).
        dt: step size (s) for the Poisson encoder: the model's ``dt``.
        **image_options: the image DataModule's arguments (data_dir, batch_size, val_size, ...).
    """

    image_class: type = FashionMNISTDataModule

    def __init__(self, T: int = PIXELS, input_shape=(PIXELS, 1), encoder: str = "events",
                 permute: bool = False, permutation_seed: int = 0,
                 pixels: Mapping[str, Any] | None = None, dt: float = 0.001, **image_options: Any):
        super().__init__()
        if encoder != "events":
            raise ValueError("Pixel sequences have a time axis: dataset.encoder must be 'events', "
                             f"got {encoder!r}.")
        pixels = dict(pixels or {})
        kind, per_pixel = pixels.pop("kind", "constant"), pixels.pop("steps_per_pixel", 1)
        if not isinstance(per_pixel, int) or per_pixel < 1:
            raise ValueError(f"pixels.steps_per_pixel must be an int >= 1, got {per_pixel!r}.")
        if T != PIXELS * per_pixel or tuple(input_shape) != (T, 1):
            raise ValueError(
                f"T = {T} and input_shape = {list(input_shape)} do not match {PIXELS} pixels of "
                f"{per_pixel} step(s): set dataset.T={PIXELS * per_pixel} and input_shape "
                "[${..T}, 1].")
        self.images = self.image_class(input_shape=(1, 28, 28), **image_options)
        self.name = f"sequential {self.images.name}"
        self.T, self.input_shape, self.num_classes = T, (T, 1), self.images.num_classes
        self.batch_size = self.images.batch_size
        # A batch is coded as [steps_per_pixel, B, 784] and then [B, T, 1] (float32).
        check_elements((self.batch_size, T), 4, f"A batch of {self.batch_size} sequences of T = {T} steps",
                       "reduce dataset.pixels.steps_per_pixel (and dataset.T) or dataset.batch_size")
        self.permutation = pixel_permutation(permutation_seed) if permute else None
        self.pixel_encoder = make_encoder(kind, per_pixel, dt=dt, **pixels)
        self.collate = ImagesToSequences(self.permutation, self.pixel_encoder)

    def prepare_data(self) -> None:
        self.images.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        self.images.setup(stage)

    def _loader(self, loader: DataLoader, shuffle: bool) -> DataLoader:
        # The image module's loader (its dataset, batch size, workers), with our collate function.
        return DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=shuffle,
                          num_workers=loader.num_workers, pin_memory=loader.pin_memory,
                          persistent_workers=loader.persistent_workers, collate_fn=self.collate)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.images.train_dataloader(), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.images.val_dataloader(), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.images.test_dataloader(), shuffle=False)

    def state_dict(self) -> dict[str, Any]:
        """Saved in checkpoints: the permutation itself, so a run can be evaluated on the same
        pixel order even where ``randperm`` would draw another one from the seed."""
        return {} if self.permutation is None else {"permutation": self.permutation.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("permutation")
        if (saved is None) != (self.permutation is None):
            how = "with" if saved is not None else "without"
            raise ValueError(f"The checkpoint was trained {how} permuted pixels, this config says "
                             f"dataset.permute={saved is None}.")
        if saved is not None:
            self.permutation = self.collate.permutation = saved.clone()


class SequentialFashionMNISTDataModule(SequentialImageDataModule):
    """Sequential Fashion-MNIST (``FashionMNISTDataModule``'s files and options)."""

    image_class = FashionMNISTDataModule


class SequentialMNISTDataModule(SequentialImageDataModule):
    """Sequential MNIST (``MNISTDataModule``'s files and options)."""

    image_class = MNISTDataModule
