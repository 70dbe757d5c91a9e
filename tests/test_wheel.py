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
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert re.search(r"^\[console_scripts\]\s*^snn-train = snn\.train:main$", text, re.M), text


def _test_accuracy(output: str) -> str:
    """The test/acc of the results table a run printed."""
    (value,) = re.findall(r"test/acc\s*│\s*(\S+)\s*│", output)
    return value


@pytest.mark.slow
def test_the_installed_wheel_trains_and_evaluates_outside_the_checkout(wheel, tmp_path):
    """A fresh venv (this environment's packages visible through a .pth line, so nothing is
    downloaded; its snn is the wheel's), then ``snn-train`` from an empty directory: the run lands in
    ./outputs/, and ``snn-train train=false ckpt_path=<best>`` reproduces the fit's test accuracy."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    (purelib,) = venv.glob("lib/python*/site-packages")
    # A plain path line: the editable install of this checkout in our site-packages (a .pth there)
    # is not processed, so `import snn` finds the wheel's copy only.
    (purelib / "shared_environment.pth").write_text("\n".join(site.getsitepackages()) + "\n")
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

    where = command(str(python), "-c", "import snn.train; print(snn.train.CONF_DIR)").strip()
    assert Path(where) == purelib / "snn" / "conf"

    fitted = command(str(venv / "bin" / "snn-train"), "model=adex", "dataset=synthetic", "trainer.max_epochs=1")
    best = Path(re.search(r"Best checkpoint \(val/acc = [0-9.]+\): (\S+\.ckpt)", fitted).group(1))
    assert best.is_file() and best.is_relative_to(work / "outputs" / "adex-synthetic")
    evaluated = command(str(venv / "bin" / "snn-train"), "train=false", f"ckpt_path={best}")
    run_dir = Path(re.search(r"Run directory: (\S+)", evaluated).group(1))
    assert run_dir.is_relative_to(work / "outputs") and run_dir.is_dir()
    assert _test_accuracy(evaluated) == _test_accuracy(fitted)
    assert sorted(p.name for p in work.iterdir()) == ["outputs"]  # nothing written beside it (no data/)
