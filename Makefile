# The README's commands (and the docs'). Each target creates .venv and installs the project when it is missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
FASHION_MNIST := /usr/share/datasets/fashion-mnist

.PHONY: install train test test-quick data docs docs-clean notebooks clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "torch>=2.4" "torchvision>=0.19"
	@# The distribution is snn-adex; an editable install under the old name snn would map the
	@# package to wherever it was installed from, ahead of this one.
	-$(PY) -m pip uninstall -y -q snn 2>/dev/null
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Fashion-MNIST ships offline as Debian's dataset-fashion-mnist; install it when missing and permitted.
data:
	@if [ ! -f $(FASHION_MNIST)/train-images-idx3-ubyte.gz ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q && apt-get install -y -q dataset-fashion-mnist; \
	  elif command -v sudo >/dev/null; then sudo apt-get update -q && sudo apt-get install -y -q dataset-fashion-mnist; \
	  else echo "Fashion-MNIST not found in $(FASHION_MNIST); install Debian's dataset-fashion-mnist or set dataset.data_dir"; fi; \
	fi

# Main job: train the AdEx classifier on Fashion-MNIST (offline). Extra Hydra overrides: make train ARGS="trainer.max_epochs=1"
train: $(STAMP) data
	$(PY) train.py experiment=fashion_mnist_adex $(ARGS)

test: $(STAMP) data
	$(PY) -m pytest $(ARGS)

# The suite without the tests marked slow (real data, multi-process runs, training to an accuracy).
test-quick: $(STAMP) data
	$(PY) -m pytest -m "not slow" $(ARGS)

# The documentation site, offline, warnings as errors, into docs/_build/html (open index.html).
# Notebooks run in their quick mode and are cached in docs/_build/.jupyter_cache: a rebuild
# re-executes only a notebook whose code changed. `make docs-clean` starts over.
DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP)
	$(PY) -m sphinx -b html -W --keep-going -q docs docs/_build/html
	@echo "The site is in docs/_build/html/index.html"

docs-clean:
	rm -rf docs/_build docs/api

# JupyterLab on the notebooks (installed into .venv on first use).
notebooks: $(STAMP)
	$(PY) -m pip install -q -e ".[notebooks]"
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf $(VENV) outputs multirun docs/_build docs/api
