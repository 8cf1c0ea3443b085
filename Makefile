# retrainer — `make demo` and `make test` are the whole quick start.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
STAMP := $(VENV)/.installed

.PHONY: install demo up down status test test-unit test-fast lint typecheck bench lock clean

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@touch $(STAMP)

demo: install
	$(BIN)/retrainer up
	$(BIN)/retrainer demo

up: install
	$(BIN)/retrainer up

down:
	@if [ -x $(BIN)/retrainer ]; then $(BIN)/retrainer down; else echo "nothing to stop"; fi

status: install
	$(BIN)/retrainer status

test: install
	$(BIN)/ruff check src dags tests bench plugins
	$(BIN)/mypy
	$(BIN)/python -m pytest tests

test-unit: install
	$(BIN)/python -m pytest tests/unit tests/dags

bench: install
	$(BIN)/python bench/dag_parse.py
	@command -v wrk >/dev/null || apt-get install -y -qq wrk || echo "bench/serving.py needs wrk (Debian package)"
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/drift.py

lint: install
	$(BIN)/ruff check src dags tests bench plugins
	$(BIN)/ruff format --check src dags tests bench plugins

typecheck: install
	$(BIN)/mypy

lock:
	$(BIN)/uv pip compile --python $(BIN)/python pyproject.toml --extra dev \
		-o requirements.lock --no-header --annotation-style line

clean: down
	rm -rf .retrainer $(VENV)
