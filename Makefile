SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/sourcery demo

test: venv
	bash scripts/ensure-services.sh
	$(BIN)/pytest
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

bench: venv
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis out bench-results.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
