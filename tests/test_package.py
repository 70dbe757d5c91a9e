"""The neuron library stays torch-only, and the README's example runs as written."""

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_import_snn_neurons_loads_no_training_stack():
    code = (
        "import sys, snn.neurons, snn.neurons.surrogate\n"
        "heavy = [m for m in ('lightning', 'pytorch_lightning', 'hydra', 'omegaconf', 'torchvision',"
        " 'tensorboard', 'torchmetrics', 'matplotlib') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_readme_neuron_example_runs():
    text = README.read_text()
    section = text.split("## Use the neurons in your own project", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "[100, 16, 64]" in out.stdout.replace("torch.Size(", "").replace(")", "")
