"""Building objects from Hydra configs (``_target_`` mappings) with errors that name the config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate


def build_from_config(spec: Any, what: str) -> Any:
    """``instantiate(spec)`` for a mapping with ``_target_``; anything else is returned as is.

    A ValueError raised by the target (a bad config value) comes out as a ValueError naming the
    config, not wrapped in Hydra's InstantiationException.
    """
    if not isinstance(spec, Mapping):
        return spec
    if "_target_" not in spec:
        raise ValueError(f"The {what} config needs a _target_ (e.g. torch.optim.Adam), got keys {sorted(spec)}.")
    try:
        return instantiate(spec, _convert_="all")
    except InstantiationException as error:
        if isinstance(error.__cause__, ValueError):
            raise ValueError(f"Invalid {what} config: {error.__cause__}") from error.__cause__
        raise
