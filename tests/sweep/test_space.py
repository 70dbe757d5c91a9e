"""Hydra's sweep grammar as Optuna distributions (snn/sweep/space.py), and the sweep's checks of its
keys before any trial."""

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from snn.sweep.space import SearchSpaceError, as_override, search_space
from snn.sweep.sweeper import SweepError, check_keys
from tests.helpers import compose_config


def test_each_sweep_kind_becomes_its_distribution():
    distributions, fixed = search_space({
        "optimizer.lr": "tag(log, interval(3.0e-4, 1.0e-2))",
        "model.neuron.alpha": "interval(2.0, 200.0)",
        "model.hidden": "choice(128, 256, 512)",
        "model.T": "range(8, 33, 8)",
        "seed": "tag(int, interval(1, 5))",
        "model.neuron.tau_mem_inv": "tag(int, log, interval(16, 1024))",
        "model.decoder": "shuffle(range(1, 4))",
        "trainer.max_epochs": "3",
    })
    assert distributions == {
        "optimizer.lr": FloatDistribution(3.0e-4, 1.0e-2, log=True),
        "model.neuron.alpha": FloatDistribution(2.0, 200.0),
        "model.hidden": CategoricalDistribution((128, 256, 512)),
        "model.T": IntDistribution(8, 32, step=8),  # range excludes its stop, as Python's
        "seed": IntDistribution(1, 5),
        "model.neuron.tau_mem_inv": IntDistribution(16, 1024, log=True),
        "model.decoder": CategoricalDistribution((1, 2, 3)),
    }
    assert fixed == {"trainer.max_epochs": "3"}


def test_the_command_line_adds_to_and_overrides_the_search_file():
    distributions, fixed = search_space({"optimizer.lr": "interval(0.1, 0.2)", "seed": "1"},
                                        ["optimizer.lr=0.5", "model=lif,adex", "dataset=synthetic"])
    assert distributions == {"model": CategoricalDistribution(("lif", "adex"))}
    assert fixed == {"optimizer.lr": "0.5", "seed": "1", "dataset": "synthetic"}


@pytest.mark.parametrize(("params", "message"), [
    ({"optimizer.lr": "interval(0.2, 0.1)"}, "start < end"),
    ({"optimizer.lr": "tag(log, interval(0.0, 0.1))"}, "start > 0"),
    ({"model": "glob(*)"}, "glob"),
    ({"model.T": "range(8, 8)"}, "holds no value"),
    ({"model.T": "tag(int, interval(8, 8.5))"}, "start < end|whole ends"),
])
def test_spaces_optuna_cannot_sample_are_refused_with_the_line(params, message):
    with pytest.raises(SearchSpaceError, match=message):
        search_space(params)


@pytest.mark.parametrize("value", [1.0e-5, 0.1 + 0.2, 3, "lif", True, None])
def test_a_sampled_value_goes_back_to_hydra_unchanged(value):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_override(as_override("key", value))
    assert parsed.value() == value and type(parsed.value()) is type(value)


def test_a_misspelt_searched_key_is_refused_with_the_key_it_resembles():
    cfg = compose_config("hparams_search=fashion_mnist_optuna", hydra=True)
    check_keys(cfg, ["model.neuron.alpha", "model", "+model.extra", "optimizer.lr"])  # keys and groups exist
    with pytest.raises(SweepError, match=r"neuron\.alfa, which is not a key .* Did you mean model\.neuron\.alpha"):
        check_keys(cfg, ["model.neuron.alfa"])
    with pytest.raises(SweepError, match="Add a new key with a leading '\\+'"):
        check_keys(cfg, ["completely.different"])


def test_the_search_file_searches_keys_of_its_experiment():
    """A misspelt key would make every trial fail (or silently add an unused key with ``+``)."""
    cfg = compose_config("hparams_search=fashion_mnist_optuna", hydra=True)
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_ == "hydra_plugins.snn_optuna_sweeper.SnnOptunaSweeper"
    distributions, fixed = search_space(sweeper.params)
    assert set(distributions) == {"model.neuron.alpha", "optimizer.lr", "model.T", "model.hidden",
                                  "model.neuron.tau_mem_inv", "model.neuron.tau_syn_inv"} and not fixed
    check_keys(cfg, list(distributions))
    assert sweeper.sampler._target_ == "optuna.samplers.TPESampler" and sweeper.sampler.seed
    assert sweeper.direction == "maximize" and cfg.optimized_metric == "val/acc"
    assert cfg.callbacks.optuna_pruning._target_ == "snn.sweep.OptunaPruning"
    assert cfg.dataset._target_ == "snn.data.FashionMNISTDataModule"  # the experiment's data
