# One-step setup and the two commands README gives a newcomer.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -e '.[dev]'
	touch $(STAMP)

run: setup  ## set up, then run the main job on the embedded default
	$(BIN)/python jobs/pipeline.py

test: setup  ## set up, then run every test (unit, integration, e2e, slow included)
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check tvifm jobs tests benchmarks

bench: setup
	$(BIN)/python benchmarks/bench_eval.py

clean:
	rm -rf $(VENV) build *.egg-info
