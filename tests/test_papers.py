"""The package's papers agree with pyproject.toml: version, licence, changelog, citation (tests/test_wheel.py:
the wheel ships them)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from importlib.metadata import PackageNotFoundError, version

import snn
from tests.helpers import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]


def test_version_of_a_checkout_is_its_pyproject_version():
    assert snn.__version__ == VERSION


def test_an_installed_copy_reads_its_version_from_the_distribution_metadata(tmp_path):
    """Outside a checkout (no pyproject.toml beside the package) the version is the installed
    distribution's, or 0+unknown when there is none."""
    (tmp_path / "pkg").mkdir()
    shutil.copy(ROOT / "snn" / "__init__.py", tmp_path / "pkg" / "__init__.py")
    code = "import pkg; print(pkg.__version__)"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    try:
        expected = version("snn-adex")
    except PackageNotFoundError:
        expected = "0+unknown"
    assert out.stdout.strip() == expected


def test_changelog_and_citation_name_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(r"^## (\S+)", changelog, re.M).group(1) == VERSION
    citation = (ROOT / "CITATION.cff").read_text()
    assert re.search(r"^version: (\S+)", citation, re.M).group(1) == VERSION
    assert re.search(r"^license: (\S+)", citation, re.M).group(1) == PYPROJECT["project"]["license"]


def test_licence_is_an_spdx_expression_with_its_file():
    project = PYPROJECT["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")


def test_ruff_targets_the_oldest_python_we_support():
    oldest = re.fullmatch(r">=\s*3\.(\d+)", PYPROJECT["project"]["requires-python"]).group(1)
    assert PYPROJECT["tool"]["ruff"]["target-version"] == f"py3{oldest}"
    assert sys.version_info >= (3, int(oldest))
