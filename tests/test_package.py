"""The neuron library stays torch-only, and the neurons guide's first example runs as written."""

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NEURONS_GUIDE = ROOT / "docs" / "guides" / "neurons.md"


def test_import_snn_neurons_loads_no_training_stack():
    code = (
        "import sys, snn.neurons, snn.neurons.surrogate\n"
        "heavy = [m for m in ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf', 'torchvision',"
        " 'tensorboard', 'torchmetrics', 'matplotlib') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_neurons_guide_example_runs():
    """Its first code cell (the docs build runs the page too; this runs without the docs extra)."""
    text = NEURONS_GUIDE.read_text()
    section = text.split("## Use the neurons in your own project", 1)[1]
    code = re.search(r"```\{code-cell\} ipython3\n(.*?)```", section, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "[100, 16, 64]" in out.stdout.replace("torch.Size(", "").replace(")", "")


def test_pytest_outside_the_projects_environment_says_how_to_run_the_tests():
    # The pyenv/system pytest, whose Python lacks torch: one line saying which interpreter and what to run.
    code = (
        "import sys, pytest\n"
        "class Hide:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Hide())\n"
        "sys.exit(pytest.main(['tests/neurons/test_li.py', '-q', '--co', '-p', 'no:cacheprovider']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 4, out.stdout + out.stderr
    text = out.stdout + out.stderr
    assert f"torch cannot be imported by this pytest's Python ({sys.executable})" in text
    assert '`make test ARGS="tests/neurons/test_li.py -q --co -p no:cacheprovider"`' in text
    assert "`.venv/bin/python -m pytest tests/neurons/test_li.py" in text


def test_importing_and_running_layers_on_the_cpu_prints_nothing(tmp_path):
    """``import snn`` and a first call of every layer kind on the default backend (which loads the
    C++ kernels, and with them torch's extension builder) write nothing to stdout or stderr, even
    where CUDA_HOME exists on a machine without a GPU (torch's builder logs "No CUDA runtime is
    found" there on import)."""
    code = (
        "import torch, snn, snn.neurons\n"
        "from snn.neurons import LI, LIF, LIFAdEx, LIFAdExRecurrent\n"
        "x = torch.rand(5, 2, 3)\n"
        "for layer in (LIFAdEx(), LIF(), LI(), LIFAdExRecurrent(3, 4)):\n"
        "    layer(x)\n"
    )
    cuda_home = tmp_path / "cuda"
    cuda_home.mkdir()
    env = {**os.environ, "CUDA_HOME": str(cuda_home)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == "", out.stdout + out.stderr


def test_the_cuda_notice_filter_drops_only_that_line():
    import logging

    from snn.neurons.fused.cpp.build import _cpp_extension

    _cpp_extension()
    logger = logging.getLogger("torch.utils.cpp_extension")
    notice = "No CUDA runtime is found, using CUDA_HOME='%s'"
    record = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, notice, ("/x",), None)
    other = logger.makeRecord(logger.name, logging.WARNING, __file__, 1, "Error building extension", (), None)
    assert not logger.filter(record) and logger.filter(other)
