# Two commands on a fresh machine: `make demo` and `make test`.
# `make check` is the fast tier (lint, types, tests with no Dask cluster and no root).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test check lint venv clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

# devices of 160 MB (80 MB of it Dask and LiteRT, the default backend) hold no whole AlexNet (163 MB of
# weights), nor its fc1: the plan replicates its convolutions and splits fc1
demo: $(STAMP)
	$(BIN)/mcdask demo --device-memory 160MB

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

check: lint
	$(BIN)/python -m pytest -q -m "not slow and not root"

test: lint
	$(BIN)/python -m pytest -q --durations=15

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
