"""Every notebook in notebooks/ runs from top to bottom, so none of them rots.

The kernel is this interpreter (``sys.executable``, i.e. the venv the tests run in, which has
ipykernel from the dev extra), whatever kernelspecs a user or the system has installed. The kernel
runs with ``SNN_NOTEBOOK_QUICK=1``: a notebook whose default run takes minutes (03 trains for about
two) reads it in its parameter cell and shrinks its task, network and training to seconds.
"""

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel", reason="ipykernel (dev extra) runs the notebooks")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402  (installed with nbclient)
from jupyter_client.manager import KernelManager  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
KERNEL = "snn-tests"
# A cell that runs this long has hung (a notebook's run time is not asserted: on a loaded machine it
# varies several-fold; the quick configuration takes well under a minute on an idle 2-core CPU).
CELL_TIMEOUT_S = 900
QUICK = "SNN_NOTEBOOK_QUICK"  # set to 1 for the kernel: the small configuration of long notebooks
DRAWS = ("plt.subplots(", 'views["')  # a cell that draws with pyplot or shows one of snn's views
# Notebooks whose cells print nothing to stderr: no third-party advice or deprecation shows on the site.
QUIET = {"02_train_and_inspect"}


@pytest.fixture(scope="module")
def kernel_specs(tmp_path_factory):
    """A kernelspec directory holding only a kernel that runs this interpreter."""
    kernel_dir = tmp_path_factory.mktemp("kernels") / KERNEL
    kernel_dir.mkdir()
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "snn tests", "language": "python"}
    (kernel_dir / "kernel.json").write_text(json.dumps(spec))
    return KernelSpecManager(kernel_dirs=[str(kernel_dir.parent)], ensure_native_kernel=False)


def test_notebooks_exist():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_saved_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: clear the outputs before saving"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path, kernel_specs, monkeypatch):
    monkeypatch.setenv(QUICK, "1")  # the kernel inherits this process's environment
    # The kernel imports this checkout's snn, as the tests do (pytest's pythonpath), not the one the
    # venv has installed (in a git worktree, the editable install points at another checkout).
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=kernel_specs)
    client = nbclient.NotebookClient(nb, km=km, timeout=CELL_TIMEOUT_S,
                                     resources={"metadata": {"path": str(path.parent)}})  # as in Jupyter
    client.execute()  # raises CellExecutionError, naming the cell, when a cell fails
    # Every cell that draws shows its figure: none is lost to a backend switched behind its back.
    for number, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and any(m in cell.source for m in DRAWS):
            shown = [o for o in cell.outputs if "image/png" in o.get("data", {})]
            assert shown, f"{path.name}, cell {number}: draws a figure but shows none"
    if path.stem in QUIET:
        for number, cell in enumerate(nb.cells):
            noise = [o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stderr"]
            assert not noise, f"{path.name}, cell {number} writes to stderr: {noise}"
