"""Trust grants the user's own classes, nothing reachable through them (issue 29).

A throwaway user package ``gadgetpkg`` re-exports modules, as real packages do (``import torch``,
``import numpy as np``, ``import os``, ``from torch import nn``, ``from pathlib import Path``, a
subpackage that imports ``pathlib``). Every path through those re-exports to a callable that writes
a file or loads a library is refused in a checkpoint's configs on five load paths (train.py's
fit/resume and evaluate; ``load_checkpoint``, ``load_classifier``, ``load_module``), with and without
``trust=[gadgetpkg]``; the sixth, ``init_from``, never reads the file's configs (it takes only its
tensors). On all six no file appears and no library is loaded.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate

from snn.errors import ConfigError
from snn.training import CheckpointError, load_checkpoint, load_classifier, load_module
from snn.training.checkpointing.safe_load import check_targets
from snn.training.run import run as train
from tests.helpers import make_cfg

SMALL = ["dataset=synthetic", "model.T=6", "model.hidden=16", "model.conv=null", "trainer.accelerator=cpu",
         "logger=none", "test=false"]

PACKAGE = '''
"""A user's package that, like most, imports what it uses."""
import os
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import sub


class Net(nn.Module):
    """The user's own class: what trust=[gadgetpkg] is for."""
'''
SUBPACKAGE = '''
import pathlib
import os
'''

# Re-exported modules (and a re-exported class) of gadgetpkg, and what each reaches.
PREFIXES = {"torch": "torch", "np": "numpy", "os": "os", "sub.pathlib": "pathlib", "sub.os": "os",
            "nn.functional.torch": "torch", "Path": "pathlib.Path"}


def gadget(prefix: str, marker: Path, library: Path) -> list[tuple[str, dict]]:
    """``(id, config)`` of the callables reachable through ``gadgetpkg.<prefix>`` that, built by Hydra,
    write ``marker`` (or load ``library``)."""
    base = f"gadgetpkg.{prefix}"
    reached = PREFIXES[prefix]
    found = []
    if reached == "torch":
        found += [("torch.save", {"_target_": f"{base}.save", "_args_": [[1], str(marker)]}),
                  ("torch.ops.load_library", {"_target_": f"{base}.ops.load_library", "_args_": [str(library)]})]
    elif reached == "numpy":
        found += [("np.save", {"_target_": f"{base}.save", "_args_": [str(marker), [1]]})]
    elif reached == "os":
        found += [("os.system", {"_target_": f"{base}.system", "_args_": [f"touch {marker}"]}),
                  ("os.makedirs", {"_target_": f"{base}.makedirs", "_args_": [str(marker)]})]
    elif reached == "pathlib":
        path = {"_target_": f"{base}.Path", "_args_": [str(marker)]}
        found += [("Path.touch", {"_target_": f"{base}.Path.touch", "_args_": [path]}),
                  ("Path.write_text", {"_target_": f"{base}.Path.write_text", "_args_": [path, "ELF"]})]
    else:  # a re-exported class: its methods are pathlib's
        path = {"_target_": base, "_args_": [str(marker)]}
        found += [("Path.touch", {"_target_": f"{base}.touch", "_args_": [path]})]
    return [(f"{prefix}:{name}", config) for name, config in found]


def the_issues_chain(marker: Path, library: Path) -> dict:
    """The probe's exploit: write a shared object with Path.write_bytes, build its path with
    os.path.join, load it with torch.ops.load_library, all through gadgetpkg."""
    written = {"_target_": "gadgetpkg.sub.pathlib.Path.write_bytes",
               "_args_": [{"_target_": "gadgetpkg.sub.pathlib.Path", "_args_": [str(marker)]}, "\x7fELF"]}
    return {"_target_": "gadgetpkg.nn.functional.torch.ops.load_library",
            "_args_": [{"_target_": "gadgetpkg.os.path.join", "_args_": [str(library.parent), library.name]}],
            "written": written}


SECTIONS = ("net", "net nested", "optimizer", "scheduler", "dataset")
CASES = [(f"{p}:{i}", p, i) for p in PREFIXES for i in range(2)] + [("chain", "chain", 0)]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The user package on sys.path and a real checkpoint of our own model."""
    root = tmp_path_factory.mktemp("gadgets")
    code = root / "code" / "gadgetpkg"
    (code / "sub").mkdir(parents=True)
    (code / "__init__.py").write_text(textwrap.dedent(PACKAGE))
    (code / "sub" / "__init__.py").write_text(textwrap.dedent(SUBPACKAGE))
    sys.path.insert(0, str(code.parent))
    train(make_cfg(root / "trained", *SMALL, "trainer.max_epochs=1"))
    yield root / "trained" / "checkpoints" / "last.ckpt"
    sys.path.remove(str(code.parent))
    for name in [m for m in sys.modules if m == "gadgetpkg" or m.startswith("gadgetpkg.")]:
        del sys.modules[name]


def payload_config(case: tuple[str, str, int], folder: Path) -> tuple[str, dict] | None:
    _, prefix, index = case
    marker, library = folder / "marker", folder / "evil.so"
    if prefix == "chain":
        return "chain", the_issues_chain(marker, library)
    found = gadget(prefix, marker, library)
    return found[index] if index < len(found) else None


def hostile_checkpoint(trained: Path, section: str, config: dict, folder: Path) -> Path:
    checkpoint = load_checkpoint(trained)
    hparams = checkpoint["hyper_parameters"]
    if section == "net":
        hparams["net"] = config
    elif section == "net nested":
        hparams["net"]["encoder"] = config
    elif section == "dataset":
        hparams["config"]["dataset"] = config
    else:
        hparams[section] = {**config, "_partial_": False}
    path = folder / "hostile.ckpt"
    torch.save(checkpoint, path)  # as an attacker would
    return path


def load_on(path_kind: str, ckpt: Path, folder: Path, trust: tuple[str, ...]) -> None:
    override = f"trust=[{','.join(trust)}]"
    if path_kind == "load_checkpoint":
        load_checkpoint(ckpt, trusted=trust)
    elif path_kind == "load_classifier":
        load_classifier(ckpt, trusted=trust)
    elif path_kind == "load_module":
        load_module(ckpt, trusted=trust)
    elif path_kind == "fit/resume":
        train(make_cfg(folder / "resumed", *SMALL, "trainer.max_epochs=2", f"ckpt_path={ckpt}", override))
    elif path_kind == "init_from":
        train(make_cfg(folder / "finetuned", *SMALL, "trainer.max_epochs=1", f"init_from={ckpt}", override))
    else:
        train(make_cfg(folder / "evaluated", *SMALL, "train=false", f"ckpt_path={ckpt}", override))


PATHS = ["fit/resume", "evaluate", "init_from", "load_checkpoint", "load_classifier", "load_module"]


@pytest.mark.parametrize("trust", [(), ("gadgetpkg",)], ids=["untrusted", "trust=[gadgetpkg]"])
@pytest.mark.parametrize("path_kind", PATHS)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_gadgets_through_re_exported_modules_are_refused_on_every_path(tmp_path, setup, case, path_kind, trust):
    found = payload_config(case, tmp_path)
    if found is None:
        pytest.skip("this prefix reaches one gadget")
    name, config = found
    section = SECTIONS[CASES.index(case) % len(SECTIONS)]
    if section == "dataset" and path_kind != "evaluate":
        section = "net nested"  # only evaluation builds the checkpoint's data set
    ckpt = hostile_checkpoint(setup, section, config, tmp_path)
    libraries = set(torch.ops.loaded_libraries)
    if path_kind == "init_from":
        # Fine-tuning builds the model from the run's own config and takes only the file's tensors: the
        # hostile configs are never read, so there is nothing to refuse, and nothing of them may run.
        load_on(path_kind, ckpt, tmp_path, trust)
    else:
        error_type = CheckpointError if path_kind.startswith("load_") else ConfigError
        with pytest.raises(error_type,
                           match=rf"asks to build '{config['_target_']}'.*nothing from it was built or run") as error:
            load_on(path_kind, ckpt, tmp_path, trust)
        assert "\n" not in str(error.value)
        if trust:
            assert "not one of your own classes" in str(error.value)
    assert not (tmp_path / "marker").exists() and not (tmp_path / "marker.npy").exists()
    assert not (tmp_path / "evil.so").exists()
    assert set(torch.ops.loaded_libraries) == libraries
    for run in ("resumed", "evaluated"):
        assert not (tmp_path / run / "checkpoints").exists()


@pytest.mark.parametrize("case", [c for c in CASES if c[1] != "chain"], ids=[c[0] for c in CASES if c[1] != "chain"])
def test_the_gadgets_are_live(tmp_path, setup, case):
    """What the refusals prevent: each write gadget, built by Hydra without the checks, writes its file
    (the load_library ones would load whatever path they are given)."""
    found = payload_config(case, tmp_path)
    if found is None or "load_library" in found[0]:
        pytest.skip("no write gadget here")
    if found[0].endswith("os.system"):
        pytest.skip("Hydra's own blocklist stops os.system (and no more: the others pass it)")
    instantiate(found[1])
    assert (tmp_path / "marker").exists() or (tmp_path / "marker.npy").exists()


def test_the_users_own_class_is_still_trusted(setup):
    """trust=[gadgetpkg] still lets a checkpoint name gadgetpkg.Net (defined there), and only that."""
    check_targets({"net": {"_target_": "snn.models.SpikingClassifier", "inner": {"_target_": "gadgetpkg.Net"}}},
                  "x.ckpt", trusted=["gadgetpkg"])
    with pytest.raises(CheckpointError, match="'gadgetpkg.Net'.*allow it: trust=\\[gadgetpkg\\]"):
        check_targets({"net": {"_target_": "gadgetpkg.Net"}}, "x.ckpt")
    with pytest.raises(CheckpointError, match=r"'gadgetpkg.Net.__init__'.*special attribute"):
        check_targets({"net": {"_target_": "gadgetpkg.Net.__init__"}}, "x.ckpt", trusted=["gadgetpkg"])
    with pytest.raises(CheckpointError, match=r"'gadgetpkg.Net.forward'.*defined outside 'gadgetpkg'"):
        check_targets({"net": {"_target_": "gadgetpkg.Net.forward"}}, "x.ckpt", trusted=["gadgetpkg"])


def test_an_interpolation_in_a_key_is_refused_in_one_line(tmp_path, setup):
    """Item 7: ``${...}`` inside a dict key was never checked (nor resolved): refused by name."""
    checkpoint = load_checkpoint(setup)
    checkpoint["hyper_parameters"]["net"]["neuron"] = {"${oc.env:HOME}": 1, **checkpoint["hyper_parameters"]["net"]
                                                       .get("neuron", {})}
    torch.save(checkpoint, tmp_path / "key.ckpt")
    for path_kind in PATHS:
        if path_kind == "init_from":  # it reads only the file's tensors: the key is never seen, nor resolved
            continue
        error_type = CheckpointError if path_kind.startswith("load_") else ConfigError
        with pytest.raises(error_type, match=r"carries the config interpolation '\$\{oc.env:HOME\}' in a key at "
                                             r"hyper_parameters\['net'\]\['neuron'\]") as error:
            load_on(path_kind, tmp_path / "key.ckpt", tmp_path, ())
        assert "\n" not in str(error.value)
