"""The one thing pyproject.toml cannot say: the repository's top-level ``conf/`` ships inside the
package as ``snn/conf`` (one source of truth for checkouts and wheels; ``snn.train.config_dir``
finds either). Everything else is in pyproject.toml."""

from setuptools import find_namespace_packages, find_packages, setup

CONF = ["snn.conf", *(f"snn.conf.{name}" for name in find_namespace_packages(where="conf"))]

setup(
    # hydra_plugins (a namespace package, as Hydra wants it): our Optuna sweeper, where Hydra looks for plugins.
    packages=[*find_packages(include=["snn", "snn.*"]), *CONF, "hydra_plugins.snn_optuna_sweeper"],
    package_dir={"snn.conf": "conf"},  # its subpackages follow: snn.conf.model is conf/model
    package_data={
        "snn.neurons.fused.cpp": ["*.cpp"],  # the C++ source of the fused CPU kernels, compiled on first use
        "snn": ["py.typed"],  # PEP 561: the package's annotations are meant for type checkers
        **{name: ["*.yaml"] for name in CONF},
    },
)
