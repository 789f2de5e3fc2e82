# The first two targets are the README's quickstart: `make train`, `make test`.
# requirements.lock pins every package any extra can bring in; pip takes it as constraints
# (`-c`), so each install gets only what it asks for, at the locked versions.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
# pip's progress bars show: the first install downloads torch and takes a minute or more.
PIP := $(PY) -m pip install --disable-pip-version-check --progress-bar on -c requirements.lock

.PHONY: train test test-all test-example example install install-dev lint verify format lock bench clean clean-runs

train: install  ## create .venv (seedbed, its core, the example project), run the example's train.py
	cd example && $(abspath $(PY)) train.py $(ARGS)

# One test process per core (pytest-xdist); each training run uses one torch thread. A test
# module's tests stay together (--dist loadscope), so the runs they share are made once.
PYTEST := $(PY) -m pytest -n auto --dist loadscope

test: install-dev  ## the everyday suite: every test but those marked slow (a few minutes)
	$(PYTEST) -m "not slow"

test-all: install-dev  ## the whole suite, slow included (several training processes, a new project's make test): CI's
	$(PYTEST)

test-example: install-dev  ## the example project's own tests, run in it as a user runs them
	cd example && $(abspath $(PY)) -m pytest

example: install-dev  ## render example/ afresh from the template (after changing the template)
	$(PY) scripts/render_example.py

install: $(VENV)/.installed  ## seedbed and its core dependencies only
install-dev: $(VENV)/.installed-dev  ## + the dev extra: test tools, linters, every tested extra

$(PY):
	$(PYTHON) -m venv $(VENV)

# setuptools first, from the lock: seedbed is installed without build isolation, so that the
# build uses the locked version too (and needs nothing but what the lock names).
$(VENV)/.installed: requirements.lock pyproject.toml example/pyproject.toml | $(PY)
	@echo "Installing seedbed and its core dependencies (torch is large: this takes a while)"
	$(PIP) setuptools
	$(PIP) --no-build-isolation -e .
	@echo "Installing the example project (what seedbed new renders): make train runs it"
	$(PIP) --no-build-isolation -e example
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	@echo "Installing the dev extra (pytest, ruff, mypy, pre-commit and the tested extras)"
	$(PIP) --no-build-isolation -e ".[dev]"
	touch $@

bench: install  ## the benchmarks: a table of medians and ratios (not tests: nothing is asserted)
	$(PY) benchmarks/run.py $(ARGS)

lint: install-dev  ## ruff lint and format check, mypy on src/
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	cd example && $(abspath $(PY)) -m ruff check . && $(abspath $(PY)) -m ruff format --check .

verify: install  ## run a small config twice in fresh processes and compare bit for bit
	cd example && $(abspath $(PY)) -m seedbed.tools.verify data.n_samples=1024 trainer.epochs=2 $(ARGS)

format: install-dev
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# The lock's comment header is kept; the pins are what .venv holds (the dev extra brings in
# every other extra but peer, which is not locked: `pip install "seedbed[peer]"` when needed).
lock: install-dev  ## rewrite requirements.lock's pins from .venv (after changing pyproject.toml)
	sed -n '/^#/!q;p' requirements.lock > requirements.lock.new
	$(PY) -m pip freeze --all --exclude-editable | grep -v '^pip==' | sed 's/+cpu$$//' \
		>> requirements.lock.new
	mv requirements.lock.new $(realpath requirements.lock)  # the template's: one lock for both

clean:  ## caches and build files (run records stay: see clean-runs)
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache build src/*.egg-info
	find . -name __pycache__ -type d -prune -not -path './.git/*' -exec rm -rf {} +

clean-runs:  ## delete every run record (outputs/, multirun/) after asking
	@printf 'Delete outputs/ and multirun/ (every run record)? [y/N] '; read answer; \
		[ "$$answer" = y ] && rm -rf outputs multirun && echo deleted || echo kept
