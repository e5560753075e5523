SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-fast docs bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: venv
	$(BIN)/sourcery demo

# `make test` runs everything and needs the services (a missing one is an error);
# `make test-fast` leaves out the tests marked slow.
test: venv
	bash scripts/ensure-services.sh
	SOURCERY_TEST_REQUIRE_SERVICES=1 $(BIN)/pytest
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(MAKE) docs

test-fast: venv
	bash scripts/ensure-services.sh
	SOURCERY_TEST_REQUIRE_SERVICES=1 $(BIN)/pytest -m "not slow"

# The docs site (mkdocs-material + mkdocstrings) into site/; any warning is an error.
docs: venv
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

bench: venv
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) site .mypy_cache .ruff_cache .pytest_cache .hypothesis out bench-results.json
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
