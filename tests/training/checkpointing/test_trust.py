"""A researcher's own model, optimizer and scheduler (a package outside snn, its config on
hydra.searchpath) train, resume, evaluate and reload once the user says they trust them
(trust=[...] / trusted=[...]); without that, and for anything else, checkpoints stay data."""

from __future__ import annotations

import sys

import pytest
import torch

from snn.errors import ConfigError
from snn.training import CheckpointError, SpikingClassifierModule, load_checkpoint, load_classifier
from snn.training.checkpointing.safe_load import trusted_names
from snn.training.run import run as train
from tests.helpers import logged_test_acc, make_cfg
from tests.user_package import user_overrides, write_user_package

TINY = ["dataset=synthetic", "dataset.num_train=192", "dataset.val_size=64", "dataset.num_test=64",
        "trainer.accelerator=cpu", "logger=none", "test=false", "callbacks.spike_raster=null",
        "callbacks.progress_bar=null"]
REFUSED = (r"asks to build 'mynet.MyNet' \(hyper_parameters\['net'\]\['_target_'\]\), but a checkpoint may only "
           r"build snn.models classes or classes you trust.*allow it: trust=\[mynet\] on train.py's command line")


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The user's package on sys.path and a checkpoint of one epoch of their model, trained with
    trust=[mynet] in its config (which the file then carries: it must never count)."""
    root = tmp_path_factory.mktemp("user")
    code, conf = write_user_package(root)
    sys.path.insert(0, str(code))
    overrides = [*user_overrides(conf), *TINY]
    # Tested after fitting, logged to CSV: what evaluating the checkpoint must reproduce.
    train(make_cfg(root / "run", *overrides, "trainer.max_epochs=1", "trust=[mynet]", "test=true", "logger=csv"))
    yield root / "run" / "checkpoints" / "last.ckpt", overrides
    sys.path.remove(str(code))
    for name in [m for m in sys.modules if m == "mynet" or m.startswith("mynet.")]:
        del sys.modules[name]


def test_the_users_checkpoint_is_refused_until_they_trust_their_code(tmp_path, user):
    ckpt, overrides = user
    assert load_checkpoint(ckpt, trusted="mynet")["hyper_parameters"]["config"]["trust"] == ["mynet"]
    with pytest.raises(CheckpointError, match=REFUSED):  # the file's own trust list counts for nothing
        load_classifier(ckpt)
    with pytest.raises(CheckpointError, match=REFUSED):
        SpikingClassifierModule.load_from_checkpoint(ckpt)
    with pytest.raises(ConfigError, match=REFUSED):
        train(make_cfg(tmp_path / "resumed", *overrides, "trainer.max_epochs=2", f"ckpt_path={ckpt}"))
    with pytest.raises(ConfigError, match=REFUSED):
        train(make_cfg(tmp_path / "evaluated", "train=false", f"ckpt_path={ckpt}", "logger=none"))
    # Trusting the model class alone leaves the optimizer refused, named.
    with pytest.raises(CheckpointError, match=r"asks to build 'mynet.optim.Signum' \(hyper_parameters\['optimizer'\]"):
        load_classifier(ckpt, trusted=["mynet.MyNet"])


def test_with_the_opt_in_it_reloads_resumes_and_evaluates(tmp_path, user):
    ckpt, overrides = user
    net = load_classifier(ckpt, trusted=["mynet"])
    assert type(net).__module__ == "mynet" and not net.training
    exact = load_classifier(ckpt, trusted=["mynet.MyNet", "mynet.optim.Signum", "mynet.optim.Halving"])
    x = torch.rand(3, 1, 8, 8)
    torch.testing.assert_close(net(x), exact(x))
    module = SpikingClassifierModule.load_from_checkpoint(ckpt, trusted=["mynet"])
    assert type(module.configure_optimizers()["optimizer"]).__name__ == "Signum"

    train(make_cfg(tmp_path / "resumed", *overrides, "trainer.max_epochs=2", f"ckpt_path={ckpt}", "trust=[mynet]"))
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt", trusted="mynet")
    assert resumed["epoch"] == 1 and resumed["lr_schedulers"][0]["last_epoch"] == 2
    # Halving: lr 0.01 -> 0.005 -> 0.0025 after two epochs, the second one resumed.
    assert resumed["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(0.0025)

    # Evaluation needs neither the model nor the data set on the command line: the checkpoint has both.
    accuracy = train(make_cfg(tmp_path / "evaluated", "train=false", f"ckpt_path={ckpt}", "trust=[mynet]",
                              "trainer.accelerator=cpu", "logger=none"))
    assert accuracy == logged_test_acc(ckpt.parents[1])  # one epoch: last.ckpt is the best the fit tested


def test_fine_tuning_takes_only_the_weights_and_needs_no_trust(tmp_path, user):
    """init_from= builds the model from the user's own config and takes only tensors from the file:
    no trust=[...] is needed, and the file's configs are never built, whatever they name."""
    ckpt, overrides = user
    train(make_cfg(tmp_path / "tuned", *overrides, "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                   f"init_from={ckpt}", "optimizer.lr=1e-12"))
    start = load_checkpoint(ckpt, trusted="mynet")["state_dict"]
    tuned = load_checkpoint(tmp_path / "tuned" / "checkpoints" / "last.ckpt", trusted="mynet")["state_dict"]
    for name, value in start.items():  # one step at lr 1e-12 from the checkpoint's weights
        torch.testing.assert_close(tuned[name], value, rtol=1e-6, atol=1e-9)

    # A file whose configs name anything at all: its weights are still only tensors, and nothing is built.
    hostile = torch.load(ckpt, weights_only=True)
    hostile["hyper_parameters"]["net"]["_target_"] = "os.system"
    hostile["hyper_parameters"]["optimizer"] = {"_target_": "subprocess.run", "args": ["touch", "pwned"]}
    torch.save(hostile, tmp_path / "hostile.ckpt")
    train(make_cfg(tmp_path / "tuned2", *overrides, "trainer.max_epochs=1", "trainer.limit_train_batches=1",
                   f"init_from={tmp_path / 'hostile.ckpt'}"))
    assert not (tmp_path / "pwned").exists() and not any(tmp_path.rglob("pwned"))


@pytest.mark.parametrize("entry", ["os", "builtins", "subprocess.run", "pathlib.Path", "torch", "hydra", "snn",
                                   "", "my net", "mynet.", "1abc",
                                   # issue 29: subpackages of frameworks, other installed libraries, snn, __main__
                                   "torch.utils", "torch.optim.Lion", "hydra.utils", "snn.data", "__main__",
                                   "lightning_fabric", "torchvision", "setuptools", "_pytest", "yaml"])
def test_trust_never_extends_to_the_standard_library_whole_frameworks_or_non_names(tmp_path, entry):
    with pytest.raises(ValueError, match=rf"trust entry {entry!r} (names|is not a Python name)"):
        trusted_names([entry])
    with pytest.raises(ConfigError, match="trust entry"):
        train(make_cfg(tmp_path, *TINY, f"trust=[{entry!r}]" if entry else "trust=['']"))
    assert trusted_names(["mynet", "mynet.layers", "mypkg.optim.Lion"]) == ("mynet", "mynet.layers", "mypkg.optim.Lion")
    if entry and " " not in entry and not entry.endswith(".") and not entry[0].isdigit():
        with pytest.raises(ValueError, match=r"trust is for your own code"):
            trusted_names([entry])


def test_a_users_own_datamodule_without_shapes_evaluates(tmp_path, user):
    # Blobs declares neither input_shape nor num_classes: the checkpoint's model carries the shapes, and
    # without model= on the command line the default model's ${dataset.input_shape} must not be resolved.
    _, overrides = user
    blobs = [o for o in overrides if not o.startswith(("dataset", "model="))] + ["dataset=blobs", "trust=[mynet]"]
    train(make_cfg(tmp_path / "run", *blobs, "model=mynet", "model.input_shape=[4]", "model.num_classes=2",
                   "trainer.max_epochs=1", "test=true", "logger=csv"))
    trained = tmp_path / "run" / "checkpoints" / "last.ckpt"
    accuracy = train(make_cfg(tmp_path / "evaluated", *blobs, "model=mynet", "train=false", f"ckpt_path={trained}"),
                     overrides=["dataset=blobs", "model=mynet"])
    assert accuracy == logged_test_acc(tmp_path / "run")  # the fit's own test of this checkpoint (one epoch)
    # model.T= is a single value of the checkpoint's model config (so T=2 here, another accuracy), read
    # from the default model's unresolved config: it must not resolve ${dataset.input_shape}.
    train(make_cfg(tmp_path / "evaluated_T2", *blobs, "model.T=2", "train=false", f"ckpt_path={trained}"),
          overrides=["dataset=blobs", "model.T=2"])
