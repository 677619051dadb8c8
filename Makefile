# One-step setup and the two commands README gives a newcomer.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench mlflow-ui clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -e '.[all,dev]'
	touch $(STAMP)

run: setup  ## set up, then run the main job on the embedded default
	$(BIN)/python jobs/pipeline.py

test: setup  ## set up, then run every test (unit, integration, e2e, slow included)
	$(BIN)/python -m pytest

lint: setup
	$(BIN)/ruff check tvifm jobs tests benchmarks infra

bench: setup
	$(BIN)/python benchmarks/bench_eval.py

mlflow-ui: setup  ## browse the embedded default's MLflow store at http://127.0.0.1:5000
	$(BIN)/python -m mlflow server --backend-store-uri sqlite:///$(CURDIR)/runs/mlflow/mlflow.db \
		--artifacts-destination $(CURDIR)/runs/mlflow/artifacts --host 127.0.0.1 --port 5000 --workers 1

clean:
	rm -rf $(VENV) build *.egg-info
