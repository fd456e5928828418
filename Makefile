# fedcolora: one command to set up and run, one command to test.
#   make run    set everything up (venv, pinned CPU torch, bundled model) and run the default
#               federation: 3 QLoRA clients (generation, translation, summarization), 3 rounds
#   make test   set up, lint, check the package layers (lint-imports), and run every test tier
#               (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-$(shell cat pyproject.toml scripts/setup.sh | cksum | cut -d' ' -f1)
DATA_ROOT ?= $(abspath $(CURDIR)/../shared/data)
OUTPUT_DIR ?= $(CURDIR)/runs
# pytest-xdist workers of `make test`; each takes whole test files (tests/conftest.py orders them)
TEST_WORKERS ?= 2
RUN_CONFIG ?=
FLWR_HOME ?= $(CURDIR)/.flwr
export FLWR_HOME
# Flower's managed local SuperLink would otherwise `uv sync` the app's dependencies into
# $(FLWR_HOME)/runtime-envs for every run: the CUDA build of torch and ~15 nvidia-* wheels
# (5.5 GB) on a CPU-only machine. .venv already holds them. The SuperLink inherits this from
# `flwr run`; scripts/local_superlink.py stops one that was started without it.
export FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION := 1
# `flwr run . local` starts `flower-superlink` from PATH: use the venv's, activated or not.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test test-fast lint format clean-runs

$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) bash scripts/setup.sh
	touch $@

setup: $(STAMP)

# Written once: deploy/ adds its own connections to the same file.
$(FLWR_HOME)/config.toml:
	mkdir -p $(@D) && cp scripts/flwr-local.toml $@

run: $(STAMP) $(FLWR_HOME)/config.toml
	$(BIN)/python scripts/local_superlink.py replace
	$(BIN)/flwr run . local --stream --run-config \
	  "output-dir='$(OUTPUT_DIR)' data.root='$(DATA_ROOT)' $(RUN_CONFIG)"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -m "slow or not slow" -p no:cacheprovider --durations=30 \
	  -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

test-fast: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean-runs:
	rm -rf runs
