"""Sequential images (snn/data/sequential_images.py): pixels row by row, fixed permutations saved in
checkpoints, pixels as spikes, the recipes' short training runs."""

from __future__ import annotations

import pytest
import torch

from snn.data.limits import SizeLimitError
from snn.data.sequential_images import (
    SequentialFashionMNISTDataModule,
    SequentialMNISTDataModule,
    pixel_permutation,
)
from snn.models.encoders import LatencyEncoder
from tests.helpers import fit_and_recheck, make_cfg, write_mnist


def sequential(tmp_path, cls=SequentialFashionMNISTDataModule, **kwargs):
    dm = cls(data_dir=str(tmp_path), download=False, val_size=10, batch_size=6, num_classes=10,
             **kwargs)
    dm.prepare_data()
    dm.setup()
    return dm


@pytest.mark.parametrize("cls", [SequentialFashionMNISTDataModule, SequentialMNISTDataModule])
def test_sequences_are_the_pixels_row_by_row(tmp_path, cls):
    arrays = write_mnist(tmp_path)
    dm = sequential(tmp_path, cls)
    x, y = next(iter(dm.test_dataloader()))
    assert x.shape == (6, 784, 1) and dm.input_shape == (784, 1)
    images = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][:6]).float() / 255
    torch.testing.assert_close(x[..., 0], images.flatten(1))
    assert y.tolist() == arrays["t10k-labels-idx1-ubyte"][:6].tolist()


def test_permutation_is_fixed_by_its_seed_and_saved_in_checkpoints(tmp_path):
    arrays = write_mnist(tmp_path)
    dm = sequential(tmp_path, permute=True, permutation_seed=5)
    assert torch.equal(dm.permutation, pixel_permutation(5))
    assert not torch.equal(pixel_permutation(5), pixel_permutation(6))
    assert sorted(dm.permutation.tolist()) == list(range(784))
    x, _ = next(iter(dm.test_dataloader()))
    again, _ = next(iter(dm.test_dataloader()))
    images = torch.from_numpy(arrays["t10k-images-idx3-ubyte"][:6]).float().flatten(1) / 255
    torch.testing.assert_close(x[..., 0], images[:, dm.permutation])
    assert torch.equal(x, again)  # the same order for every batch
    # The checkpoint's permutation wins over the one the seed draws.
    restored = sequential(tmp_path, permute=True, permutation_seed=6)
    restored.load_state_dict(dm.state_dict())
    assert torch.equal(next(iter(restored.test_dataloader()))[0], x)
    with pytest.raises(ValueError, match="permute"):
        sequential(tmp_path).load_state_dict(dm.state_dict())


def test_pixels_as_spikes_through_the_encoders(tmp_path):
    write_mnist(tmp_path)
    dm = sequential(tmp_path, T=2352, input_shape=(2352, 1),
                    pixels={"kind": "latency", "steps_per_pixel": 3, "threshold": 0.1})
    x, _ = next(iter(dm.test_dataloader()))
    plain, _ = next(iter(sequential(tmp_path).test_dataloader()))
    # Each pixel gets its own 3 steps, in pixel order: the latency code of that pixel alone.
    expected = LatencyEncoder(3, threshold=0.1)(plain[..., 0])  # [3, B, 784]
    assert torch.equal(x.view(6, 784, 3), expected.permute(1, 2, 0))
    assert 0 < expected[0].sum() < expected.sum()  # some pixels fire late: the order matters
    with pytest.raises(ValueError, match="dataset.T=1568"):
        sequential(tmp_path, pixels={"steps_per_pixel": 2})


@pytest.mark.parametrize("experiment", ["sfmnist_adex", "psfmnist_lif"])
def test_sequential_image_recipes_run_a_few_steps(tmp_path, monkeypatch, experiment):
    write_mnist(tmp_path / "data")
    cfg = make_cfg(tmp_path, f"experiment={experiment}", "debug=fdr", "model.hidden=[8]",
                   "dataset.download=false", "dataset.val_size=10", "dataset.batch_size=4")
    fit_and_recheck(cfg, monkeypatch)  # the reported accuracy is the sequence model's on the pixel sequences


def test_a_batch_beyond_the_allocation_limit_is_refused_from_the_config(tmp_path):
    with pytest.raises(SizeLimitError, match=r"batch of 64 sequences .*steps_per_pixel.*SNN_MAX_ALLOC_GB"):
        SequentialMNISTDataModule(T=784 * 10**6, input_shape=(784 * 10**6, 1), data_dir=str(tmp_path),
                                  pixels={"kind": "constant", "steps_per_pixel": 10**6}, batch_size=64)
