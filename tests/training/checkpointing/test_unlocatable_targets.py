"""A ``_target_`` that cannot be found is explained: the module that failed to import (the user's
own package, or one it imports), how to make it importable, or the module that lacks the name --
where Hydra says only "Error locating target"."""

from __future__ import annotations

import pytest

from snn.training import build_from_config
from snn.training.checkpointing.instantiation import unlocatable_target


@pytest.fixture
def user_code(tmp_path, monkeypatch):
    """mynet/ (importable, with a class) and broken/ (imports a package that is not installed)."""
    (tmp_path / "mynet").mkdir()
    (tmp_path / "mynet" / "__init__.py").write_text("class MyNet:\n    pass\n")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "__init__.py").write_text("import not_installed_anywhere_xyz\n\nclass Net:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    import sys

    for name in ("mynet", "broken"):
        sys.modules.pop(name, None)


def test_a_package_not_on_the_path_is_named_with_how_to_reach_it():
    message = unlocatable_target("mynet_nowhere.models.MyNet", "model")
    assert "the module 'mynet_nowhere' cannot be imported" in message
    assert "PYTHONPATH=<that folder> snn-train" in message and "pip install -e <project folder>" in message
    assert "full dotted path" in unlocatable_target("MyNet", "model")


@pytest.mark.usefixtures("user_code")
def test_a_missing_dependency_a_missing_class_and_a_found_one():
    message = unlocatable_target("broken.Net", "model")
    assert "importing the module 'broken' failed because the module 'not_installed_anywhere_xyz'" in message
    assert "pip install" in message
    assert "'mynet' (" in unlocatable_target("mynet.MyNett", "model")
    assert "has no attribute or submodule 'MyNett'" in unlocatable_target("mynet.MyNett", "model")
    assert unlocatable_target("mynet.MyNet", "model") is None
    with pytest.raises(ValueError, match="importing the module 'broken' failed"):
        build_from_config({"_target_": "broken.Net"}, "model")
