# socialrx: `make up` runs the platform, `make test` tests it. Both work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
UV_VERSION := 0.13.8
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

.PHONY: install up test test-fast lint bench chaos lock clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed: uv.lock pyproject.toml $(UV) deploy/bootstrap.sh
	bash deploy/bootstrap.sh
	$(UV) sync --frozen --all-packages --python $(PYTHON)
	touch $@

install: $(VENV)/.installed

up: install
	$(VENV)/bin/python -m socialrx_harness.up

test: install
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

# Unit tests only: no broker, no database.
test-fast: install
	$(VENV)/bin/python -m pytest -m "not integration" $(PYTEST_ARGS)

# ruff (lint and format) over the whole tree; mypy strict for the shared package and every domain.py, and
# normal for the directory (configured in pyproject.toml; README: Lint).
MYPY_PATHS := shared/src services/directory/src $(wildcard services/*/src/*/domain.py)
MYPY_PATHS := $(filter-out services/directory/src/socialrx_directory/domain.py,$(MYPY_PATHS))
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy $(MYPY_PATHS)

bench: install
	$(VENV)/bin/python -m socialrx_bench.bench $(if $(N),--n $(N),)

# Two replicas of every service, three brokers, faults from a seed, under load (README: Reliability).
# make chaos [N=10000] [RATE=10] [SEED=20261126] [PER_KIND=2]
chaos: install
	$(VENV)/bin/python -m socialrx_harness.chaos $(if $(N),--n $(N),) $(if $(RATE),--rate $(RATE),) \
		$(if $(SEED),--seed $(SEED),) $(if $(PER_KIND),--per-kind $(PER_KIND),)

lock: $(UV)
	$(UV) lock

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache
