"""The sweep tests need Optuna >= 4 (the ``optuna`` extra, in ``dev``: CI installs it)."""

import pytest

optuna = pytest.importorskip("optuna", reason="the optuna extra is not installed (pip install -e '.[optuna]'); "
                                              "CI installs it with .[dev]")
if int(optuna.__version__.split(".")[0]) < 4:
    pytest.skip(f"optuna {optuna.__version__} is older than the optuna extra's >= 4 (pip install -e '.[optuna]'); "
                "CI installs the extra with .[dev]", allow_module_level=True)
