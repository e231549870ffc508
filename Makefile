# Two commands for a newcomer: `make demo` (set up + run the main job), `make test` (set up + tests).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_HOME ?= $(CURDIR)/.prefect
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1

.PHONY: setup demo demo-voices demo-tts repro test test-fast lint clean

setup: $(STAMP)

# torch first and exactly 2.13.0: an unpinned torch (or a package that needs one) pulls a CUDA build.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade "pip>=24"
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c requirements.lock -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/cycleaug run

demo-voices: $(STAMP)
	$(BIN)/cycleaug --params params.voices.yaml run

demo-tts: $(STAMP)
	$(BIN)/cycleaug --params params.tts.yaml run

# dvc.yaml's stage commands call `cycleaug`: this puts the environment's bin first on PATH, so
# `make repro` works without activating it (in an activated environment plain `dvc repro` does too).
repro: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

clean:
	rm -rf data/ingest data/models data/generated data/validated data/augmented data/voices reports .prefect
