# StorePulse: every target sets up what it needs (venv, Kafka jars, redis-server) by itself.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DURATION ?= 60
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-unit lint format clean infra-up infra-down bench bench-quick chaos chaos-quick

$(STAMP): requirements.lock requirements-dev.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.lock
	$(BIN)/pip install -q --disable-pip-version-check --no-deps -e .
	$(BIN)/python -m infra.console_assets
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/storepulse demo --duration $(DURATION)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=15 tests

test-unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

infra-up: $(STAMP)
	$(BIN)/storepulse infra up

infra-down: $(STAMP)
	$(BIN)/storepulse infra down

clean:
	rm -rf $(VENV) .run *.egg-info

bench: $(STAMP)
	$(BIN)/python bench/run.py

bench-quick: $(STAMP)
	$(BIN)/python bench/run.py --members 5000 --events 20000 --big-members 0 --latency-seconds 10

chaos: $(STAMP)
	$(BIN)/python bench/chaos.py

chaos-quick: $(STAMP)
	$(BIN)/python bench/chaos.py --members 200 --rate 120 --seconds 25 --burst 2000 --downtime 3
