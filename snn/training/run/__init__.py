"""The run lifecycle, one module per job: :mod:`~snn.training.run.building` (the module, data and
Trainer a config describes), :mod:`~snn.training.run.fitting` (``train=true``),
:mod:`~snn.training.run.evaluation` (``train=false``: test a checkpoint), the run directory
(:mod:`~snn.training.run.directory`) and its log (:mod:`~snn.training.run.log`), pre-flight checks,
threads, resuming, signals and config errors.

``run(cfg)`` is what ``snn-train`` / ``python -m snn.train`` / ``python train.py`` call: ``fit(cfg)``
or ``evaluate(cfg)`` as ``cfg.train`` says.
"""

from __future__ import annotations

from collections.abc import Sequence

from omegaconf import DictConfig

from .building import build, build_trainer
from .directory import register_run_id
from .evaluation import evaluate
from .fitting import fit

# The ${run_id:} and ${run_name:} resolvers of hydra.run.dir / hydra.sweep.dir, which build()
# resolves with the rest of a config composed with its Hydra node.
register_run_id()

__all__ = ["build", "build_trainer", "evaluate", "fit", "run"]


def run(cfg: DictConfig, overrides: Sequence[str] | None = None) -> float:
    """``fit(cfg)`` (the best ``cfg.optimized_metric``), or with ``cfg.train`` false
    ``evaluate(cfg, overrides)`` (the checkpoint's test accuracy)."""
    if cfg.get("train", True):
        return fit(cfg)
    return evaluate(cfg, overrides)
