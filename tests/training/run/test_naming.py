"""What run, sweep and evaluation directories are named after (snn/training/run/naming.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from snn.training.run.directory import register_run_id
from snn.training.run.naming import checkpoint_run_name, name_from_choices, swept_groups
from tests.helpers import compose_config


def test_a_sweep_names_the_groups_it_varies_by_their_options():
    assert swept_groups(["model=adex,lif", "dataset=synthetic", "seed=1,2"]) == {"model": "adex+lif"}
    assert swept_groups(["experiment=glob(*)"]) == {"experiment": "experiment"}
    choices = {"experiment": None, "model": "adex", "dataset": "synthetic"}  # the sweep config's (defaults)
    assert name_from_choices(choices, swept_groups(["model=adex,lif"])) == "adex+lif-synthetic"
    assert name_from_choices(choices, swept_groups(["experiment=shd_adex,shd_lif"])) == "shd_adex+shd_lif"
    assert name_from_choices(choices) == "adex-synthetic"


def write_run(run: Path, **choices: str | None) -> Path:
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save({"hydra": {"runtime": {"choices": choices}}}, run / ".hydra" / "hydra.yaml")
    (run / "checkpoints").mkdir()
    ckpt = run / "checkpoints" / "epoch_003.ckpt"
    ckpt.write_bytes(b"")
    return ckpt


def test_an_evaluation_is_filed_under_the_checkpoints_run_not_the_defaults(tmp_path):
    register_run_id()  # ${run_id:} and ${run_name:}
    ckpt = write_run(tmp_path / "outputs" / "x" / "run1", experiment=None, model="rlif", dataset="store_recall")
    assert checkpoint_run_name(ckpt) == "rlif-store_recall"
    cfg = compose_config("train=false", f"ckpt_path={ckpt}", hydra=True)  # defaults: model=adex dataset=mnist
    assert Path(cfg.hydra.run.dir).parts[:3] == ("outputs", "rlif-store_recall", "eval")
    experiment = write_run(tmp_path / "e", experiment="shd_lif", model="rlif", dataset="shd")
    assert checkpoint_run_name(experiment) == "shd_lif"

    users = tmp_path / "mine" / "my_model.ckpt"  # not written by a Hydra run
    users.parent.mkdir()
    users.write_bytes(b"")
    cfg = compose_config("train=false", f"ckpt_path={users}", hydra=True)
    assert Path(cfg.hydra.run.dir).parts[:3] == ("outputs", "my_model", "eval")
    # A training run that resumes a checkpoint is named as any training run.
    cfg = compose_config("dataset=synthetic", f"ckpt_path={users}", hydra=True)
    assert Path(cfg.hydra.run.dir).parts[:2] == ("outputs", "adex-synthetic")


def test_a_configs_first_name_is_kept_and_travels_with_its_cache():
    """Hydra builds each job's config from the sweep's and copies the sweep's resolver cache into it:
    the job resolves the sweep's name, not its own choices'."""
    register_run_id()  # ${run_id:} and ${run_name:}
    sweep = compose_config("model=adex", hydra=True)
    job = compose_config("model=lif", hydra=True)
    assert Path(sweep.hydra.sweep.dir).parts[1] == "adex-mnist"  # resolved first, as the sweeper does
    OmegaConf.copy_cache(from_config=sweep, to_config=job)
    assert Path(job.hydra.sweep.dir).parent == Path(sweep.hydra.sweep.dir).parent
    assert Path(compose_config("model=lif", hydra=True).hydra.sweep.dir).parts[1] == "lif-mnist"


@pytest.mark.parametrize("ckpt", ["", "relative/last.ckpt"])
def test_names_of_checkpoints_without_a_record(ckpt):
    assert checkpoint_run_name(ckpt) == (Path(ckpt).stem or "checkpoint")
