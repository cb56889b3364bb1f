# `make train` and `make test` set everything up on a fresh machine (virtual environment + install), then run.
# Pass extra arguments with ARGS, e.g. make train ARGS="model=dcgan loss=hinge".
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: train test test-slow lint format install clean

$(INSTALLED): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -e '.[dev,lsun]'
	touch $@

install: $(INSTALLED)

train: $(INSTALLED)
	$(PY) -m gan_lab.train $(ARGS)

test: $(INSTALLED)
	$(PY) -m pytest -m "not slow" $(ARGS)

# The heavy tests (real-data FID against torch-fidelity and clean-fid, DDP, learning on CIFAR, compile, SIGTERM).
test-slow: $(INSTALLED)
	$(PY) -m pytest -m slow $(ARGS)

lint: $(INSTALLED)
	$(PY) -m ruff check gan_lab tests
	$(PY) -m ruff format --check gan_lab tests

format: $(INSTALLED)
	$(PY) -m ruff format gan_lab tests
	$(PY) -m ruff check --fix gan_lab tests

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
