"""A training run prints our lines and Lightning's progress, not third-party tips, deprecation
warnings or notes that contradict what we do (snn/training/quiet.py lists them and why)."""

import logging
import subprocess
import sys
import warnings

from snn.training.quiet import LOG_LINES, quiet_third_party
from tests.helpers import ROOT

THIRD_PARTY = ["Tip:", "litlogger", "litmodels", "LeafSpec", "DeprecationWarning", "FutureWarning", "deprecated",
               "weights_only", "alembic"]


def test_a_training_run_prints_no_third_party_lines(tmp_path):
    """A small run with checkpoints, TensorBoard and the test set: the lines Lightning printed here
    before were its litlogger tip and torch's LeafSpec FutureWarning from Lightning's _pytree."""
    command = [sys.executable, str(ROOT / "train.py"), "dataset=synthetic", "model.T=6", "model.hidden=16",
               "model.conv=null", "trainer.max_epochs=1", "trainer.accelerator=cpu", "callbacks.spike_raster=null",
               f"hydra.run.dir={tmp_path / 'run'}", f"paths.data_dir={tmp_path}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Run directory" in output and "Epoch 0" in output and "test/acc" in output
    assert not [word for word in THIRD_PARTY if word in output], output[-3000:]


def records(name, *messages, level=logging.INFO):
    logger = logging.getLogger(name)
    return [logger.filter(logger.makeRecord(name, level, __file__, 1, m, (), None)) for m in messages]


def test_each_filter_drops_its_lines_and_nothing_else():
    quiet_third_party()
    quiet_third_party()  # idempotent: one filter per logger
    assert all(sum(type(f).__name__ == "_DropLines" for f in logging.getLogger(n).filters) == 1 for n in LOG_LINES)
    name = "lightning.pytorch.utilities.rank_zero"
    assert records(name, "💡 Tip: For seamless cloud logging", "GPU available: False, used: False") == [False, True]
    name = "lightning.pytorch.trainer.connectors.checkpoint_connector"
    assert records(name, "`weights_only` was not set, defaulting to `False`.", "Restoring states") == [False, True]
    assert records("alembic.runtime.migration", "Context impl SQLiteImpl.") == [False]
    assert records("alembic.runtime.plugins", "setup plugin alembic.autogenerate.schemas") == [False]
    assert records("alembic.runtime.migration", "Can't locate revision", level=logging.WARNING) == [True]


def test_the_deprecation_filter_names_the_module_and_the_message():
    quiet_third_party()
    with warnings.catch_warnings(record=True) as seen:
        warnings.resetwarnings()
        quiet_third_party()
        message = "`isinstance(treespec, LeafSpec)` is deprecated, use ..."
        warnings.warn_explicit(message, FutureWarning, "_pytree.py", 21, module="lightning.pytorch.utilities._pytree")
        warnings.warn_explicit(message, FutureWarning, "other.py", 1, module="somewhere.else")
        warnings.warn_explicit("another deprecation", FutureWarning, "_pytree.py", 22,
                               module="lightning.pytorch.utilities._pytree")
    assert [str(w.message) for w in seen] == [message, "another deprecation"]
