"""Train a spiking classifier: ``snn-train model=adex dataset=mnist [key=value ...]`` (also
``python -m snn.train ...`` and, in a checkout, ``python train.py ...``).

Fits, tests the best checkpoint and returns the validation metric ``optimized_metric`` (for
sweepers: ``snn-train -m model=adex,lif seed=1,2``). Config: ``conf/config.yaml`` (in an installed
package ``snn/conf/``; add your own with ``--config-dir`` or ``hydra.searchpath=[pkg://mypkg.conf]``).
Resume: ``ckpt_path=<run>/checkpoints/last.ckpt``; fine-tune: ``init_from=<ckpt>``; evaluate a checkpoint:
``train=false ckpt_path=...``; let checkpoints build your own classes: ``trust=[mypackage]``.
Hydra glue only: the run lifecycle lives in :mod:`snn.training.run`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from snn.errors import CheckpointWriteError, ConfigError, NonFiniteCheckpointError, NonFiniteError
from snn.training.quiet import quiet_third_party
from snn.training.run import run
from snn.training.run.config_errors import (
    explain_composition_error,
    explain_search_path_error,
    with_config_dir_as_search_path,
)
from snn.training.run.directory import claim_fixed_run_dir, discard_refused_run
from snn.training.run.log import exit_with, log_to_run_log


def config_dir() -> Path:
    """The config root: ``snn/conf`` in an installed wheel, else the checkout's top-level ``conf/``
    (an editable install or a worktree), which is the one source of both."""
    package = Path(__file__).resolve().parent
    shipped = package / "conf"
    return shipped if (shipped / "config.yaml").is_file() else package.parent / "conf"


CONF_DIR = config_dir()
quiet_third_party()  # before Hydra starts: its sweeper opens an Optuna study first
# Whether Hydra's run directory is the default one, unique to this process (no hydra.run.dir given).
_DEFAULT_RUN_DIR = False


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> float:
    log_to_run_log()  # Lightning's lines too into <run>/train.log
    try:
        return run(cfg)
    except ConfigError as error:
        discard_refused_run(cfg, _DEFAULT_RUN_DIR)  # a run refused before training leaves no directory
        exit_with(f"Config error: {error}")
    except NonFiniteError as error:  # the message names the step and the last good checkpoint
        exit_with(f"Training stopped: {error}")
    except (CheckpointWriteError, NonFiniteCheckpointError) as error:  # one sentence: file and cause
        exit_with(f"Checkpoint not written: {error}")


def main() -> None:
    """The command line: the config directories it adds are checked, then plain single runs (also
    with --config-dir) before Hydra starts (sweeps and --cfg are Hydra's to check), then Hydra
    composes and runs :func:`hydra_main`. A refused command line creates no run directory."""
    global _DEFAULT_RUN_DIR
    args = sys.argv[1:]
    _DEFAULT_RUN_DIR = not any(a.startswith(("hydra.run.dir=", "hydra/", "-")) for a in args)
    problem = explain_search_path_error(args)
    if problem:
        sys.exit(f"Config error: {problem}")
    checkable = with_config_dir_as_search_path(args)
    if checkable is not None:
        problem = explain_composition_error(CONF_DIR, checkable)
        if problem:
            sys.exit(f"Config error: {problem}")
        try:
            claim_fixed_run_dir(CONF_DIR, checkable)
        except ConfigError as error:
            sys.exit(f"Config error: {error}")
    hydra_main()


if __name__ == "__main__":
    main()
