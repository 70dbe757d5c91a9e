"""Every extra of pyproject.toml resolves, on its own, to released versions only: what
``pip install "snn-adex[<extra>]"`` would install into a fresh environment, asked of the package
index with ``pip install --dry-run --ignore-installed --report``. The plugins of the ``slurm`` extra
ask for ``hydra-core>=1.1.0.dev7``, which lets pip pick release candidates (hydra-core 1.4.0rc3,
omegaconf 2.4.1rc2) unless the extra caps them.

Needs a package index (PyPI by name is enough; each extra takes 5-40 s): skipped, saying so, where
none answers. CI reaches PyPI, so CI runs these.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
PROJECT = tomllib.loads(PYPROJECT.read_text())["project"]
EXTRAS = sorted(PROJECT["optional-dependencies"])


def requirements(extra: str) -> list[str]:
    """What ``snn-adex[extra]`` requires: the dependencies and the extra's, with the extras it names
    itself (``snn-adex[train]``) expanded."""
    out = list(PROJECT["dependencies"])
    todo, seen = [extra], set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for line in PROJECT["optional-dependencies"][name]:
            requirement = Requirement(line)
            if requirement.name == PROJECT["name"]:
                todo += sorted(requirement.extras)
            else:
                out.append(line)
    return out


@cache
def index_problem() -> str | None:
    """Why no package index answers pip here (None: one does)."""
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "packaging"],
                              capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return "pip index versions packaging took over 120 s"
    if done.returncode != 0 or "Available versions" not in done.stdout:
        lines = [line for line in done.stderr.splitlines() if line.strip() and "is ignored" not in line]
        return lines[-1] if lines else f"pip exited with {done.returncode}"
    return None


def resolve(requirements: list[str], tmp_path: Path) -> dict[str, str]:
    """The distributions pip would install for ``requirements`` into an empty environment: name -> version."""
    report = tmp_path / "report.json"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                           "--report", str(report), *requirements], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    installs = json.loads(report.read_text())["install"]
    return {re.sub(r"[-_.]+", "-", i["metadata"]["name"]).lower(): i["metadata"]["version"] for i in installs}


def test_extras_expand_their_own_extras():
    dev = requirements("dev")
    assert any(r.startswith("optuna") for r in dev) and any(r.startswith("hydra-submitit-launcher") for r in dev)
    assert not any(Requirement(r).name == PROJECT["name"] for r in dev)


# Dependencies of dependencies that have never had a final release: the docs theme furo requires
# sphinx-basic-ng>=1.0.0b2, and 1.0.0b2 is that package's newest version. Only that exact version is
# let through; anything else that resolves to a pre-release fails.
ONLY_PRERELEASES = {"sphinx-basic-ng": "1.0.0b2"}


@pytest.mark.slow
@pytest.mark.parametrize("extra", EXTRAS)
def test_every_extra_resolves_to_released_versions(extra, tmp_path):
    problem = index_problem()
    if problem:
        pytest.skip(f"no package index answers pip here ({problem}); CI reaches PyPI and runs this")
    resolved = resolve(requirements(extra), tmp_path)
    prereleases = {name: v for name, v in resolved.items()
                   if Version(v).is_prerelease and ONLY_PRERELEASES.get(name) != v}
    assert not prereleases, f"snn-adex[{extra}] would install pre-releases: {prereleases}"
    if "hydra-core" in resolved:
        assert Version(resolved["hydra-core"]) < Version("1.4") and Version(resolved["omegaconf"]) < Version("2.4")
    if extra in ("optuna", "dev"):
        assert Version(resolved["optuna"]) >= Version("4") and "hydra-optuna-sweeper" not in resolved
    if extra == "notebooks":
        assert "jupyterlab" in resolved
