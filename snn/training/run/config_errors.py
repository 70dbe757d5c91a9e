"""Config errors: reported to the user in one paragraph, without a traceback, with the valid choices."""

from __future__ import annotations

import difflib
import sys
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


def search_path_entries(args: list[str]) -> list[tuple[str, str]]:
    """``(where given, entry)`` for each config directory the command line adds: ``--config-dir``
    (``-cd``) and the items of ``hydra.searchpath=[...]``."""
    entries = []
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            entries.append(("--config-dir", args[i + 1]))
        elif arg.startswith("--config-dir="):
            entries.append(("--config-dir", arg.split("=", 1)[1]))
        elif arg.lstrip("+").startswith("hydra.searchpath="):
            from hydra.core.override_parser.overrides_parser import OverridesParser

            try:
                value = OverridesParser.create().parse_override(arg).value()
            except Exception:  # malformed: Hydra says so
                continue
            entries += [("hydra.searchpath", str(item)) for item in (value if isinstance(value, list) else [value])]
    return entries


def explain_search_path_error(args: list[str]) -> str | None:
    """Why a config directory the command line adds cannot be read, with what to do, or None. Hydra
    only warns (``path=... is not available``) and then reports the user's config group option as
    unknown, which hides the cause: a package not importable by this Python, or a missing folder."""
    import importlib.util

    for where, entry in search_path_entries(args):
        scheme, _, location = entry.rpartition("://")
        if scheme == "pkg":
            try:
                found = importlib.util.find_spec(location) is not None
            except ModuleNotFoundError:
                found = False
            if not found:
                top = location.split(".")[0]
                return (f"{where} names pkg://{location}, but this Python ({sys.executable}) cannot import "
                        f"{location}. Install the project that holds it into this environment (pip install -e "
                        f"<your project>), or add the folder that contains {top}/ to PYTHONPATH "
                        f"(PYTHONPATH=<that folder> {Path(sys.argv[0]).name} ...).")
        elif scheme in ("file", ""):
            folder = Path(location).expanduser()
            if not folder.is_dir():
                return (f"{where} names {entry}, which is not a folder (a relative path starts at the directory "
                        f"you run in, {Path.cwd()}). Give the folder that holds your config groups "
                        "(model/, dataset/, ...), e.g. --config-dir=$PWD/conf or hydra.searchpath=[file://$PWD/conf].")
    return None


def with_config_dir_as_search_path(args: list[str]) -> list[str] | None:
    """``args`` with ``--config-dir X`` written as the override ``hydra.searchpath=[file://X, ...]``
    (what Hydra does with it), so that a single run's overrides can be checked before Hydra starts;
    None when the command line has other flags (sweeps, --cfg ...: Hydra's to check)."""
    out, extra, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            extra.append(f"file://{Path(args[i + 1]).expanduser().resolve()}")
            i += 2
            continue
        if arg.startswith("--config-dir="):
            extra.append(f"file://{Path(arg.split('=', 1)[1]).expanduser().resolve()}")
        elif arg.startswith("-"):
            return None
        else:
            out.append(arg)
        i += 1
    if not extra:
        return out
    given = [entry for where, entry in search_path_entries(out) if where == "hydra.searchpath"]
    out = [a for a in out if not a.lstrip("+").startswith("hydra.searchpath=")]
    return [*out, f"hydra.searchpath=[{','.join([*extra, *given])}]"]
