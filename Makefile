# `make run` and `make test` are the two commands: each sets up .venv from nothing if needed.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
APP ?=

.PHONY: run test lint bench clean system

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test,demo,native]'
	touch $(STAMP)

# The gateway's hot path compiled with mypyc (engine/gateway/native.py), rebuilt when its sources
# change. If it cannot be built the gateway runs from its sources, slower, and says so.
NATIVE_SRC := $(wildcard engine/gateway/*.py) engine/params.py engine/ports.py
NATIVE := engine/gateway/_native.sha256
$(NATIVE): $(NATIVE_SRC) | $(STAMP)
	$(BIN)/python -m mwtui.engine.gateway --compile || true

# pasta (Debian package passt) gives each web_server replica a network of its own (engine/worker/network.py);
# installed when missing where apt and root are at hand. Without it web_server pools run one replica at a
# time on the host's network, and mwtui says so.
system:
	@command -v pasta >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  { apt-get install -y -qq passt >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq passt >/dev/null; }; }; } || \
	  echo "pasta is missing (apt install passt): web_server pools will run one replica at a time"

run: system $(STAMP) $(NATIVE)
	$(BIN)/mwtui $(APP)

test: system $(STAMP) $(NATIVE)
	$(BIN)/ruff check engine tui tests bench
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check engine tui tests bench

bench: $(STAMP) $(NATIVE)
	command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk)
	command -v nginx >/dev/null || (apt-get update -qq && apt-get install -y -qq nginx)
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/gateway_floor.py
	$(BIN)/python bench/gateway_inproc.py
	$(BIN)/python bench/replica_start.py
	$(BIN)/python bench/many_endpoints.py
	$(BIN)/python bench/reload.py
	$(BIN)/python bench/autoscale.py
	$(BIN)/python bench/idle.py
	$(BIN)/python bench/web_server_network.py

clean:
	rm -rf $(VENV) .pytest_cache engine/gateway/*.so $(NATIVE)
