# `make run` and `make test` are the two commands: each sets up .venv from nothing if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APP ?=

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,demo]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/mwtui $(APP)

test: $(STAMP)
	$(BIN)/ruff check engine tui tests bench
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check engine tui tests bench

bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	command -v nginx >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx)
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/gateway_floor.py
	$(BIN)/python bench/replica_start.py
	$(BIN)/python bench/reload.py
	$(BIN)/python bench/autoscale.py
	$(BIN)/python bench/idle.py

clean:
	rm -rf $(VENV) .pytest_cache
