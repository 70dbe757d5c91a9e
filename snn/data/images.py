"""DataModules: MNIST, Fashion-MNIST, CIFAR-10 from local files, and a synthetic task.

Images are kept in memory as uint8 ``[N, C, H, W]``; batches arrive as float in ``[0, 1]`` (what
the Poisson and latency encoders expect) with int64 labels. The validation set is carved from the
training set with a fixed ``split_seed``; the test set is untouched. ``prepare_data`` only finds (or
downloads) files; ``setup`` reads them, on every process.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from snn.errors import DataError

from .download import removing_new_folders
from .idx import read_idx
from .limits import check_elements


class ImageTensorDataset(Dataset):
    """``(images[i], labels[i])`` for ``i`` in ``indices``, with an optional per-image transform."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor | None = None,
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if len(images) != len(labels):
            raise DataError(f"{len(images)} images but {len(labels)} labels.")
        self.images, self.labels, self.transform = images, labels, transform
        self.indices = torch.arange(len(images)) if indices is None else indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = self.indices[i]
        image = self.images[j]
        return (self.transform(image) if self.transform else image), self.labels[j]


def collate_to_float(batch: list) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacks a batch; uint8 images become float in [0, 1]."""
    x, y = default_collate(batch)
    return (x.float().div_(255) if x.dtype == torch.uint8 else x.float()), y.long()


def validation_count(val_size: int | float, num_train: int, name: str) -> int:
    """How many of ``num_train`` training samples ``val_size`` (a count or a fraction) holds out for
    validation; a DataError naming both sizes unless both splits keep at least one sample."""
    n_val = val_size if isinstance(val_size, int) else round(val_size * num_train)
    if not 0 < n_val < num_train:
        left = "no training data" if n_val >= num_train else "no validation data"
        raise DataError(
            f"dataset.val_size={val_size} holds out {n_val} of the {num_train} samples of the {name} training set "
            f"for validation, which leaves {left}: choose a count from 1 to {num_train - 1}, or a fraction in (0, 1)."
        )
    return n_val


class ClassificationDataModule(L.LightningDataModule):
    """Shared by all datasets: the train/val split and the loaders. Subclasses implement ``load``."""

    name = "dataset"

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        batch_size: int = 128,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        val_size: int | float = 5000,
        split_seed: int = 0,
    ):
        super().__init__()
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {num_workers!r}.")
        if (isinstance(val_size, bool) or not isinstance(val_size, int | float) or val_size <= 0
                or (isinstance(val_size, float) and val_size >= 1)):
            raise ValueError(f"val_size must be a count > 0 or a fraction in (0, 1), got {val_size!r}.")
        self.input_shape, self.num_classes = tuple(input_shape), int(num_classes)
        self.batch_size, self.num_workers = batch_size, num_workers
        self.val_size, self.split_seed = val_size, split_seed
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.train_set = self.val_set = self.test_set = None

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images [N, C, H, W], labels [N])`` of the training or the test set."""
        raise NotImplementedError

    def train_transform(self) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """Augmentation for training images (validation and test images are never augmented)."""
        return None

    def _check(self, images: torch.Tensor, labels: torch.Tensor, split: str) -> None:
        if tuple(images.shape[1:]) != self.input_shape:
            raise DataError(f"{self.name} {split} images have shape {list(images.shape[1:])}, "
                            f"the config says input_shape {list(self.input_shape)}.")
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DataError(f"{self.name} {split} labels span {int(labels.min())}..{int(labels.max())}, "
                            f"outside 0..{self.num_classes - 1} (num_classes {self.num_classes}).")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        images, labels = self.load(train=True)
        self._check(images, labels, "train")
        n_val = validation_count(self.val_size, len(images), self.name)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(self.split_seed))
        self.train_set = ImageTensorDataset(images, labels, order[n_val:], self.train_transform())
        self.val_set = ImageTensorDataset(images, labels, order[:n_val])
        test_images, test_labels = self.load(train=False)
        self._check(test_images, test_labels, "test")
        self.test_set = ImageTensorDataset(test_images, test_labels)

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
            pin_memory=self.pin_memory, persistent_workers=self.num_workers > 0, collate_fn=collate_to_float,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, shuffle=False)


class FileDataModule(ClassificationDataModule):
    """A dataset stored as files in one of several folders, downloaded by torchvision on request."""

    files: tuple[str, ...] = ()  # names that must all be present in one folder
    subfolder = ""  # where torchvision's download puts them, relative to data_dir
    download_hint = ""
    torchvision_class = ""  # the torchvision.datasets class that downloads them

    def __init__(
        self, data_dir: str = "./data", download: bool = False, search_dirs: Sequence[str] = (), **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.data_dir = Path(data_dir).expanduser()
        self.download = bool(download)
        self.search_dirs = [self.data_dir, self.data_dir / self.subfolder, *(Path(d) for d in search_dirs)]

    def find_file(self, folder: Path, name: str) -> Path | None:
        return next((p for p in (folder / name, folder / f"{name}.gz") if p.is_file()), None)

    def locate(self) -> Path | None:
        """The first search folder holding every file, or None."""
        for folder in self.search_dirs:
            if all(self.find_file(folder, name) for name in self.files):
                return folder
        return None

    def fetch(self) -> None:
        """Downloads both splits into ``data_dir`` with torchvision."""
        from torchvision import datasets

        for train in (True, False):
            getattr(datasets, self.torchvision_class)(str(self.data_dir), train=train, download=True)

    def missing_message(self) -> str:
        looked = "\n".join(
            f"  {folder.resolve()}: missing {[n for n in self.files if not self.find_file(folder, n)]}"
            for folder in self.search_dirs
        )
        how = (
            "dataset.download=true is set but the download failed (see above)."
            if self.download else "Download is off: add dataset.download=true on a machine with internet access."
        )
        return (
            f"{self.name} not found. Expected the files {list(self.files)} (each may be gzipped) in one of:\n"
            f"{looked}\n{how} Or copy the files into {self.data_dir.resolve()} (set dataset.data_dir to "
            f"use another folder). {self.download_hint}"
        )

    def prepare_data(self) -> None:
        if self.locate() is not None:
            return
        if not self.download:
            raise FileNotFoundError(self.missing_message())
        try:
            # torchvision makes data_dir/<name>/raw before it downloads: a failure leaves none of it.
            with removing_new_folders(self.data_dir, self.data_dir / self.subfolder):
                self.data_dir.mkdir(parents=True, exist_ok=True)
                self.fetch()
        except Exception as error:  # network errors come in many types; all mean "not available"
            raise FileNotFoundError(f"Downloading {self.name} into {self.data_dir.resolve()} failed: {error!r}\n"
                                    f"{self.missing_message()}") from error
        if self.locate() is None:
            raise FileNotFoundError(self.missing_message())

    def folder(self) -> Path:
        folder = self.locate()
        if folder is None:
            raise FileNotFoundError(self.missing_message())
        return folder


class MNISTDataModule(FileDataModule):
    """MNIST from its four IDX files (``train-images-idx3-ubyte`` etc., plain or ``.gz``)."""

    name = "MNIST"
    files = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    subfolder = "MNIST/raw"
    download_hint = ("Offline, Fashion-MNIST works the same way: dataset=fashion_mnist "
                     "(Debian package dataset-fashion-mnist).")
    torchvision_class = "MNIST"

    def __init__(self, input_shape: Sequence[int] = (1, 28, 28), num_classes: int = 10, **kwargs: Any):
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        folder = self.folder()
        prefix = "train" if train else "t10k"
        images_path = self.find_file(folder, f"{prefix}-images-idx3-ubyte")
        labels_path = self.find_file(folder, f"{prefix}-labels-idx1-ubyte")
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.dim() != 3 or images.dtype != torch.uint8:
            raise DataError(f"{images_path} should hold uint8 images [N, H, W], "
                            f"holds {images.dtype} {list(images.shape)}.")
        if labels.dim() != 1 or len(labels) != len(images):
            raise DataError(f"{labels_path} should hold {len(images)} labels (one per image of {images_path.name}), "
                            f"holds shape {list(labels.shape)}.")
        return images.unsqueeze(1), labels.long()  # [N, H, W] -> [N, 1, H, W]


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (same IDX files as MNIST); also found in Debian's ``/usr/share/datasets/fashion-mnist``.

    Training images can be augmented: ``flip`` mirrors half of them left-right (clothes are
    symmetric, digits are not: MNIST has no such option), ``crop_padding`` > 0 shifts them by up to
    that many pixels (zero padding, then a random 28x28 crop).
    """

    name = "Fashion-MNIST"
    subfolder = "FashionMNIST/raw"
    download_hint = ("On Debian/Ubuntu: apt-get install dataset-fashion-mnist "
                     "(files in /usr/share/datasets/fashion-mnist).")
    torchvision_class = "FashionMNIST"

    def __init__(self, flip: bool = False, crop_padding: int = 0, **kwargs: Any):
        super().__init__(**kwargs)
        if not isinstance(crop_padding, int) or crop_padding < 0:
            raise ValueError(f"crop_padding must be an int >= 0 (pixels), got {crop_padding!r}.")
        self.flip, self.crop_padding = bool(flip), crop_padding

    def train_transform(self):
        if not (self.flip or self.crop_padding):
            return None
        from torchvision.transforms import v2

        steps = [v2.RandomHorizontalFlip()] if self.flip else []
        if self.crop_padding:
            steps.append(v2.RandomCrop(self.input_shape[1:], padding=self.crop_padding))
        return v2.Compose(steps)


class CifarBatchUnpickler(pickle.Unpickler):
    """Reads a CIFAR-10 python batch (a dict of a uint8 numpy array and a list of labels) and
    refuses every other global: a plain ``pickle.load`` of a downloaded file would call whatever
    the file names. Only numpy's array reconstruction is allowed."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it asks for {module}.{name}, which a CIFAR-10 batch never holds")
        return super().find_class(module, name)


class CIFAR10DataModule(FileDataModule):
    """CIFAR-10 from the python batches (``cifar-10-batches-py``); random crop and flip when ``augment``."""

    name = "CIFAR-10"
    files = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")
    subfolder = "cifar-10-batches-py"
    download_hint = "Offline, Fashion-MNIST is available as a Debian package: dataset=fashion_mnist."
    torchvision_class = "CIFAR10"  # one archive holds both splits: the second call finds it

    def __init__(
        self, input_shape: Sequence[int] = (3, 32, 32), num_classes: int = 10, augment: bool = True, **kwargs: Any
    ):
        super().__init__(input_shape=input_shape, num_classes=num_classes, **kwargs)
        self.augment = augment

    def train_transform(self):
        if not self.augment:
            return None
        from torchvision.transforms import v2

        return v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        folder = self.folder()
        images, labels = [], []
        for name in self.files[:5] if train else self.files[5:]:
            path = self.find_file(folder, name)
            try:
                with open(path, "rb") as f:
                    batch = CifarBatchUnpickler(f, encoding="bytes").load()
                data, batch_labels = batch[b"data"], batch[b"labels"]
            except Exception as error:
                raise DataError(f"{path} is not a CIFAR-10 python batch ({error!r}); "
                                "delete it and fetch it again.") from None
            if data.shape != (len(batch_labels), 3 * 32 * 32):
                raise DataError(f"{path} holds data of shape {data.shape} for {len(batch_labels)} labels, "
                                "expected [N, 3072].")
            images.append(torch.from_numpy(data).view(-1, 3, 32, 32))  # [N, 3072] -> [N, 3, 32, 32]
            labels.append(torch.as_tensor(batch_labels, dtype=torch.long))
        return torch.cat(images), torch.cat(labels)


class SyntheticDataModule(ClassificationDataModule):
    """Random class prototypes in ``[0, 1]`` plus Gaussian noise: a task of tunable difficulty.

    Each class ``k`` has a prototype image ``P_k ~ U(0, 1)``; a sample of class ``k`` is
    ``clip(P_k + noise * N(0, 1), 0, 1)``. Small ``noise`` is easily separable; large is hard.
    Everything is drawn from ``seed``, so the data is the same in every run and process.
    """

    name = "synthetic"

    def __init__(self, input_shape: Sequence[int] = (1, 8, 8), num_classes: int = 4, num_train: int = 512,
                 num_test: int = 128, noise: float = 0.3, seed: int = 0, val_size: int | float = 128, **kwargs: Any):
        super().__init__(input_shape=input_shape, num_classes=num_classes, val_size=val_size, **kwargs)
        if num_train <= 0 or num_test <= 0 or noise < 0:
            raise ValueError(f"Need num_train > 0, num_test > 0, noise >= 0; got {num_train}, {num_test}, {noise}.")
        self.num_train, self.num_test, self.noise, self.seed = num_train, num_test, noise, seed
        for name, n in (("num_train", num_train), ("num_test", num_test)):  # images and noise: float32
            check_elements((n, *self.input_shape), 4, f"The synthetic {name}={n} images of shape "
                           f"{list(self.input_shape)}", f"reduce dataset.{name} or dataset.input_shape")
        validation_count(self.val_size, num_train, self.name)  # the sizes are known: fail before training starts

    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed)
        prototypes = torch.rand(self.num_classes, *self.input_shape, generator=generator)
        generator.manual_seed(self.seed + (1 if train else 2))
        n = self.num_train if train else self.num_test
        labels = torch.randint(self.num_classes, (n,), generator=generator)
        noise = torch.randn(n, *self.input_shape, generator=generator)
        return (prototypes[labels] + self.noise * noise).clamp(0.0, 1.0), labels
