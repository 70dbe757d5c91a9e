"""snn's Optuna sweeper for Hydra (``hydra/sweeper=snn_optuna``, conf/hydra/sweeper/snn_optuna.yaml).

Hydra instantiates sweepers only from the ``hydra_plugins`` namespace package and imports every
module in it when it starts, so this module is the plugin class alone: it imports Optuna and the
sweep itself (:mod:`snn.sweep.sweeper`) only when a sweep is set up.
"""

from __future__ import annotations

from typing import Any

from hydra.plugins.sweeper import Sweeper


class SnnOptunaSweeper(Sweeper):
    """Runs :class:`snn.sweep.sweeper.OptunaSweep` (Optuna >= 4, pruning through a Lightning callback)."""

    def __init__(self, **options: Any) -> None:
        from snn.sweep.sweeper import OptunaSweep

        self.sweep_impl = OptunaSweep(**options)

    def setup(self, *, hydra_context, task_function, config) -> None:
        self.sweep_impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        return self.sweep_impl.sweep(arguments)
