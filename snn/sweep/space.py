"""A search space written in Hydra's sweep grammar, as Optuna distributions.

``hydra.sweeper.params`` maps config keys to Hydra override values (and the command line adds more)::

    optimizer.lr: tag(log, interval(3.0e-4, 1.0e-2))   # FloatDistribution(3e-4, 1e-2, log=True)
    model.neuron.alpha: interval(2.0, 200.0)           # FloatDistribution(2, 200)
    model.hidden: choice(128, 256, 512)                 # CategoricalDistribution((128, 256, 512))
    model.T: range(8, 33, 8)                            # IntDistribution(8, 32, step=8)
    model.hidden: tag(int, log, interval(64, 1024))     # IntDistribution(64, 1024, log=True)
    trainer.max_epochs: 3                               # not searched: the same in every trial

``tag(log, ...)`` samples on a log scale, ``tag(int, ...)`` whole numbers; ``range`` of floats and
``shuffle(range(...))`` are categorical (in the range's order). A value without a sweep is fixed
(passed to every trial as it is). The grammar is the one ``hydra-optuna-sweeper`` read, so its
search files keep working.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep, Transformer
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution


class SearchSpaceError(ValueError):
    """A search space entry that Optuna cannot sample: the message names the key and the grammar."""


def _choices(override: Override) -> list[Any]:
    choices = list(override.sweep_iterator(transformer=Transformer.encode))
    for choice in choices:
        if not isinstance(choice, str | int | float | bool | type(None)):
            raise SearchSpaceError(
                f"{override.input_line}: a choice is one of str, int, float, bool or null, got {choice!r}; "
                "lists and dicts cannot be Optuna categories (name them in a config group and choose the group)."
            )
    return choices


def distribution(override: Override) -> BaseDistribution | str:
    """The Optuna distribution of a sweep override, or the value of a plain one (as a string)."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()
    value = override.value()
    if isinstance(value, ChoiceSweep):
        return CategoricalDistribution(_choices(override))
    if isinstance(value, RangeSweep):
        shuffled, value.shuffle = value.shuffle, False  # choices in order: a seeded sampler picks by index
        if shuffled or any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return CategoricalDistribution(_choices(override))
        # range(start, stop, step) excludes stop, as Python's range; IntDistribution includes high.
        values = range(int(value.start), int(value.stop), int(value.step))
        if len(values) == 0:
            raise SearchSpaceError(f"{override.input_line} holds no value.")
        return IntDistribution(values[0], values[-1], step=int(value.step))
    if isinstance(value, IntervalSweep):
        log = "log" in value.tags
        low, high = value.start, value.end  # Hydra reads an interval's ends as floats
        if low is None or high is None or not low < high:
            raise SearchSpaceError(f"{override.input_line}: an interval needs start < end.")
        if log and low <= 0:
            raise SearchSpaceError(f"{override.input_line}: a log-scale interval needs start > 0.")
        if "int" in value.tags:
            if low != int(low) or high != int(high):
                raise SearchSpaceError(f"{override.input_line}: an int interval has whole ends.")
            return IntDistribution(int(low), int(high), log=log)
        return FloatDistribution(float(low), float(high), log=log)
    raise SearchSpaceError(
        f"{override.input_line}: glob() cannot be sampled by Optuna; use choice(...), range(...), interval(...) "
        "or tag(log, interval(...))."
    )


def search_space(params: Mapping[str, Any] | None, arguments: list[str] = ()
                 ) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """The sampled and the fixed overrides of ``params`` (``hydra.sweeper.params``) and ``arguments``
    (the command line's overrides; a key in both takes the command line's): ``(distributions, fixed)``."""
    lines = [f"{key}={value}" for key, value in (params or {}).items()] + list(arguments)
    distributions: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in OverridesParser.create().parse_overrides(lines):
        key = override.get_key_element()
        value = distribution(override)
        distributions.pop(key, None)
        fixed.pop(key, None)
        if isinstance(value, BaseDistribution):
            distributions[key] = value
        else:
            fixed[key] = value
    return distributions, fixed


def as_override(key: str, value: Any) -> str:
    """``key=value`` as Hydra parses it back to ``value`` (floats in full precision)."""
    if isinstance(value, bool):
        return f"{key}={str(value).lower()}"
    if value is None:
        return f"{key}=null"
    return f"{key}={value!r}" if isinstance(value, float) else f"{key}={value}"
