"""Loading a checkpoint never runs code from it: not through its pickle, not through the
configs Hydra instantiates from it, on all three load paths: ``load_classifier``, resuming
(``ckpt_path=``) and evaluating (``train=false ckpt_path=``). Our own checkpoints, including ones
written before these checks, load on all three."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import OmegaConf

from snn.errors import ConfigError
from snn.training import (
    CheckpointError,
    SafeCheckpointIO,
    SpikingClassifierModule,
    build_from_config,
    load_checkpoint,
    load_classifier,
)
from snn.training.checkpointing.safe_load import ALLOWED_TARGETS, check_targets
from snn.training.run import run as train
from tests.helpers import make_cfg

SMALL = ["dataset=synthetic", "model.T=6", "model.hidden=16", "model.conv=null", "trainer.accelerator=cpu",
         "logger=none", "test=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """last.ckpt of a real one-epoch run (never modified by the tests)."""
    run = tmp_path_factory.mktemp("trained")
    train(make_cfg(run, *SMALL, "trainer.max_epochs=1"))
    return run / "checkpoints" / "last.ckpt"


def load_on(path_kind: str, ckpt: Path, tmp_path: Path, trust: tuple[str, ...] = ()) -> None:
    """Loads ``ckpt`` the way a user would on ``path_kind``, trusting the packages ``trust``."""
    trust_override = f"trust=[{','.join(trust)}]"
    if path_kind == "load_classifier":
        load_classifier(ckpt, trusted=trust)
    elif path_kind == "load_from_checkpoint":
        SpikingClassifierModule.load_from_checkpoint(ckpt, trusted=trust)
    elif path_kind == "resume":
        train(make_cfg(tmp_path / "resumed", *SMALL, "trainer.max_epochs=2", f"ckpt_path={ckpt}", trust_override))
    else:
        train(make_cfg(tmp_path / "evaluated", *SMALL, "train=false", f"ckpt_path={ckpt}", trust_override))


PATHS = ["load_classifier", "load_from_checkpoint", "resume", "evaluate"]


# --- Our own checkpoints: data only ----------------------------------------------------------------


@pytest.mark.parametrize("writer", ["ours", "before"])
@pytest.mark.parametrize("path_kind", PATHS)
def test_our_checkpoints_load_with_weights_only_on_every_path(tmp_path, trained, writer, path_kind):
    assert torch.load(trained, weights_only=True)["rng_states"]["python"][0] == 3  # plain values throughout
    ckpt = trained
    if writer == "before":  # written the old way: Lightning's own writer, same structure
        ckpt = tmp_path / "old.ckpt"
        TorchCheckpointIO().save_checkpoint(load_checkpoint(trained), ckpt)
    load_on(path_kind, ckpt, tmp_path)


def test_hyperparameters_given_as_omegaconf_configs_are_stored_as_plain_values(tmp_path, trained):
    checkpoint = load_checkpoint(trained)
    checkpoint["hyper_parameters"]["net"] = OmegaConf.create(checkpoint["hyper_parameters"]["net"])
    SafeCheckpointIO().save_checkpoint(checkpoint, tmp_path / "plain.ckpt")
    assert type(torch.load(tmp_path / "plain.ckpt", weights_only=True)["hyper_parameters"]["net"]) is dict
    load_classifier(tmp_path / "plain.ckpt")

    # Written with torch.save as is, the file needs OmegaConf's class: refused, the message names it.
    torch.save(checkpoint, tmp_path / "omegaconf.ckpt")
    with pytest.raises(CheckpointError, match=r"refers to omegaconf\.dictconfig\.DictConfig, but a checkpoint "
                                              r"may hold only tensors and plain values"
                                              r".*OmegaConf.to_container") as error:
        load_classifier(tmp_path / "omegaconf.ckpt")
    assert "\n" not in str(error.value)


# --- Hostile checkpoints ---------------------------------------------------------------------------


class Payload:
    """Unpickling this calls ``function(argument)``: the classic pickle exploit."""

    def __init__(self, function, argument):
        self.function, self.argument = function, argument

    def __reduce__(self):
        return self.function, (self.argument,)


def write_marker_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def hostile(kind: str, trained: Path, folder: Path) -> tuple[Path, str]:
    """A copy of a real checkpoint that would write ``folder/marker`` when loaded unsafely, and the
    error it must be refused with."""
    checkpoint = load_checkpoint(trained)
    marker = folder / "marker"
    # Targets that Hydra's own blocklist lets through (it is no trust boundary): each writes the marker.
    hparams = checkpoint["hyper_parameters"]
    if kind == "pickle: exec":
        checkpoint["callbacks"]["evil"] = Payload(exec, write_marker_code(marker))
        expected = r"refers to builtins\.exec, but a checkpoint may hold only tensors"
    elif kind == "pickle: os.system":
        checkpoint["rng_states"]["python"] = Payload(os.system, f"touch {marker}")
        expected = rf"refers to {os.system.__module__}\.system, but a checkpoint"
    elif kind == "net _target_":
        hparams["net"] = {"_target_": "builtins.open", "_args_": [str(marker), "w"]}
        expected = (r"asks to build 'builtins.open' \(hyper_parameters\['net'\]\['_target_'\]\), "
                    r"but a checkpoint may only build snn.models classes")
    elif kind == "nested _target_":
        path = {"_target_": "pathlib.Path", "_args_": [str(marker)]}
        hparams["net"]["encoder"] = {"_target_": "pathlib.Path.touch", "_args_": [path]}
        expected = r"asks to build 'pathlib.Path.touch' \(hyper_parameters\['net'\]\['encoder'\]\['_target_'\]\)"
    elif kind == "optimizer _target_":  # the LightningModule instantiates it when evaluating
        hparams["optimizer"] = {"_target_": "io.open", "_args_": [str(marker), "w"], "_partial_": False}
        expected = (r"asks to build 'io.open' \(hyper_parameters\['optimizer'\]\['_target_'\]\), "
                    r"but a checkpoint may only build torch.optim optimizers")
    elif kind == "interpolation":
        hparams["net"]["T"] = "${oc.env:HOME}"
        expected = r"carries the config interpolation '\$\{oc.env:HOME\}' at hyper_parameters\['net'\]\['T'\]"
    path = folder / "hostile.ckpt"
    torch.save(checkpoint, path)  # as an attacker would: torch.save runs no check
    return path, expected


KINDS = ["pickle: exec", "pickle: os.system", "net _target_", "nested _target_", "optimizer _target_", "interpolation"]


@pytest.mark.parametrize("kind", KINDS[:-1])
def test_the_hostile_checkpoints_would_run_their_payload_when_loaded_unsafely(tmp_path, trained, kind):
    """What the refusals below prevent: each file really writes the marker when trusted."""
    path, _ = hostile(kind, trained, tmp_path)
    checkpoint = torch.load(path, weights_only=False)
    if not kind.startswith("pickle"):
        hparams = checkpoint["hyper_parameters"]
        try:  # the payload runs first; then building the model may fail
            build_from_config(hparams["optimizer"] if kind.startswith("optimizer") else hparams["net"], "model")
        except Exception:
            pass
    assert (tmp_path / "marker").exists()


@pytest.mark.parametrize("trust", [(), ("mynet", "mypkg.optim.Lion")])
@pytest.mark.parametrize("path_kind", PATHS)
@pytest.mark.parametrize("kind", KINDS)
def test_hostile_checkpoints_are_refused_on_every_path_and_run_nothing(tmp_path, trained, kind, path_kind, trust):
    """Refused as well when the user trusts their own code (trust=[...]): that opt-in extends to
    the packages it names, nothing else."""
    path, expected = hostile(kind, trained, tmp_path)
    error_type = CheckpointError if path_kind.startswith("load_") else ConfigError
    with pytest.raises(error_type, match=rf"{path} {expected}" if kind.startswith("pickle") else expected) as error:
        load_on(path_kind, path, tmp_path, trust)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "marker").exists()
    assert not (tmp_path / "resumed" / "checkpoints").exists() and not (tmp_path / "evaluated" / "checkpoints").exists()


@pytest.mark.parametrize("trust", [(), ("mynet",)])
def test_evaluation_refuses_a_hostile_data_set_config_in_the_checkpoint(tmp_path, trained, trust):
    """Evaluation builds the data set the checkpoint's run config names: it is checked like the model."""
    checkpoint = load_checkpoint(trained)
    marker = tmp_path / "marker"
    checkpoint["hyper_parameters"]["config"]["dataset"] = {"_target_": "builtins.open", "_args_": [str(marker), "w"]}
    torch.save(checkpoint, tmp_path / "hostile.ckpt")
    with pytest.raises(ConfigError, match=r"asks to build 'builtins.open' \(hyper_parameters\['config'\]\['dataset'\]"
                                          r"\['_target_'\]\), but a checkpoint may only build snn data modules"):
        load_on("evaluate", tmp_path / "hostile.ckpt", tmp_path, trust)
    assert not marker.exists()


def test_lightnings_own_reads_refuse_a_pickle_payload(tmp_path, trained):
    """ckpt_path= resumes and trainer.test(ckpt_path=) read through SafeCheckpointIO, which unpickles
    with weights_only=True even when asked otherwise."""
    path, _ = hostile("pickle: exec", trained, tmp_path)
    with pytest.raises(CheckpointError, match=r"refers to builtins\.exec"):
        SafeCheckpointIO().load_checkpoint(path, weights_only=False)
    assert not (tmp_path / "marker").exists()


def test_the_target_allowlist_is_our_model_classes(trained):
    assert {"snn.models.SpikingClassifier", "snn.models.SpikingConvClassifier", "snn.models.PoissonEncoder",
            "snn.models.classifiers.SpikingClassifier"} <= ALLOWED_TARGETS["net"]
    assert not any(t.startswith(("builtins", "os", "torch")) for t in ALLOWED_TARGETS["net"])
    assert "torch.optim.AdamW" in ALLOWED_TARGETS["optimizer"]
    assert "torch.optim.lr_scheduler.CosineAnnealingLR" in ALLOWED_TARGETS["scheduler"]
    # A copy with an allowed nested _target_ is accepted (Hydra would build that class).
    checkpoint = copy.deepcopy(load_checkpoint(trained))
    checkpoint["hyper_parameters"]["net"]["nested"] = {"_target_": "snn.models.PoissonEncoder", "T": 4}
    check_targets(checkpoint["hyper_parameters"], "x.ckpt")
