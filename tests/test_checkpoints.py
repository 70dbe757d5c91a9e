"""Checkpoints: best and last, rebuilding the model from one file, exact resume, evaluation, mismatches."""

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from train_hooks import with_callback

from snn.training import SpikingClassifierModule, load_checkpoint, load_classifier
from train import ConfigError, train

ROOT = Path(__file__).parents[1]
# Randomness everywhere a resume could lose it: shuffled batches, Poisson input spikes, dropout.
RANDOM = ["dataset=synthetic", "model.T=6", "model.hidden=16", "model.conv=null", "model.encoder.kind=poisson",
          "model.dropout=0.2", "trainer.max_epochs=2", "trainer.accelerator=cpu", "logger=none", "test=false"]


def make_cfg(tmp_path, *overrides: str):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"paths.output_dir={tmp_path}", f"paths.data_dir={tmp_path / 'data'}", *overrides])


class KillAtEpoch(L.Callback):
    """Stands in for a killed job: Ctrl-C when epoch ``epoch`` starts."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            raise KeyboardInterrupt


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


@pytest.mark.parametrize("rng_state", [True, False])
def test_resumed_run_ends_with_exactly_the_weights_of_an_uninterrupted_run(tmp_path, monkeypatch, rng_state):
    extra = [] if rng_state else ["callbacks.rng_state=null"]
    train(make_cfg(tmp_path / "full", *RANDOM, *extra))

    with monkeypatch.context() as m:
        with_callback(m, KillAtEpoch(1))
        with pytest.raises(SystemExit):
            train(make_cfg(tmp_path / "killed", *RANDOM, *extra))
    killed = tmp_path / "killed" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(killed)["epoch"] == 0  # only epoch 1 of 2 was completed
    train(make_cfg(tmp_path / "resumed", *RANDOM, *extra, f"ckpt_path={killed}"))

    full, resumed = weights(tmp_path / "full" / "checkpoints" / "last.ckpt"), weights(tmp_path / "resumed" / "checkpoints" / "last.ckpt")
    assert load_checkpoint(tmp_path / "resumed" / "checkpoints" / "last.ckpt")["global_step"] == 12
    same = all(torch.equal(full[k], resumed[k]) for k in full)
    # With the generator states in the checkpoint the resume is bit-exact; without them the
    # shuffling, Poisson spikes and dropout of epoch 2 differ (which shows what the test checks).
    assert same is rng_state


def test_best_and_last_checkpoints_and_the_model_rebuilt_from_one_file(tmp_path):
    best_val_acc = train(make_cfg(tmp_path, *RANDOM, "model.encoder.kind=constant", "trainer.max_epochs=3"))
    folder = tmp_path / "checkpoints"
    best = sorted(folder.glob("epoch_*.ckpt"))
    assert len(best) == 1 and (folder / "last.ckpt").is_file()
    assert load_checkpoint(folder / "last.ckpt")["epoch"] == 2  # last: the final epoch, whatever val/acc did
    ckpt = load_checkpoint(best[0])
    state = next(v for k, v in ckpt["callbacks"].items() if "val/acc" in k)
    assert Path(state["best_model_path"]) == best[0] and float(state["best_model_score"]) == pytest.approx(best_val_acc)
    assert ckpt["hyper_parameters"]["config"]["model"]["hidden"] == 16  # the whole run config travels along

    net = load_classifier(folder / "last.ckpt")
    assert not net.training and type(net).__name__ == "SpikingClassifier"
    module = SpikingClassifierModule.load_from_checkpoint(folder / "last.ckpt", map_location="cpu", weights_only=False).eval()
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(net(x), module(x), rtol=0, atol=0)


def test_evaluation_entry_reports_the_test_metrics_of_a_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    train(make_cfg(run, *RANDOM, "model.encoder.kind=constant", "test=true", "logger=csv"))
    best = next((run / "checkpoints").glob("epoch_*.ckpt"))
    logged = [line.split(",") for line in (run / "csv" / "metrics.csv").read_text().splitlines()]
    column = logged[0].index("test/acc")
    test_acc = float(next(row[column] for row in logged[1:] if row[column]))

    # Only the dataset comes from the config: the model is the checkpoint's (other defaults here).
    acc = train(make_cfg(tmp_path / "eval", "dataset=synthetic", "train=false", f"ckpt_path={best}", "logger=none"))
    assert acc == test_acc
    assert "Evaluating" in capsys.readouterr().out

    with pytest.raises(ConfigError, match="train=false evaluates a checkpoint: add ckpt_path"):
        train(make_cfg(tmp_path / "eval2", "dataset=synthetic", "train=false"))
    with pytest.raises(ConfigError, match=r"takes inputs \[1, 8, 8\] with 4 classes.*\[1, 8, 8\] with 5"):
        train(make_cfg(tmp_path / "eval3", "dataset=synthetic", "dataset.num_classes=5", "train=false", f"ckpt_path={best}"))


def test_checkpoint_of_another_model_config_is_refused(tmp_path):
    train(make_cfg(tmp_path / "a", *RANDOM, "trainer.max_epochs=1"))
    ckpt = tmp_path / "a" / "checkpoints" / "last.ckpt"
    with pytest.raises(ConfigError, match=r"different model config.*hidden: 16 -> 20.*neuron.kind: 'adex' -> 'lif'") as error:
        train(make_cfg(tmp_path / "b", *RANDOM, "model=lif", "model.hidden=20", "model.conv=null",
                       "model.encoder.kind=poisson", "model.dropout=0.2", f"ckpt_path={ckpt}"))
    assert "\n" not in str(error.value)
    assert not (tmp_path / "b" / "checkpoints").exists()  # refused before anything ran


def test_unreadable_checkpoints_give_clear_errors(tmp_path):
    train(make_cfg(tmp_path / "a", *RANDOM, "trainer.max_epochs=1"))
    good = (tmp_path / "a" / "checkpoints" / "last.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=f"{truncated} is not a readable checkpoint"):
        load_classifier(truncated)
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"lr": 1}}, foreign)
    with pytest.raises(ValueError, match="does not record the model config"):
        load_classifier(foreign)
    with pytest.raises(FileNotFoundError, match="missing.ckpt does not exist"):
        load_classifier(tmp_path / "missing.ckpt")
    with pytest.raises(ConfigError, match="missing.ckpt does not exist"):
        train(make_cfg(tmp_path / "b", *RANDOM, f"ckpt_path={tmp_path / 'missing.ckpt'}"))
