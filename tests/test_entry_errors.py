"""Bad command lines of the entry point (snn-train, python -m snn.train, python train.py) are refused
before Hydra starts, in one line that says what to do, and leave no run directory: a config folder
that is not there, a package on hydra.searchpath that this Python cannot import, and, with
--config-dir, an unknown option or key."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from snn.training.run.config_errors import search_path_entries, with_config_dir_as_search_path
from tests.helpers import ROOT
from tests.user_package import write_user_package


def run_entry(cwd, *args: str, pythonpath: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), pythonpath) if p)}
    return subprocess.run([sys.executable, "-m", "snn.train", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_command_lines_config_folders_are_read_as_hydra_reads_them():
    args = ["--config-dir", "conf", "hydra.searchpath=[pkg://mine.conf,file:///x]", "model=a"]
    assert search_path_entries(args) == [("--config-dir", "conf"), ("hydra.searchpath", "pkg://mine.conf"),
                                         ("hydra.searchpath", "file:///x")]
    checkable = with_config_dir_as_search_path(args)
    assert checkable == ["model=a", f"hydra.searchpath=[file://{(os.getcwd() + '/conf')},pkg://mine.conf,file:///x]"]
    assert with_config_dir_as_search_path(["-m", "model=a,b"]) is None  # a sweep: Hydra's to check


@pytest.mark.slow  # a process per command line: 8-27 s each on a loaded 2-core machine
@pytest.mark.parametrize(("args", "message"), [
    (["hydra.searchpath=[pkg://mynet_configs.conf]", "model=mynet"],
     r"hydra.searchpath names pkg://mynet_configs.conf, but this Python \(.*\) cannot import mynet_configs.conf\. "
     r"Install the project that holds it .*\(pip install -e <your project>\), or add the folder that contains "
     r"mynet_configs/ to PYTHONPATH"),
    (["--config-dir", "conf", "model=mynet"], r"--config-dir names conf, which is not a folder \(a relative path "
                                               r"starts at the directory you run in, .*\)"),
    (["hydra.searchpath=[file://missing/conf]", "model=mynet"], r"hydra.searchpath names file://missing/conf, which "
                                                                 r"is not a folder"),
])
def test_a_config_folder_that_cannot_be_read_is_named_with_what_to_do(tmp_path, args, message):
    done = run_entry(tmp_path, *args)
    assert done.returncode == 1
    (line,) = done.stderr.strip().splitlines()  # one line, no traceback, no Hydra warning before it
    assert line.startswith("Config error: ") and re.search(message, line), line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no run directory


@pytest.mark.slow
def test_with_config_dir_an_unknown_option_or_key_is_refused_before_hydra(tmp_path):
    _, conf = write_user_package(tmp_path / "user")
    done = run_entry(tmp_path, "--config-dir", str(conf), "model=mynett", "dataset=blobs")
    assert done.returncode == 1
    assert done.stderr.strip() == ("Config error: Unknown model 'mynett'; choose one of adex, adex_conv, lif, mynet, "
                                   "radex, rlif (the files in conf/model/).")
    done = run_entry(tmp_path, f"--config-dir={conf}", "model=mynet", "dataset=blobs", "model.hiden=4")
    assert done.returncode == 1 and "Unknown config key 'model.hiden'" in done.stderr and "hidden" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["user"]
