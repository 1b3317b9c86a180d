# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint e2e images bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# Re-install when pyproject.toml changes.
$(VENV)/.runtime: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.dev: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(VENV)/.runtime

## Run the collector against the built-in Kalshi simulator; data lands in ./data.
demo: $(VENV)/.runtime
	$(BIN)/ssmd demo

## Lint, type-check and run the fast test suite (what CI runs).
test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/pytest -n auto --dist loadfile tests e2e -rs

lint: $(VENV)/.dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

## End-to-end tests on a kind cluster (needs docker and kind; see e2e/README.md).
e2e: $(VENV)/.dev
	$(BIN)/pytest e2e -v -rs

## Benchmark (bench/README.md); BENCH_ARGS=--quick for ~20 s.
bench: $(VENV)/.dev
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## Build both images locally (needs docker).
images:
	docker build -f Dockerfile.collector -t ssmd-collector:dev .
	docker build -f Dockerfile.operator -t ssmd-operator:dev .

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
