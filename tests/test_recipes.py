"""The accuracy recipes (conf/experiment): what they compose to, the MNIST recipe end to end on IDX
files, Fashion-MNIST augmentation, the ablation script's variants, and AdEx and LIF recipes of the
memory tasks and sequential images being the same network but for the neurons."""

import csv
import gzip
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from snn.data import FashionMNISTDataModule
from snn.errors import ConfigError
from snn.training.run import build
from snn.training.run import run as train
from tests.helpers import ROOT, compose_config, fit_and_recheck, idx_bytes, make_cfg

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def test_lif_recipe_is_the_adex_recipe_with_lif_neurons():
    adex = OmegaConf.to_container(compose_config("experiment=fashion_mnist_adex", "paths.output_dir=x"), resolve=True)
    lif = OmegaConf.to_container(compose_config("experiment=fashion_mnist_lif", "paths.output_dir=x"), resolve=True)
    assert adex["model"]["neuron"]["kind"] == "adex" and lif["model"]["neuron"]["kind"] == "lif"
    # Everything but the neuron (architecture, data, augmentation, optimiser, epochs, seed) is shared.
    adex["model"].pop("neuron"), lif["model"].pop("neuron")
    assert adex == lif
    # The LIF neurons share every constant they have with the AdEx ones.
    a = compose_config("experiment=fashion_mnist_adex").model.neuron
    b = compose_config("experiment=fashion_mnist_lif").model.neuron
    assert all(a[k] == b[k] for k in b if k != "kind")


def test_fashion_recipe_is_the_main_job():
    assert "experiment=fashion_mnist_adex" in (ROOT / "Makefile").read_text()
    cfg = compose_config("experiment=fashion_mnist_adex")
    assert cfg.dataset._target_ == "snn.data.FashionMNISTDataModule"
    assert cfg.model.encoder.kind == "constant"  # the conv front end runs once per image
    assert cfg.optimized_metric == "val/acc" and cfg.callbacks.model_checkpoint.monitor == "val/acc"


def write_mnist_like(folder: Path, n_train: int, n_test: int) -> None:
    """Gzipped IDX files of 28x28 digits-like images: class k lights up row block k."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 60, (n, 28, 28), dtype=np.uint8)
        for i, k in enumerate(labels):
            images[i, 2 * k + 4: 2 * k + 6, 4:24] = 255
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(labels)))


def test_mnist_recipe_runs_end_to_end_on_idx_files(tmp_path, monkeypatch):
    data = tmp_path / "data"
    write_mnist_like(data, n_train=96, n_test=40)
    out = tmp_path / "run"
    cfg = compose_config(
        "experiment=mnist_adex", f"paths.data_dir={data}", f"paths.output_dir={out}", "dataset.download=false",
        "dataset.val_size=32", "dataset.batch_size=32", "trainer.max_epochs=1", "trainer.accelerator=cpu",
        "logger=csv", "model.T=4", "callbacks.progress_bar=null",
    )
    assert cfg.dataset._target_ == "snn.data.MNISTDataModule"
    val_acc = fit_and_recheck(cfg, monkeypatch)  # the model's accuracy on the validation images
    with open(out / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert [float(r["val/acc"]) for r in rows if r.get("val/acc")] == [pytest.approx(val_acc)]
    assert sum(1 for r in rows if r.get("test/acc")) == 1  # the best checkpoint was tested
    assert (out / "checkpoints" / "last.ckpt").is_file() and list((out / "checkpoints").glob("epoch_*.ckpt"))


def test_mnist_recipe_without_files_or_download_says_how_to_get_them(tmp_path):
    cfg = compose_config("experiment=mnist_adex", f"paths.data_dir={tmp_path / 'none'}",
                   f"paths.output_dir={tmp_path / 'run'}", "dataset.download=false", "logger=none")
    with pytest.raises(ConfigError, match="dataset.download=true"):
        train(cfg)


class _FixedImages(FashionMNISTDataModule):
    """Fashion-MNIST's augmentation on 8 known images (no files)."""

    def load(self, train):
        images = torch.zeros(8, 1, 28, 28, dtype=torch.uint8)
        images[:, 0, 10:18, 2:6] = 200  # a bar at the left edge: mirrored, it is at the right
        return images, torch.arange(8) % 10


@pytest.mark.parametrize("flip, crop_padding", [(True, 0), (False, 2), (True, 2)])
def test_fashion_augmentation_changes_training_images_only(flip, crop_padding):
    torch.manual_seed(0)
    dm = _FixedImages(data_dir="unused", val_size=2, flip=flip, crop_padding=crop_padding)
    dm.setup()
    original = dm.train_set.images[dm.train_set.indices[0]]
    seen = torch.stack([dm.train_set[0][0] for _ in range(200)])
    assert seen.shape == (200, 1, 28, 28) and seen.dtype == torch.uint8
    assert (seen != original).flatten(1).any(1).float().mean() > 0.3  # most draws differ
    assert (seen.flatten(1).sum(1) <= original.sum()).all()  # nothing is invented, only moved
    if flip and not crop_padding:
        assert any(torch.equal(s, original.flip(-1)) for s in seen)
    if crop_padding and not flip:
        assert seen[:, 0, :, 6 + crop_padding:].sum() == 0  # shifted by at most crop_padding pixels
    assert torch.equal(dm.val_set[0][0], dm.val_set.images[dm.val_set.indices[0]])  # never augmented
    assert dm.test_set.transform is None


def test_fashion_augmentation_off_by_default_and_checked():
    assert _FixedImages(data_dir="unused").train_transform() is None
    with pytest.raises(ValueError, match="crop_padding"):
        _FixedImages(data_dir="unused", crop_padding=-1)


def test_ablation_variants_compose():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from ablation import VARIANTS

    recipe = compose_config("experiment=fashion_mnist_adex")
    for name, overrides in VARIANTS.items():
        cfg = compose_config("experiment=fashion_mnist_adex", *overrides)
        if overrides:
            assert cfg != recipe, name  # each variant changes something


@pytest.mark.slow
@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Fashion-MNIST is not installed")
def test_fashion_recipe_learns_in_a_few_steps(tmp_path):
    cfg = compose_config("experiment=fashion_mnist_adex", f"paths.output_dir={tmp_path}",
                   f"paths.data_dir={tmp_path / 'data'}", "trainer.max_steps=60", "trainer.val_check_interval=60",
                   "trainer.limit_val_batches=10", "test=false", "logger=none", "callbacks.progress_bar=null")
    assert train(cfg) > 0.6  # 10 classes: chance is 0.1


@pytest.mark.parametrize("task", ["store_recall", "cue_accumulation", "sfmnist", "psfmnist"])
def test_adex_and_lif_recipes_are_the_same_network(tmp_path, task):
    cfgs = {kind: make_cfg(tmp_path, f"experiment={task}_{kind}") for kind in ("adex", "lif")}
    nets = {kind: build(cfg)[0].net for kind, cfg in cfgs.items()}
    counts = {kind: sum(p.numel() for p in net.parameters()) for kind, net in nets.items()}
    assert counts["adex"] == counts["lif"]
    adex, lif = (OmegaConf.to_container(cfgs[k], resolve=True) for k in ("adex", "lif"))
    assert adex["model"].pop("tau_ada_range") == [0.05, 2.0]
    assert lif["model"].pop("tau_ada_range") is None
    neurons = adex["model"].pop("neuron"), lif["model"].pop("neuron")
    assert neurons[0]["kind"] == "adex" and neurons[1]["kind"] == "lif"
    assert {k: v for k, v in neurons[0].items() if k in neurons[1] and k != "kind"} == \
        {k: v for k, v in neurons[1].items() if k != "kind"}
    for key in ("model", "dataset", "optimizer", "trainer", "scheduler", "seed"):
        assert adex[key] == lif[key], key
