"""Where a trial finds its study: in this process (the sweeper's, whatever its storage) or, from
another process (a launcher's worker), through the study's storage.

The sweeper registers its study here while it runs; :class:`snn.sweep.OptunaPruning` looks it up by
name. A launcher that runs trials in other processes (SLURM, joblib) needs a storage both sides
reach: ``hydra.sweeper.storage=sqlite:///<file on a shared file system>`` or a database URL.
"""

from __future__ import annotations

from contextlib import contextmanager

import optuna

# Studies of the sweeps running in this process, by study name (None: a study without a name).
_RUNNING: dict[str | None, optuna.Study] = {}

# The user attribute that marks a trial stopped by its pruning callback (the epoch it stopped after).
PRUNED_AT = "pruned_at_epoch"


@contextmanager
def running(study: optuna.Study, name: str | None):
    """Makes ``study`` the one trials named ``name`` report to in this process, while the sweep runs."""
    _RUNNING[name] = study
    try:
        yield study
    finally:
        _RUNNING.pop(name, None)


def open_trial(number: int, study_name: str | None, storage: str | None,
               pruner: optuna.pruners.BasePruner | None = None) -> optuna.Trial:
    """Trial ``number`` of the study ``study_name``: the one this process's sweeper runs, else the
    one in ``storage`` (judged by ``pruner``, which must be the sweeper's)."""
    study = _RUNNING.get(study_name)
    if study is None:
        if storage is None:
            raise RuntimeError(
                f"Trial {number} of the Optuna study {study_name!r} runs in another process than its sweeper, "
                "and the study is kept in the sweeper's memory (hydra.sweeper.storage=null): give both a storage, "
                "e.g. hydra.sweeper.storage=sqlite:///<file on a file system the trials share>."
            )
        if study_name is None:
            raise RuntimeError("A trial in another process finds its study by name: set hydra.sweeper.study_name.")
        study = optuna.load_study(study_name=study_name, storage=storage, pruner=pruner)
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if trial.number == number:
            return optuna.Trial(study, trial._trial_id)
    raise RuntimeError(f"The Optuna study {study.study_name!r} has no running trial {number}: was it told already?")
