"""Config errors: reported to the user in one paragraph, without a traceback, with the valid choices."""

from __future__ import annotations

import difflib
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from snn.errors import ConfigError  # noqa: F401 (re-exported)


def explain_composition_error(conf_dir: Path, overrides: list[str]) -> str | None:
    """One paragraph on why Hydra cannot compose ``overrides`` (an unknown key or option) with the
    config root ``conf_dir``, with the valid choices, or None when they compose. Hydra's own message
    lists neither valid keys nor, in one line, the options."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException, MissingConfigException

    def compose_(ovs: list[str]) -> DictConfig:
        with initialize_config_dir(str(conf_dir.resolve()), version_base="1.3"):
            return compose("config", overrides=ovs)

    try:
        compose_(overrides)
        return None
    except MissingConfigException as error:
        missing = str(error.missing_cfg_file or "")
        group, _, option = missing.rpartition("/")
        if not group or not error.options:
            return " ".join(str(error).split())
        return f"Unknown {group} {option!r}; choose one of {', '.join(error.options)} (the files in conf/{group}/)."
    except ConfigCompositionException as error:
        key = getattr(error.__cause__, "full_key", None)
        if not key:
            return " ".join(str(error).split("Config search path")[0].split())
        parent, _, name = key.rpartition(".")

        def typed(override: str) -> str:
            return override.lstrip("+~").split("=", 1)[0]

        # The override(s) under the unknown key: key itself, or a key below it (model.nueron.tau_mem_inv
        # is reported as model.nueron).
        bad = [o for o in overrides if typed(o) == key or typed(o).startswith(key + ".")]
        others = [o for o in overrides if o not in bad]
        try:
            node = OmegaConf.select(compose_(others), parent) if parent else compose_(others)
        except Exception:  # the other overrides are broken as well: explain this one alone
            node = None
        where = f"'{parent}'" if parent else "the top level"
        valid, close = "", ""
        if isinstance(node, DictConfig):
            keys = list(map(str, node))
            valid = f" Valid keys at {where}: {', '.join(keys)}."
            close = "".join(f" Did you mean {(parent + '.' if parent else '') + k!r}?"
                            for k in difflib.get_close_matches(name, keys, n=1))
        new = typed(bad[0]) if bad else key
        return f"Unknown config key {key!r}.{close}{valid} To add a new key on purpose, write +{new}=<value>."
    except Exception:  # anything else (override syntax...) is Hydra's to report
        return None
