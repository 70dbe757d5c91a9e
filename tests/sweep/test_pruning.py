"""The pruning callback outside a sweep: a config error naming its key, before anything runs."""

import pytest

from snn.training.checkpointing.instantiation import instantiate_config


def test_the_pruning_callback_outside_a_sweep_is_a_config_error_naming_its_key():
    node = {"_target_": "snn.sweep.OptunaPruning", "monitor": "val/acc", "trial": None}  # ${hydra:job.num} of a run
    with pytest.raises(ValueError, match=r"^Invalid callbacks\.optuna_pruning config: this run is not a trial of an "
                                         r"Optuna sweep.*"
                                         r"run the search with -m"):
        instantiate_config(node, "callbacks.optuna_pruning")
