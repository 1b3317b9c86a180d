# Two entry points for a fresh machine (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test lint e2e images images-smoke bench clean

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
	$(BIN)/pytest -n auto --dist loadfile --durations=10 tests e2e -rs

lint: $(VENV)/.dev
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

## End-to-end tests on a kind cluster (needs docker and kind; see e2e/README.md).
e2e: $(VENV)/.dev
	$(BIN)/pytest e2e -v -rs

## Benchmark (bench/README.md); BENCH_ARGS=--quick for ~20 s.
bench: $(VENV)/.dev
	$(BIN)/python bench/run.py $(BENCH_ARGS)

## Build both images (ssmd-collector:dev, ssmd-operator:dev) with podman or docker;
## ENGINE=docker|podman to choose, PYTHON_IMAGE=<base> to replace the pinned base.
ENGINE ?= $(shell command -v podman 2>/dev/null || command -v docker 2>/dev/null)
STANDIN_BASE := localhost/ssmd-standin-python:3.11-bookworm
images:
	ENGINE="$(ENGINE)" PYTHON_IMAGE="$(PYTHON_IMAGE)" TAG=dev sh docker/build.sh

## Build both images on a local Debian stand-in for python:3.11-slim (cached as an
## image) and smoke-test them (docker/smoke_test.py). Needs podman (or docker) and
## debootstrap: `bash .ci/install-image-tools` installs them.
images-smoke: $(VENV)/.dev
	sh docker/standin-base.sh "$(ENGINE)" $(STANDIN_BASE)
	ENGINE="$(ENGINE)" PYTHON_IMAGE=$(STANDIN_BASE) TAG=smoke sh docker/build.sh
	SSMD_SMOKE_ENGINE="$(ENGINE)" SSMD_SMOKE_TAG=smoke \
		$(BIN)/pytest docker/smoke_test.py -v -rs -p no:cacheprovider
	"$(ENGINE)" image prune --force >/dev/null

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
