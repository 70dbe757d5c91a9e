"""What several test modules share: composing configs, hooking a callback into the Trainer of snn.training.run.fit,
writing IDX files, comparing gradients. Test modules import from here, never from each other."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def compose_config(*overrides: str, hydra: bool = False):
    """``conf/config.yaml`` composed with ``overrides`` (and Hydra's own node with ``hydra``)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def make_cfg(tmp_path: Path, *overrides: str, hydra: bool = False):
    """The config of a run whose outputs go to ``tmp_path`` and data to ``tmp_path/data``."""
    return compose_config(f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}", *overrides,
                          hydra=hydra)


def with_callback(monkeypatch, callback) -> None:
    """Makes ``snn.training.run.fit`` add ``callback`` to the Trainer it builds."""
    import snn.training.run.fitting as fitting

    build = fitting.build

    def build_with_callback(cfg):
        module, datamodule, trainer = build(cfg)
        trainer.callbacks.append(callback)
        return module, datamodule, trainer

    monkeypatch.setattr(fitting, "build", build_with_callback)


def idx_bytes(array: np.ndarray, code: int = 0x08) -> bytes:
    """The IDX encoding of ``array``, written out by hand: 0 0 code ndim, big-endian dims, data."""
    header = struct.pack(">BBBB", 0, 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_mnist(folder: Path, n_train: int = 40, n_test: int = 12, gz: bool = True, size: int = 28) -> dict:
    """Four small MNIST-format IDX files with known content; returns the arrays."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, size, size), dtype=np.uint8),
        "train-labels-idx1-ubyte": (np.arange(n_train) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, size, size), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test) * 3 % 10).astype(np.uint8),
    }
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)
    return arrays


def assert_close_gradients(ref: dict, got: dict, tolerance: float = 1e-10) -> None:
    """Gradients by name within ``tolerance`` of the largest reference value; where the reference
    has none (no path in its graph: heaviside's v_th only feeds the spike) ``got`` is None or zero."""
    assert ref.keys() == got.keys()
    for name in ref:
        if ref[name] is None:
            assert got[name] is None or not got[name].any(), name
            continue
        assert got[name] is not None and got[name].shape == ref[name].shape, name
        scale = ref[name].abs().max()
        error = (got[name] - ref[name]).abs().max()
        assert error <= tolerance * scale, f"{name}: error {error:.3g} at scale {scale:.3g}"



def weighted_loss(out, final, seed: int = 2):
    """A loss that weighs every output and final state value by its own fixed random weight (a
    plain sum would hide errors that cancel)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    loss = (out * torch.randn(out.shape, generator=g, dtype=out.dtype)).sum()
    for s in final:
        loss = loss + (s * torch.randn(s.shape, generator=g, dtype=s.dtype)).sum()
    return loss


def recurrent_inputs(kind: str, dtype, T: int = 12, B: int = 3, F: int = 3, N: int = 37, seed: int = 1,
                     state: bool = True):
    """Inputs ``[T, B, F]`` for a recurrent ``kind`` ("adex" or "lif") layer of N neurons and, with
    ``state``, an initial state (spikes z, then the neuron's state fields) as a list of ``[B, N]``."""
    import torch

    from snn.neurons import LIFAdExState, LIFState

    g = torch.Generator().manual_seed(seed)
    x = torch.rand(T, B, F, generator=g, dtype=dtype) * 3
    if not state:
        return x, None
    z = (torch.rand(B, N, generator=g, dtype=dtype) > 0.6).to(dtype)
    fields = {"adex": LIFAdExState, "lif": LIFState}[kind]._fields[1:]
    rest = [torch.rand(B, N, generator=g, dtype=dtype) for _ in fields]
    return x, [z, *rest]


def recurrent_layer_classes(kind: str):
    """``(layer class, parameters class, state class)`` of the recurrent ``kind`` ("adex" or "lif")."""
    from snn.neurons import LIFAdExParameters, LIFAdExRecurrent, LIFAdExState, LIFParameters, LIFRecurrent, LIFState

    return {
        "adex": (LIFAdExRecurrent, LIFAdExParameters, LIFAdExState),
        "lif": (LIFRecurrent, LIFParameters, LIFState),
    }[kind]


def make_recurrent_layer(kind, backend, F=3, N=37, method="super", learnable=(), autapses=False, dtype=None,
                         seed=0, params=None):
    """A recurrent ``kind`` layer of N neurons on ``backend`` with seeded excitatory input weights and
    random recurrent weights; ``learnable="all"`` makes every constant learnable, and each neuron's
    learnable constants differ. ``params``: more fields of the parameters (AdEx's integrator, say).
    ``dtype`` defaults to float64."""
    import torch

    dtype = torch.float64 if dtype is None else dtype
    layer_class, params_class, _ = recurrent_layer_classes(kind)
    alpha = 7.0 if method in ("triangle", "sigmoid", "tanh") else 30.0
    fields = [f for f in params_class._fields if f not in ("method", "alpha", "integrator")]
    g = torch.Generator().manual_seed(seed)
    w_in = (torch.rand(N, F, generator=g) * 2 + 0.5) * 0.4 / F  # excitatory input
    w_rec = torch.randn(N, N, generator=g) * 2 / N**0.5
    layer = layer_class(
        F,
        N,
        params_class(method=method, alpha=alpha, **(params or {})),
        autapses=autapses,
        learnable=fields if learnable == "all" else learnable,
        input_weights=w_in,
        recurrent_weights=w_rec,
        backend=backend,
    ).to(dtype)
    with torch.no_grad():  # every neuron's learnable constants differ
        for name in layer.learnable:
            value = getattr(layer, name)
            setattr(layer, name, value * (1 + 0.2 * torch.rand(value.shape, generator=g, dtype=dtype)))
    return layer


def value_grad(layer, name: str):
    """The gradient of learnable constant ``name`` of ``layer`` with respect to its value, from that of
    its raw parameter (the chain rule of the parametrization, undone): what an eager reference that
    takes the value itself as a leaf computes."""
    import torch

    from snn.neurons.module import parametrization

    raw, init = getattr(layer, f"{name}_raw"), getattr(layer, f"{name}_init")
    if raw.grad is None:
        return None
    if parametrization(name) == "log":  # value = init * exp(raw): d value / d raw = value
        return raw.grad / layer.constant(name).detach()
    return raw.grad / torch.where(init == 0, torch.ones_like(init), init.abs()).to(raw.dtype)  # init + |init| raw


def on_ci() -> bool:
    """Whether the tests run in CI (``CI`` set to a true value, as CI services and .ci/run set it)."""
    import os

    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(what: str, why: object) -> None:
    """Skips the test where ``what`` cannot run on this machine, but fails it in CI, which installs
    what it needs (.ci/run: a C++ compiler, ninja, a BLAS through torch): a CI machine that lost one
    must not pass by skipping every test of it."""
    import pytest

    if on_ci():
        pytest.fail(f"{what} unavailable in CI, which installs what it needs: {why}", pytrace=False)
    pytest.skip(f"{what} unavailable on this machine ({why}); CI (CI=true) fails here instead of skipping")


def require_cpp_kernels():
    """The C++ kernels' library, built if needed; skips the test without a compiler (fails in CI)."""
    from snn.neurons.fused.cpp import build

    try:
        return build.load_library()
    except RuntimeError as error:
        unavailable("C++ kernels", error)


def require_native_recurrent() -> None:
    """The native recurrent loops need the library and the BLAS GEMM it found (torch's)."""
    from snn.neurons.fused.cpp import recurrent

    require_cpp_kernels()
    if not recurrent.native_available():
        unavailable("the native recurrent loops", "the C++ library found no BLAS GEMM")


def fit_and_recheck(cfg, monkeypatch) -> float:
    """Runs ``cfg`` through the training entry (train=true) and asserts that the validation accuracy it
    returns (``optimized_metric`` val/acc) is the fitted model's accuracy on the validation batches it
    was measured on, recomputed here from the model's own predictions: a run that reports a metric
    of something else (wrong labels, another model, a decoding mismatch, a stale checkpoint) fails.
    For runs whose best epoch is their last (one epoch, or ``debug=fdr``): a test after the fit
    reloads the best checkpoint into the module."""
    import lightning as L
    import torch

    from snn.training.run import run as train

    class Keep(L.Callback):  # what the fit ended with: its module, data and number of validation batches
        module = datamodule = None
        val_batches = 0

        def on_fit_end(self, trainer, pl_module):
            self.module, self.datamodule = pl_module, trainer.datamodule
            self.val_batches = int(trainer.num_val_batches[0]) if trainer.num_val_batches else 0

    kept = Keep()
    with_callback(monkeypatch, kept)
    value = train(cfg)
    assert cfg.optimized_metric == "val/acc" and kept.module is not None and kept.val_batches > 0
    module = kept.module.eval()
    dtype = next(module.parameters()).dtype
    correct = total = 0
    with torch.no_grad():
        for i, (x, y) in enumerate(kept.datamodule.val_dataloader()):
            if i == kept.val_batches:
                break
            x = x.to(module.device, dtype=dtype if x.is_floating_point() else x.dtype)
            correct += int((module(x).argmax(-1) == y.to(module.device)).sum())
            total += y.numel()
    # float32 metric vs an exact count: the same count of correct predictions, not another one
    assert total > 0 and abs(value - correct / total) < 0.5 / total, (value, correct, total)
    return value


# The short training that tests/conftest.py's session fixture ``trained_run`` runs once for the tests
# that need a checkpoint of our own model: synthetic data ([1, 8, 8], 4 classes), one epoch, the test
# set evaluated after fitting and logged to CSV; constant-current input, so the checkpoint's test
# accuracy is the same whenever it is evaluated again.
TRAINED_RUN = ["dataset=synthetic", "model.T=6", "model.hidden=16", "model.conv=null", "model.encoder.kind=constant",
               "model.dropout=0.2", "trainer.max_epochs=1", "trainer.accelerator=cpu", "logger=csv", "test=true",
               "callbacks.spike_raster=null", "callbacks.progress_bar=null"]


def logged_test_acc(run_dir: Path) -> float:
    """The test accuracy a run with ``logger=csv`` logged after fitting (its best checkpoint's)."""
    import csv

    with open(run_dir / "csv" / "metrics.csv") as f:
        (value,) = [float(row["test/acc"]) for row in csv.DictReader(f) if row.get("test/acc")]
    return value
