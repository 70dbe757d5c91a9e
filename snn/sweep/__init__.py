"""Hyperparameter search with Optuna (>= 4) as a Hydra sweeper: ``hydra/sweeper=snn_optuna``.

``python train.py -m hparams_search=fashion_mnist_optuna`` (README, "Hyperparameter search"). The
pieces: :mod:`.space` (Hydra's sweep grammar as Optuna distributions), :mod:`.sweeper` (the study,
the batches of trials, the sweep's record), :mod:`.studies` (how a trial finds its study),
:class:`OptunaPruning` (the Lightning callback that reports each epoch and stops a pruned trial).
Hydra finds the sweeper as ``hydra_plugins.snn_optuna_sweeper``; this package imports Optuna,
Lightning only through :class:`OptunaPruning`.

A search of your own: copy ``conf/hparams_search/fashion_mnist_optuna.yaml`` into your config
directory and edit ``hydra.sweeper.params``; keep its ``callbacks.optuna_pruning`` entry if you set a
``pruner``.
"""

_LAZY = {"OptunaPruning": "snn.sweep.pruning"}

__all__ = ["OptunaPruning"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'snn.sweep' has no attribute {name!r}")
