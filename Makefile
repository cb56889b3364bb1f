# `make train` and `make test` set everything up on a fresh machine (virtual environment + install), then run.
# Pass extra arguments with ARGS, e.g. make train ARGS="model=dcgan loss=hinge".
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: train test test-slow lint format install docs clean

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
	$(PY) -m ruff check gan_lab tests benchmarks
	$(PY) -m ruff format --check gan_lab tests benchmarks

format: $(INSTALLED)
	$(PY) -m ruff format gan_lab tests benchmarks
	$(PY) -m ruff check --fix gan_lab tests benchmarks

# The documentation site (mkdocs.yml, docs/) into site/; --strict fails on a broken link or anchor between pages.
docs: $(INSTALLED)
	$(PY) -c "import mkdocs" 2>/dev/null || $(PY) -m pip install -e '.[docs]'
	$(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) outputs multirun site .pytest_cache .ruff_cache
