"""The Optuna sweep behind ``hydra/sweeper=snn_optuna`` (the plugin class that Hydra finds is
``hydra_plugins.snn_optuna_sweeper.SnnOptunaSweeper``; this is its body).

One sweep, one directory (``hydra.sweep.dir``): ``multirun.yaml`` (the sweep's config), one run per
trial in ``<trial number>/`` (the launcher's job number is the trial's number), and
``optimization_results.yaml`` (the best trial and every trial's state, value, parameters and run),
rewritten after each batch so that a stopped sweep leaves its record.

For each batch of ``n_jobs`` trials: ask the study for parameters, compose each trial's config
(before any run: a misspelt key or an unknown group option stops the sweep with its message), launch
the batch, tell the study each trial's return value (``optimized_metric``), or that it was pruned
(:class:`snn.sweep.OptunaPruning`) or failed. ``max_failure_rate`` is the fraction of ``n_trials``
that may fail before the sweep stops.

Resuming: with a ``storage``, the same command adds ``n_trials`` trials to the study. A seeded
sampler is then seeded with ``seed + trials already in the study``: the whole sequence of sessions
replays from the seed, and a resumed session does not propose the first session's trials again.
"""

from __future__ import annotations

import difflib
import logging
import math
import sys
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from .space import SearchSpaceError, as_override, search_space
from .studies import PRUNED_AT, running

log = logging.getLogger(__name__)

PRUNING_TARGET = "snn.sweep.OptunaPruning"
RESULTS_FILE = "optimization_results.yaml"


class SweepError(ValueError):
    """A sweep that cannot start as configured: the message says which key and what to do."""


class TooManyFailures(RuntimeError):
    """More trials failed than ``max_failure_rate`` allows."""


def _config_keys(config: Any, prefix: str = "") -> list[str]:
    if not OmegaConf.is_dict(config):
        return []
    keys = []
    for key in config.keys():
        path = f"{prefix}{key}"
        keys.append(path)
        node = config._get_node(key)
        if OmegaConf.is_dict(node) and not node._is_missing() and not node._is_interpolation():
            keys += _config_keys(node, f"{path}.")
    return keys


def check_keys(config: DictConfig, keys: list[str]) -> None:
    """Every searched or fixed key names a config key or a config group (``+key`` adds one)."""
    groups = set(config.hydra.runtime.choices.keys())
    known = None
    for key in keys:
        if key.startswith(("+", "~")) or key.startswith("hydra.") or key in groups:
            continue
        if OmegaConf.select(config, key, default=KeyError, throw_on_missing=False) is not KeyError:
            continue
        known = known if known is not None else [k for k in _config_keys(config) if not k.startswith("hydra")]
        close = difflib.get_close_matches(key, known, n=1)
        hint = f" Did you mean {close[0]}?" if close else " Add a new key with a leading '+'."
        raise SweepError(f"The search names {key}, which is not a key of the config.{hint}")


class OptunaSweep(Sweeper):
    """See the module docstring. The arguments are the keys of ``conf/hydra/sweeper/snn_optuna.yaml``;
    ``sampler`` and ``pruner`` are configs with a ``_target_`` (instantiated here), or None."""

    def __init__(self, sampler: Any, direction: str, storage: str | None, study_name: str | None, n_trials: int,
                 n_jobs: int, pruner: Any, max_failure_rate: float, params: Any) -> None:
        if direction not in ("maximize", "minimize"):
            raise SweepError(f"hydra.sweeper.direction is maximize or minimize, got {direction!r}.")
        if n_trials < 1 or n_jobs < 1:
            raise SweepError(f"hydra.sweeper.n_trials and n_jobs are at least 1, got {n_trials} and {n_jobs}.")
        if not 0.0 <= max_failure_rate <= 1.0:
            raise SweepError(f"hydra.sweeper.max_failure_rate is a fraction of n_trials in [0, 1], "
                             f"got {max_failure_rate}.")
        self.sampler_config, self.pruner_config = sampler, pruner
        self.direction, self.storage, self.study_name = direction, storage, study_name
        self.n_trials, self.n_jobs, self.max_failure_rate = n_trials, n_jobs, max_failure_rate
        self.params = params
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function)

    def _sampler(self, trials_before: int) -> optuna.samplers.BaseSampler | None:
        if self.sampler_config is None:
            return None
        seed = self.sampler_config.get("seed")
        if seed is not None and trials_before:
            return instantiate(self.sampler_config, seed=int(seed) + trials_before)
        return instantiate(self.sampler_config)

    def _check(self, distributions: dict, fixed: dict) -> None:
        """Before any trial: keys exist, every group option and the fixed overrides compose, and a
        pruner has the callback that reports to it."""
        check_keys(self.config, [*distributions, *fixed])
        groups = set(self.config.hydra.runtime.choices.keys())
        fixed_overrides = [f"{k}={v}" for k, v in fixed.items()]
        batch = [fixed_overrides]
        for key, dist in distributions.items():
            if key in groups and isinstance(dist, optuna.distributions.CategoricalDistribution):
                batch += [[*fixed_overrides, f"{key}={choice}"] for choice in dist.choices]
        self.validate_batch_is_legal(batch)
        if self.pruner_config is not None:
            callbacks = self.config.get("callbacks") or {}
            if not any(c and c.get("_target_") == PRUNING_TARGET for c in callbacks.values()):
                raise SweepError(
                    "hydra.sweeper.pruner is set, but no callback reports to it: add to the search file\n"
                    "callbacks:\n  optuna_pruning:\n    _target_: snn.sweep.OptunaPruning\n"
                    "    monitor: ${optimized_metric}\n    trial: ${hydra:job.num}\n"
                    "    study_name: ${hydra:sweeper.study_name}\n    storage: ${hydra:sweeper.storage}\n"
                    "    pruner: ${hydra:sweeper.pruner}\n(conf/hparams_search/fashion_mnist_optuna.yaml has it)."
                )

    def sweep(self, arguments: list[str]) -> list[JobReturn]:
        """Runs the sweep; a search that cannot start, or too many failed trials, end the process with
        one message (as train.py's runs do), not a traceback."""
        try:
            return self._sweep(arguments)
        except (SweepError, SearchSpaceError) as error:
            sys.exit(f"Config error: {error}")
        except TooManyFailures as error:
            sys.exit(f"Sweep stopped: {error}")

    def _sweep(self, arguments: list[str]) -> list[JobReturn]:
        assert self.config is not None and self.launcher is not None
        distributions, fixed = search_space(self.params, arguments)
        if not distributions:
            raise SweepError("The search has no parameter to sample: set hydra.sweeper.params (or give "
                             "key=choice(...), key=interval(a, b) on the command line).")
        self._check(distributions, fixed)

        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

        pruner = instantiate(self.pruner_config) if self.pruner_config is not None else None
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, direction=self.direction,
                                    pruner=pruner, load_if_exists=True)
        before = len(study.trials)
        study.sampler = self._sampler(before) or study.sampler
        log.info(f"Optuna study {study.study_name!r} ({self.storage or 'in memory'}): {before} trials before this "
                 f"sweep, {self.n_trials} more, sampler {type(study.sampler).__name__}, runs in {sweep_dir}")

        returns: list[JobReturn] = []
        launched = failures = 0
        run_dirs: dict[int, str] = {}
        with running(study, self.study_name):
            while launched < self.n_trials:
                trials = [study.ask(distributions) for _ in range(min(self.n_jobs, self.n_trials - launched))]
                launched += len(trials)
                fixed_overrides = tuple(f"{k}={v}" for k, v in fixed.items())
                batch = [tuple(as_override(k, v) for k, v in t.params.items()) + fixed_overrides for t in trials]
                done = self._launch(study, trials, batch)
                for trial, ret in zip(trials, done, strict=True):
                    failures += not self._tell(study, trial, ret)
                    if ret is not None and ret.hydra_cfg is not None:
                        run_dirs[trial.number] = str(ret.hydra_cfg.hydra.runtime.output_dir)
                returns += [r for r in done if r is not None]
                write_results(study, sweep_dir / RESULTS_FILE, run_dirs)
                if failures > self.max_failure_rate * self.n_trials:
                    raise TooManyFailures(
                        f"{failures} of {launched} trials failed, more than max_failure_rate="
                        f"{self.max_failure_rate} of n_trials={self.n_trials} allows; each failed trial's train.log "
                        f"in {sweep_dir} says why (the record: {sweep_dir / RESULTS_FILE})."
                    )
        return returns

    def _launch(self, study: optuna.Study, trials: list[optuna.Trial], batch: list[tuple[str, ...]]
                ) -> list[JobReturn | None]:
        """The batch's returns, one per trial (None: the job ended the process, e.g. train.py's exit
        on a config error or a non-finite loss, after saying why). Job numbers are trial numbers."""
        try:
            self.validate_batch_is_legal(batch)
        except Exception:
            for trial in trials:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            raise
        numbers = [t.number for t in trials]
        try:
            if numbers == list(range(numbers[0], numbers[0] + len(numbers))):
                return list(self.launcher.launch(batch, initial_job_idx=numbers[0]))
            # Another process shares the study: numbers interleave, so each trial is its own batch.
            return [self.launcher.launch([b], initial_job_idx=n)[0] for b, n in zip(batch, numbers, strict=True)]
        except SystemExit as stop:
            log.warning(f"Trial(s) {numbers} ended the process: {stop.code}")
            if self.max_failure_rate == 0.0:
                for trial in trials:
                    study.tell(trial, state=optuna.trial.TrialState.FAIL)
                raise
            return [None] * len(trials)

    @staticmethod
    def _tell(study: optuna.Study, trial: optuna.Trial, ret: JobReturn | None) -> bool:
        """Tells the study how ``trial`` ended; False when it failed."""
        state = optuna.trial.TrialState
        if ret is None or ret.status == JobStatus.FAILED:
            if ret is not None:
                log.warning(f"Trial {trial.number} failed: {ret._return_value!r}")
            study.tell(trial, state=state.FAIL)
            return False
        # The callback marked the trial through its own handle: read the storage, not this handle's cache.
        stored = next(t for t in study.get_trials(deepcopy=False) if t.number == trial.number)
        if PRUNED_AT in stored.user_attrs:
            study.tell(trial, state=state.PRUNED)
            return True
        try:
            value = float(ret.return_value)
        except (TypeError, ValueError):
            log.warning(f"Trial {trial.number} returned {ret.return_value!r}, not a number (optimized_metric)")
            study.tell(trial, state=state.FAIL)
            return False
        if not math.isfinite(value):
            log.warning(f"Trial {trial.number} returned {value}")
            study.tell(trial, state=state.FAIL)
            return False
        study.tell(trial, value)
        return True


def write_results(study: optuna.Study, path: Path, run_dirs: dict[int, str]) -> None:
    """``optimization_results.yaml``: the best trial (when one completed) and every trial of the study,
    with its run directory where this sweep ran it."""
    trials = []
    for t in study.get_trials(deepcopy=False):
        record = {"number": t.number, "state": t.state.name, "value": t.value, "params": dict(t.params)}
        if t.number in run_dirs:
            record["run_dir"] = run_dirs[t.number]
        trials.append(record)
    results: dict[str, Any] = {"name": "snn_optuna", "study_name": study.study_name,
                               "direction": study.direction.name.lower()}
    try:
        best = study.best_trial
        results.update(best_trial=best.number, best_value=best.value, best_params=dict(best.params))
    except ValueError:  # no trial completed
        pass
    results["trials"] = trials
    OmegaConf.save(OmegaConf.create(results), path)
