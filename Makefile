# The first two targets are the README's quickstart: `make train`, `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: train test test-fast install lint verify format lock bench clean

train: install  ## create .venv from the lock file, install seedbed, run `python train.py $(ARGS)`
	$(PY) train.py $(ARGS)

test: install  ## the whole test suite (slow tests included)
	$(PY) -m pytest

test-fast: install  ## the suite without the tests marked slow
	$(PY) -m pytest -m "not slow"

install: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

bench: install  ## the benchmarks: a table of medians and ratios (not tests: nothing is asserted)
	$(PY) benchmarks/run.py $(ARGS)

lint: install  ## ruff lint and format check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

verify: install  ## run a small config twice in fresh processes and compare bit for bit
	$(PY) -m seedbed.tools.verify data.n_samples=1024 trainer.epochs=2 $(ARGS)

format: install
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

lock: install  ## rewrite requirements.lock from what .venv holds
	$(PY) -m pip freeze --all --exclude-editable | grep -v '^pip==' | sed 's/+cpu$$//' > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache .ruff_cache
