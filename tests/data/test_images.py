"""snn.data.images: IDX reading, MNIST-family / CIFAR-10 / synthetic DataModules, clear errors."""

import gzip
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from snn.data import (
    CIFAR10DataModule,
    FashionMNISTDataModule,
    MNISTDataModule,
    SyntheticDataModule,
    read_idx,
)
from snn.data.limits import SizeLimitError
from tests.helpers import compose_config, idx_bytes, write_mnist

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def mnist(tmp_path, **kwargs) -> MNISTDataModule:
    return MNISTDataModule(**{"data_dir": str(tmp_path), "download": False, "val_size": 10, "batch_size": 8, **kwargs})


# --- IDX reading ----------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_plain_and_gzip(tmp_path, gz):
    arrays = write_mnist(tmp_path, gz=gz)
    suffix = ".gz" if gz else ""
    images = read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}")
    assert images.dtype == torch.uint8 and images.shape == (40, 28, 28)
    assert np.array_equal(images.numpy(), arrays["train-images-idx3-ubyte"])


def test_read_idx_big_endian_types(tmp_path):
    values = np.array([[1, -2, 300], [70000, 5, -6]], dtype=">i4")
    (tmp_path / "ints").write_bytes(idx_bytes(values, code=0x0C))
    assert read_idx(tmp_path / "ints").tolist() == [[1, -2, 300], [70000, 5, -6]]
    floats = np.array([0.5, -1.25], dtype=">f4")
    (tmp_path / "floats").write_bytes(idx_bytes(floats, code=0x0D))
    assert read_idx(tmp_path / "floats").tolist() == [0.5, -1.25]


def test_read_idx_names_the_bad_file(tmp_path):
    good = idx_bytes(np.zeros((5, 4, 4), dtype=np.uint8))
    cases = {
        "truncated": (good[:-3], r"truncated.*needs 80 bytes of data, found 77"),
        "too_long": (good + b"\0", "longer than announced"),
        "html": (b"<html>404 not found</html>", r"is not an IDX file.*00 00 <type> <ndim>"),
        "empty": (b"", "is not an IDX file"),
        "header_only": (good[:6], "header announces 3 dimensions"),
        "bad_gzip.gz": (gzip.compress(good)[:-10], "corrupt or truncated gzip"),
    }
    for name, (data, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=message) as error:
            read_idx(path)
        assert str(path) in str(error.value)


def test_a_gzip_that_unpacks_past_the_allocation_limit_is_refused_naming_it(tmp_path, monkeypatch):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((1000, 32, 32), dtype=np.uint8))))  # 1 MB from ~1 kB
    assert read_idx(path).shape == (1000, 32, 32)
    monkeypatch.setenv("SNN_MAX_ALLOC_GB", str(0.5 / 1024))  # 512 kB
    with pytest.raises(ValueError, match=rf"Unpacking {path} would allocate.*SNN_MAX_ALLOC_GB"):
        read_idx(path)


# --- MNIST family ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["data_dir", "torchvision"])
def test_mnist_loads_idx_files_and_splits(tmp_path, layout):
    folder = tmp_path if layout == "data_dir" else tmp_path / "MNIST" / "raw"
    arrays = write_mnist(folder, gz=layout == "data_dir")
    dm = mnist(tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 30 and len(dm.val_set) == 10 and len(dm.test_set) == 12
    train_idx, val_idx = set(dm.train_set.indices.tolist()), set(dm.val_set.indices.tolist())
    assert not train_idx & val_idx and train_idx | val_idx == set(range(40))
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    # The test set is untouched and in file order; pixels are scaled to [0, 1].
    x_test, y_test = next(iter(dm.test_dataloader()))
    assert np.array_equal(y_test.numpy(), arrays["t10k-labels-idx1-ubyte"][:8])
    torch.testing.assert_close(x_test[:, 0], torch.from_numpy(arrays["t10k-images-idx3-ubyte"][:8]).float() / 255)


def test_validation_split_is_fixed_by_split_seed(tmp_path):
    write_mnist(tmp_path)

    def val_indices(split_seed):
        dm = mnist(tmp_path, split_seed=split_seed)
        dm.setup("fit")
        return dm.val_set.indices.tolist()

    torch.manual_seed(1)
    first = val_indices(0)
    torch.manual_seed(2)  # the global seed does not move the split
    assert val_indices(0) == first
    assert val_indices(1) != first


def test_missing_files_without_download_name_folder_files_and_alternative(tmp_path):
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"")  # one file present, three missing
    dm = mnist(tmp_path / ".", download=False)
    with pytest.raises(FileNotFoundError) as error:
        dm.prepare_data()
    message = str(error.value)
    assert str(tmp_path.resolve()) in message and str((tmp_path / "MNIST" / "raw").resolve()) in message
    for name in MNIST_FILES:
        assert name in message
    assert "missing ['train-labels-idx1-ubyte', 't10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte']" in message
    assert "dataset.download=true" in message and "dataset=fashion_mnist" in message
    with pytest.raises(FileNotFoundError, match="MNIST not found"):
        dm.setup("fit")  # the same message when prepare_data was skipped


def test_failed_download_is_reported_with_the_reason(tmp_path, monkeypatch):
    from torchvision import datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(datasets, "MNIST", offline)
    with pytest.raises(FileNotFoundError) as error:
        mnist(tmp_path, download=True).prepare_data()
    message = str(error.value)
    assert f"Downloading MNIST into {tmp_path.resolve()} failed" in message
    assert "name resolution" in message and "t10k-labels-idx1-ubyte" in message


@pytest.mark.parametrize("module, name", [("MNISTDataModule", "MNIST"), ("FashionMNISTDataModule", "FashionMNIST"),
                                          ("CIFAR10DataModule", "CIFAR10")])
def test_download_asks_torchvision_for_both_splits(tmp_path, monkeypatch, module, name):
    from torchvision import datasets

    from snn.data import images as data

    calls = []
    monkeypatch.setattr(datasets, name, lambda root, train, download: calls.append((root, train, download)))
    getattr(data, module)(data_dir=str(tmp_path)).fetch()
    assert calls == [(str(tmp_path), True, True), (str(tmp_path), False, True)]


def test_download_is_skipped_when_files_exist(tmp_path, monkeypatch):
    from torchvision import datasets

    write_mnist(tmp_path)
    monkeypatch.setattr(datasets, "MNIST", lambda *a, **k: pytest.fail("must not download"))
    mnist(tmp_path, download=True).prepare_data()


def test_inconsistent_files_are_refused(tmp_path):
    write_mnist(tmp_path, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(39, dtype=np.uint8)))
    with pytest.raises(ValueError, match=r"should hold 40 labels"):
        mnist(tmp_path).setup("fit")
    write_mnist(tmp_path, gz=False, size=20)
    with pytest.raises(ValueError, match=r"images have shape \[1, 20, 20\], the config says input_shape \[1, 28, 28\]"):
        mnist(tmp_path).setup("fit")


def test_fashion_mnist_searches_extra_folders(tmp_path):
    extra = tmp_path / "system"
    arrays = write_mnist(extra)
    dm = FashionMNISTDataModule(data_dir=str(tmp_path / "nothing"), search_dirs=[str(extra)], download=False,
                                val_size=0.25)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.val_set) == 10 and dm.locate() == extra
    assert np.array_equal(dm.test_set.labels.numpy(), arrays["t10k-labels-idx1-ubyte"])


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Debian's dataset-fashion-mnist is not installed")
def test_debian_fashion_mnist_is_found_by_the_config_default():
    from hydra.utils import instantiate

    cfg = compose_config("dataset=fashion_mnist", "paths.data_dir=/nonexistent", "dataset.download=false")
    dm = instantiate(cfg.dataset)
    dm.prepare_data()
    assert dm.locate() == FASHION_DIR


@pytest.mark.parametrize("kwargs,message", [
    (dict(batch_size=0), "batch_size"),
    (dict(num_workers=-1), "num_workers"),
    (dict(val_size=1.5), "val_size"),
    (dict(val_size=0), "val_size"),
])
def test_bad_loader_settings(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        mnist(tmp_path, **kwargs)


def test_val_size_larger_than_training_set(tmp_path):
    write_mnist(tmp_path)
    with pytest.raises(ValueError, match="leaves no training data"):
        mnist(tmp_path, val_size=40).setup("fit")


# --- CIFAR-10 -------------------------------------------------------------------------------------


def write_cifar(folder: Path, per_batch: int = 6) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, name in enumerate(CIFAR10DataModule.files):
        batch = {
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": [(i + j) % 10 for j in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(batch))


def test_cifar10_reads_python_batches_and_augments_only_training_images(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    dm = CIFAR10DataModule(data_dir=str(tmp_path), download=False, val_size=6, batch_size=4)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.train_set) == 24 and len(dm.val_set) == 6 and len(dm.test_set) == 6
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (4, 3, 32, 32) and y.tolist() == [5, 6, 7, 8]
    assert dm.train_set.transform is not None and dm.val_set.transform is None
    image, _ = dm.train_set[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.uint8


def test_cifar10_corrupt_batch_and_missing_files(tmp_path):
    write_cifar(tmp_path / "cifar-10-batches-py")
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"data_batch_3 is not a CIFAR-10 python batch"):
        CIFAR10DataModule(data_dir=str(tmp_path), download=False).setup("fit")
    with pytest.raises(FileNotFoundError, match=r"CIFAR-10 not found.*data_batch_1.*test_batch"):
        CIFAR10DataModule(data_dir=str(tmp_path / "empty"), download=False).prepare_data()


class _WritesMarker:
    """A pickle payload: unpickling it calls pathlib.Path.touch on a marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_cifar10_batches_are_read_as_data_and_a_code_payload_is_refused(tmp_path):
    """A downloaded CIFAR-10 batch is unpickled with an allowlist (numpy arrays only): a file that
    names any other function is refused by name and nothing in it runs."""
    write_cifar(tmp_path / "cifar-10-batches-py")
    marker = tmp_path / "marker"
    batch = {b"data": np.zeros((6, 3072), dtype=np.uint8), b"labels": [0] * 6, b"x": _WritesMarker(marker)}
    (tmp_path / "cifar-10-batches-py" / "data_batch_2").write_bytes(pickle.dumps(batch))
    with pytest.raises(ValueError, match=r"data_batch_2 is not a CIFAR-10 python batch.*Path"):
        CIFAR10DataModule(data_dir=str(tmp_path), download=False).setup("fit")
    assert not marker.exists()


# --- synthetic ------------------------------------------------------------------------------------


def test_synthetic_data_is_deterministic_and_class_dependent():
    def load():
        dm = SyntheticDataModule(input_shape=(1, 6, 6), num_classes=3, num_train=300, num_test=60, noise=0.1,
                                 val_size=60)
        dm.setup("fit")
        return dm

    a, b = load(), load()
    assert torch.equal(a.train_set.images, b.train_set.images) and torch.equal(a.test_set.labels, b.test_set.labels)
    assert len(a.train_set) == 240 and len(a.val_set) == 60 and len(a.test_set) == 60
    x, y = a.train_set.images, a.train_set.labels
    assert x.shape == (300, 1, 6, 6) and 0 <= x.min() and x.max() <= 1 and set(y.tolist()) == {0, 1, 2}
    # Same-class samples are closer to their class mean than to other classes' means.
    means = torch.stack([x[y == k].mean(0) for k in range(3)]).flatten(1)
    nearest = torch.cdist(x.flatten(1), means).argmin(1)
    assert (nearest == y).float().mean() > 0.95


def test_synthetic_sizes_beyond_the_allocation_limit_are_refused_from_the_config():
    with pytest.raises(SizeLimitError, match=r"synthetic num_train=1000000000000 images.*SNN_MAX_ALLOC_GB"):
        SyntheticDataModule(num_train=10**12)


def test_a_failed_download_leaves_no_folder_it_created(tmp_path, monkeypatch):
    """torchvision makes data/MNIST/raw, then finds no network: nothing of it stays (an empty
    data/MNIST/raw was left by an offline `python train.py`); folders that were there stay."""
    import torchvision.datasets.utils as tv_utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(tv_utils.urllib.request, "urlopen", offline)
    monkeypatch.setattr(tv_utils, "_get_redirect_url", lambda url, max_hops=3: url, raising=False)
    with pytest.raises(FileNotFoundError, match="Downloading MNIST into .* failed"):
        mnist(tmp_path / "data", download=True).prepare_data()
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "mine" / "MNIST").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="Downloading MNIST"):
        mnist(tmp_path / "mine", download=True).prepare_data()
    assert [str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")] == ["mine", "mine/MNIST"]


def test_removing_new_folders_keeps_what_existed_or_holds_files(tmp_path):
    from snn.data.download import removing_new_folders

    (tmp_path / "old").mkdir()
    with pytest.raises(OSError), removing_new_folders(tmp_path / "old" / "a" / "b", tmp_path / "new" / "c"):
        (tmp_path / "old" / "a" / "b").mkdir(parents=True)
        (tmp_path / "new" / "c").mkdir(parents=True)
        (tmp_path / "new" / "kept.txt").write_text("partial")
        raise OSError("the network went away")
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == ["new", "new/kept.txt", "old"]
    with removing_new_folders(tmp_path / "fine"):  # no failure: nothing is removed
        (tmp_path / "fine").mkdir()
    assert (tmp_path / "fine").is_dir()
