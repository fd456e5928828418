# fedcolora: one command to set up and run, one command to test.
#   make run    set everything up (venv, pinned CPU torch, bundled model) and run the default
#               federation: 3 QLoRA clients (generation, translation, summarization), 3 rounds
#   make test   set up, lint, and run every test tier (what CI runs)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-$(shell cat pyproject.toml scripts/setup.sh | cksum | cut -d' ' -f1)
DATA_ROOT ?= $(abspath $(CURDIR)/../shared/data)
RUN_CONFIG ?=
export FLWR_HOME := $(CURDIR)/.flwr
# `flwr run . local` starts `flower-superlink` from PATH: use the venv's, activated or not.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup run test test-fast lint format clean-runs

$(STAMP): pyproject.toml scripts/setup.sh
	PYTHON=$(PYTHON) bash scripts/setup.sh
	touch $@

setup: $(STAMP)

run: $(STAMP)
	$(BIN)/flwr run . local --stream --run-config \
	  "output-dir='$(CURDIR)/runs' data.root='$(DATA_ROOT)' $(RUN_CONFIG)"

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -m "slow or not slow" -p no:cacheprovider

test-fast: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean-runs:
	rm -rf runs
