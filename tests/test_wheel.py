"""What ships: the wheel holds the repository's configs (``conf/`` as ``snn/conf``) and the
``snn-train`` console script, and installed into a fresh venv it trains and evaluates from a
directory outside the checkout."""

from __future__ import annotations

import os
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Top-level entries of a checkout that are not sources of the distribution (a wheel built from a
# copy without them is built from what a fresh clone has).
NOT_SOURCES = {".git", ".venv", "outputs", "multirun", "data", "build", "dist", ".pytest_cache", ".ruff_cache",
               "notebooks", "benchmarks", "tests"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout (the build writes build/ and *.egg-info into its
    source tree), without build isolation: setuptools comes from this environment, offline."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=lambda folder, names: [
        n for n in names if (Path(folder) == ROOT and (n in NOT_SOURCES or n.endswith(".egg-info")))
        or n == "__pycache__"])
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           str(source), "-w", str(tmp / "dist")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    (found,) = (tmp / "dist").glob("snn_adex-*.whl")
    return found


def test_the_wheel_ships_every_config_and_the_console_script(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {f"snn/conf/{p.relative_to(ROOT / 'conf').as_posix()}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert "snn/conf/config.yaml" in configs and "snn/conf/model/neuron/adex.yaml" in configs
    assert configs <= names, sorted(configs - names)
    assert "snn/train.py" in names and "snn/neurons/fused/cpp/cpu_kernels.cpp" in names
    # The papers: PEP 561's marker, the licence file, our Hydra sweeper where Hydra looks for plugins.
    assert "snn/py.typed" in names and "hydra_plugins/snn_optuna_sweeper/__init__.py" in names
    assert "hydra_plugins/__init__.py" not in names  # a namespace package, shared with Hydra's other plugins
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert {"snn/sweep/sweeper.py", "snn/conf/hydra/sweeper/snn_optuna.yaml"} <= names
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert re.search(r"^\[console_scripts\]\s*^snn-train = snn\.train:main$", text, re.M), text


def _test_accuracy(output: str) -> str:
    """The test/acc of the results table a run printed."""
    (value,) = re.findall(r"test/acc\s*│\s*(\S+)\s*│", output)
    return value


def install(wheel: Path, tmp_path: Path, *also: Path):
    """A fresh venv with ``wheel`` installed (this environment's packages visible through a .pth
    line, and the folders ``also``, so nothing is downloaded; its snn is the wheel's), an empty
    project directory, and a function running a command there: ``(venv, purelib, work, command)``."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (purelib,) = venv.glob("lib/python*/site-packages")
    # A plain path line: the editable install of this checkout in our site-packages (a .pth there)
    # is not processed, so `import snn` finds the wheel's copy only.
    (purelib / "shared_environment.pth").write_text("\n".join([*map(str, also), *site.getsitepackages()]) + "\n")
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True)
    work = tmp_path / "project"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "1"

    def command(*args: str) -> str:
        done = subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout + done.stderr

    return venv, purelib, work, command


@pytest.mark.slow
def test_the_installed_wheel_trains_and_evaluates_outside_the_checkout(wheel, tmp_path):
    """``snn-train`` from an empty directory: the run lands in ./outputs/, and ``snn-train train=false
    ckpt_path=<best>`` reproduces the fit's test accuracy, filed under the checkpoint's run."""
    venv, purelib, work, command = install(wheel, tmp_path)
    python = venv / "bin" / "python"
    where = command(str(python), "-c", "import snn.train; print(snn.train.CONF_DIR)").strip()
    assert Path(where) == purelib / "snn" / "conf"
    version = command(str(python), "-c", "import snn; print(snn.__version__)").strip()
    assert version == wheel.name.split("-")[1]  # the distribution's metadata: no pyproject.toml beside it

    fitted = command(str(venv / "bin" / "snn-train"), "model=adex", "dataset=synthetic", "trainer.max_epochs=1")
    best = Path(re.search(r"Best checkpoint \(val/acc = [0-9.]+\): (\S+\.ckpt)", fitted).group(1))
    assert best.is_file() and best.is_relative_to(work / "outputs" / "adex-synthetic")
    evaluated = command(str(venv / "bin" / "snn-train"), "train=false", f"ckpt_path={best}")
    run_dir = Path(re.search(r"Run directory: (\S+)", evaluated).group(1))
    assert run_dir.is_relative_to(work / "outputs" / "adex-synthetic" / "eval") and run_dir.is_dir()
    assert _test_accuracy(evaluated) == _test_accuracy(fitted)
    assert sorted(p.name for p in work.iterdir()) == ["outputs"]  # nothing written beside it (no data/)


@pytest.mark.slow
def test_the_installed_wheel_sweeps_with_its_own_optuna_sweeper(wheel, tmp_path):
    """Hydra finds our sweeper in the installed wheel (hydra_plugins/snn_optuna_sweeper beside the
    other plugins) and the README's search runs from an empty directory into one sweep directory."""
    optuna = pytest.importorskip("optuna", reason="the optuna extra is not installed; CI installs it with .[dev]")
    if int(optuna.__version__.split(".")[0]) < 4:
        pytest.skip(f"optuna {optuna.__version__} is older than the optuna extra's >= 4; CI installs the extra")
    venv, purelib, work, command = install(wheel, tmp_path, Path(optuna.__file__).parents[1])
    command(str(venv / "bin" / "snn-train"), "-m", "hparams_search=fashion_mnist_optuna", "~experiment",
            "dataset=synthetic", "dataset.num_train=96", "dataset.val_size=32", "model=lif", "model.conv=null",
            "trainer=cpu", "trainer.max_epochs=1", "test=false", "callbacks.spike_raster=null",
            "callbacks.progress_bar=null", "hydra.sweeper.n_trials=1")
    (sweep,) = (work / "multirun" / "lif-synthetic").iterdir()
    record = (sweep / "optimization_results.yaml").read_text()
    assert "state: COMPLETE" in record and (sweep / "multirun.yaml").is_file() and (sweep / "0" / ".hydra").is_dir()
    assert sorted(p.name for p in work.iterdir()) == ["multirun"]
