"""Hydra configs: every option of every group composes and instantiates; CLI overrides reach the model."""

import subprocess
import sys

import pytest
import torch
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from snn.data import FashionMNISTDataModule, SyntheticDataModule
from snn.models import SpikingClassifier, SpikingConvClassifier
from snn.neurons import LIF, LIFAdEx
from snn.training.run import build
from tests.helpers import CONF, ROOT, make_cfg

GROUPS = ("model", "dataset", "trainer", "logger", "callbacks", "experiment", "debug")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_config_groups_are_complete():
    assert {"adex", "lif", "adex_conv"} <= set(options("model"))
    assert {"mnist", "fashion_mnist", "cifar10", "synthetic"} <= set(options("dataset"))
    assert {"default", "cpu", "gpu", "ddp"} <= set(options("trainer"))
    assert {"tensorboard", "csv", "none"} <= set(options("logger"))
    assert {"fashion_mnist_adex", "fashion_mnist_lif"} <= set(options("experiment"))
    assert {"fdr", "overfit"} <= set(options("debug"))


def test_defaults(tmp_path):
    cfg = make_cfg(tmp_path)
    assert cfg.model._target_ == "snn.models.SpikingClassifier" and cfg.model.neuron.kind == "adex"
    assert cfg.dataset._target_ == "snn.data.MNISTDataModule"
    assert cfg.optimized_metric == "val/acc"
    assert cfg.optimizer._partial_ and cfg.scheduler._partial_
    assert list(cfg.logger) == ["tensorboard"]


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_instantiates(tmp_path, group, option):
    overrides = [f"{group}={option}"]
    if group != "dataset" and group != "experiment":
        overrides.append("dataset=synthetic")  # small input: quick to build
    if group == "dataset" and option in ("shd", "ssc", "store_recall", "cue_accumulation",
                                         "sequential_mnist", "sequential_fashion_mnist"):
        overrides.append("model.conv=null")  # frames [T, channels]: no images to convolve
    if option == "gpu" and not torch.cuda.is_available():
        overrides.append("trainer.accelerator=cpu")  # still checks that the rest instantiates
    cfg = make_cfg(tmp_path, *overrides)
    OmegaConf.resolve(cfg)  # every interpolation resolves
    module, datamodule, trainer = build(cfg)
    x = torch.rand(2, *cfg.dataset.input_shape)
    assert module(x).shape == (2, cfg.dataset.num_classes)
    assert datamodule.num_classes == cfg.dataset.num_classes
    if group == "logger":
        assert len(trainer.loggers) == (0 if option == "none" else 1)
    if option == "ddp":
        assert type(trainer.strategy).__name__ == "DDPStrategy"


@pytest.mark.parametrize("model,cls,neuron", [("adex", SpikingClassifier, LIFAdEx), ("lif", SpikingClassifier, LIF),
                                              ("adex_conv", SpikingConvClassifier, LIFAdEx)])
def test_model_options_build_their_architecture(tmp_path, model, cls, neuron):
    module, _, _ = build(make_cfg(tmp_path, f"model={model}", "dataset=synthetic"))
    assert type(module.net) is cls
    assert all(type(layer) is neuron for layer in module.net.spiking_layers().values())


def test_experiments_train_on_offline_fashion_mnist(tmp_path):
    for name in ("fashion_mnist_adex", "fashion_mnist_lif"):
        module, datamodule, _ = build(make_cfg(tmp_path, f"experiment={name}"))
        assert isinstance(datamodule, FashionMNISTDataModule)
        assert "/usr/share/datasets/fashion-mnist" in map(str, datamodule.search_dirs)
    assert module.net.neuron["kind"] == "lif"


def test_every_neuron_parameter_is_settable_from_the_command_line(tmp_path):
    base = make_cfg(tmp_path, "dataset=synthetic")
    numeric = [k for k, v in base.model.neuron.items() if isinstance(v, float)]
    assert {"tau_mem_inv", "tau_syn_inv", "v_th", "adaptation_current", "delta_T", "alpha"} <= set(numeric)
    overrides = [f"model.neuron.{k}={base.model.neuron[k] + 0.5}" for k in numeric]
    overrides += ["model.neuron.method=atan", "model.T=7", "model.dt=0.002", "model.decoder=mean",
                  "model.readout.tau_mem_inv=33", "model.neuron.learnable=[tau_mem_inv]"]
    module, _, _ = build(make_cfg(tmp_path, "dataset=synthetic", *overrides))
    net = module.net
    layer = net.spiking_layers()["hidden1"]
    for k in numeric:
        if k == "alpha":
            assert layer.surrogate["alpha"] == base.model.neuron.alpha + 0.5
        else:
            assert torch.allclose(getattr(layer, k).float(), torch.tensor(base.model.neuron[k] + 0.5)), k
    assert layer.surrogate["method"] == "atan" and isinstance(layer.tau_mem_inv_raw, torch.nn.Parameter)
    assert (net.T, net.dt, net.decoder, float(net.readout.tau_mem_inv)) == (7, 0.002, "mean", 33.0)
    assert net.encoder.T == 7


@pytest.mark.parametrize("model", ["adex", "adex_conv", "radex"])
def test_integrator_reaches_every_adex_layer(tmp_path, model):
    """model.neuron.integrator builds every spiking layer with it; euler is the default."""
    dataset = "store_recall" if model == "radex" else "synthetic"
    default, _, _ = build(make_cfg(tmp_path, f"model={model}", f"dataset={dataset}"))
    assert {layer.p.integrator for layer in default.net.spiking_layers().values()} == {"euler"}
    cfg = make_cfg(tmp_path, f"model={model}", f"dataset={dataset}", "model.neuron.integrator=symplectic")
    module, _, _ = build(cfg)
    layers = module.net.spiking_layers().values()
    assert layers and {layer.p.integrator for layer in layers} == {"symplectic"}
    assert module(torch.rand(2, *cfg.dataset.input_shape)).shape == (2, cfg.dataset.num_classes)


@pytest.mark.parametrize(
    "override,message",
    [
        ("model.T=-1", "T must be a positive integer, got -1"),
        ("model.neuron.method=relu", r"relu.*(atan|super)"),
        ("model.decoder=last", r"Unknown decoder 'last'; choose one of \['max', 'mean'\]"),
        ("model.encoder.kind=rank",
         r"Unknown encoder 'rank'; choose one of \['constant', 'events', 'latency', 'poisson'\]"),
        ("model.neuron.kind=hh", r"Unknown neuron kind 'hh'"),
        ("model.neuron.tau_mem_inv=-5", "tau_mem_inv .* must be > 0"),
        ("model.conv.norm=layer", r"Unknown norm 'layer'; choose one of \['batch', 'group', 'none'\]"),
        ("model.neuron.kind=lif", r"no field\(s\) \['adaptation_current'.*model=lif"),
        ("model.neuron.integrator=rk4", r"Unknown integrator 'rk4'; valid integrators: euler, symplectic"),
        ("regularizer.rate_target=2", "rate_target in \\[0, 1\\]"),
        ("scheduler_interval=batch", "scheduler_interval must be 'epoch' or 'step'"),
        ("optimizer.lr=abc", "optimizer.lr must be a positive number, got 'abc'"),
        ("optimizer.lr=-1", "optimizer.lr must be a positive number, got -1"),
        ("optimizer.weight_decay=-0.5", "Invalid optimizer config: Invalid weight_decay value: -0.5"),
        ("scheduler._target_=torch.optim.lr_scheduler.StepLR",
         "Invalid scheduler config: .*unexpected keyword argument .T_max."),
        ("dataset.val_size=512", "dataset.val_size=512 holds out 512 of the 512 samples of the synthetic training set"),
    ],
)
def test_bad_values_fail_early_with_clear_errors(tmp_path, override, message):
    with pytest.raises(ValueError, match=message):
        build(make_cfg(tmp_path, "dataset=synthetic", override))


@pytest.mark.parametrize("accelerator,synced", [("cpu", False), ("auto", torch.cuda.is_available())])
def test_ddp_syncs_batch_norm_where_it_works(tmp_path, accelerator, synced, caplog):
    _, _, trainer = build(make_cfg(tmp_path, "dataset=synthetic", "trainer=ddp", f"trainer.accelerator={accelerator}",
                                   "trainer.devices=2"))
    assert (trainer.strategy._layer_sync is not None) is synced
    assert ("trainer.sync_batchnorm is off: SyncBatchNorm runs on GPUs only" in caplog.text) is not synced


def test_misspelled_keys_are_rejected_by_hydra(tmp_path):
    with pytest.raises(ConfigCompositionException, match="tau_mem"):
        make_cfg(tmp_path, "model.neuron.tau_mem=3")


@pytest.mark.slow
def test_command_line_sweep(tmp_path):
    """`python train.py -m model=adex,lif seed=1,2` runs four jobs, each in its own directory, all in
    one sweep directory with its multirun.yaml (the default hydra.sweep.dir, named after what varies)."""
    command = [sys.executable, str(ROOT / "train.py"), "-m", "model=adex,lif", "seed=1,2", "debug=fdr",
               "dataset=synthetic", "logger=none", f"paths.data_dir={tmp_path}"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (tmp_path / "multirun").iterdir()
    assert sweep_dir.name == "adex+lif-synthetic"
    (sweep_dir,) = sweep_dir.iterdir()
    assert (sweep_dir / "multirun.yaml").is_file()
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and p.name.isdigit())
    assert [r.name for r in runs] == ["0", "1", "2", "3"]
    configs = [OmegaConf.load(r / ".hydra" / "config.yaml") for r in runs]
    jobs = {(c.model.neuron.kind, c.seed) for c in configs}
    assert jobs == {("adex", 1), ("adex", 2), ("lif", 1), ("lif", 2)}


def test_synthetic_dataset_is_built_from_config(tmp_path):
    _, datamodule, _ = build(make_cfg(tmp_path, "dataset=synthetic", "dataset.num_classes=5", "dataset.noise=0.7"))
    assert isinstance(datamodule, SyntheticDataModule) and datamodule.num_classes == 5 and datamodule.noise == 0.7


COMMON_TRAINER_KEYS = ["max_steps=60", "max_time=00:00:05:00", "limit_train_batches=40", "limit_val_batches=0.5",
                       "limit_test_batches=3", "val_check_interval=20", "num_sanity_val_steps=0",
                       "accumulate_grad_batches=2", "overfit_batches=4", "fast_dev_run=true"]


@pytest.mark.parametrize("trainer", options("trainer"))
def test_common_trainer_arguments_need_no_plus(tmp_path, trainer):
    """Lightning's limit_*_batches, max_steps, ... are declared in conf/trainer/default.yaml (every
    trainer option starts from it), so ``trainer.limit_train_batches=40`` works without Hydra's
    ``+``; each declared key is a Trainer argument, and its default is Lightning's."""
    import inspect

    import lightning

    cfg = make_cfg(tmp_path, f"trainer={trainer}", *(f"trainer.{o}" for o in COMMON_TRAINER_KEYS))
    assert cfg.trainer.limit_train_batches == 40 and cfg.trainer.fast_dev_run is True
    arguments = inspect.signature(lightning.pytorch.Trainer.__init__).parameters
    declared = OmegaConf.load(CONF / "trainer" / "default.yaml")
    assert all(key in arguments for key in declared if not key.startswith("_")), "not a Trainer argument"
    for key in (o.split("=")[0] for o in COMMON_TRAINER_KEYS):
        assert declared[key] == arguments[key].default, key


def config_reference():
    """docs/_ext/snn_configs.py, the generator of the docs' configs reference (plain Python: no
    Sphinx needed to import it)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("snn_configs", ROOT / "docs" / "_ext" / "snn_configs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_config_reference_describes_every_group_and_option():
    """The docs' configs reference (docs/guides/configs.rst) is generated from conf/; what it cannot
    generate is each group's sentence (GROUPS in docs/_ext/snn_configs.py) and each option's
    description (the comment at the top of its file). A new group, or an option without its
    comment, fails here until it is described; a removed group's sentence fails too."""
    reference = config_reference()
    groups = sorted({str(p.parent.relative_to(CONF)) for p in CONF.glob("**/*.yaml") if p.parent != CONF})
    assert set(reference.GROUPS) == set(groups)
    assert reference.groups() == {group: options(group) for group in groups}
    files = [CONF / group / f"{option}.yaml" for group in groups for option in options(group)]
    undescribed = [str(path.relative_to(CONF)) for path in files if not reference.description(path)]
    assert not undescribed, f"config files without a comment at the top: {undescribed}"
    text = reference.reference_rst()
    for group in groups:
        for option in options(group):
            assert f"{group}/{option}.yaml" in text, (group, option)
