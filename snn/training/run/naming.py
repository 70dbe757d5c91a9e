"""What a run's directory is named after: ``${run_name:}`` in ``hydra.run.dir``
(``outputs/<name>/<date>_<time>_<run_id>``) and ``hydra.sweep.dir`` (``multirun/<name>/...``).

- A training run: the experiment chosen, else ``<model>-<dataset>``.
- A sweep (``-m``): one name for the sweep and all its jobs, whatever they vary. It is the sweep's
  own config's (Hydra's multirun config, before any job's overrides), where a group the command
  line sweeps is named by its options joined with ``+``: ``-m model=adex,lif dataset=synthetic`` is
  ``adex+lif-synthetic``. The name is kept in the config's resolver cache, which Hydra copies
  from the sweep's config into each job's (``OmegaConf.copy_cache``, also across processes), so
  every job resolves ``hydra.sweep.dir`` to the directory the sweeper wrote ``multirun.yaml`` into.
- An evaluation (``train=false ckpt_path=...``): the name of the run that wrote the checkpoint
  (from ``<run>/.hydra/hydra.yaml`` beside ``<run>/checkpoints/``), else the checkpoint file's
  stem, followed by ``/eval``: ``outputs/adex-mnist/eval/<date>_<time>_<run_id>``, whatever data
  set or model the command line's defaults name (the model is the checkpoint's).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

# The config groups a run is named by.
NAMED_BY = ("experiment", "model", "dataset")


def name_from_choices(choices: Mapping[str, Any], swept: Mapping[str, str] | None = None) -> str:
    """``experiment``, else ``<model>-<dataset>``, from Hydra's group choices; ``swept`` names the
    groups a sweep varies (group -> its options joined with ``+``)."""
    swept = swept or {}

    def part(group: str) -> str:
        return swept.get(group) or str(choices.get(group))

    if swept.get("experiment") or choices.get("experiment"):
        return part("experiment")
    return f"{part('model')}-{part('dataset')}"


def swept_groups(task_overrides: Iterable[str]) -> dict[str, str]:
    """The groups of :data:`NAMED_BY` that the command line's overrides sweep, each named by its
    options joined with ``+`` (a ``glob(...)`` by the group's name)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(task_overrides))
    except Exception:  # Hydra reports a malformed override itself
        return {}
    swept = {}
    for override in parsed:
        group = override.get_key_element().lstrip("+~")
        if group in NAMED_BY and override.is_sweep_override():
            try:
                swept[group] = "+".join(override.sweep_string_iterator())
            except Exception:  # a glob: its options are only known to the config loader
                swept[group] = group
    return swept


def checkpoint_run_name(ckpt_path: str | Path) -> str:
    """The name of the run that wrote ``ckpt_path`` (its Hydra record beside ``checkpoints/``), else
    the checkpoint file's stem."""
    path = Path(str(ckpt_path)).expanduser()
    run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    record = run / ".hydra" / "hydra.yaml"
    try:
        choices = OmegaConf.load(record).hydra.runtime.choices
        return name_from_choices(choices)
    except Exception:  # no record (a checkpoint from elsewhere), or not one Hydra wrote
        return path.stem or "checkpoint"


# Where run_name keeps its value in a config's resolver cache. OmegaConf refuses use_cache=True for a
# resolver that reads _root_, so run_name caches itself, under a key no resolver is registered as.
CACHE_KEY = "snn.run_name"


def run_name(*, _root_: DictConfig) -> str:
    """The ``${run_name:}`` resolver: see the module docstring. The first value a config resolves
    is kept in its cache (and copied into a sweep's jobs)."""
    cache = OmegaConf.get_cache(_root_).setdefault(CACHE_KEY, {})
    if "name" not in cache:
        if not _root_.get("train", True) and _root_.get("ckpt_path"):
            cache["name"] = f"{checkpoint_run_name(_root_.ckpt_path)}/eval"
        else:
            hydra = _root_.hydra
            cache["name"] = name_from_choices(hydra.runtime.choices, swept_groups(hydra.overrides.task))
    return cache["name"]


def register_run_name() -> None:
    """Registers the ``${run_name:}`` resolver (module docstring)."""
    if not OmegaConf.has_resolver("run_name"):
        OmegaConf.register_new_resolver("run_name", run_name)
