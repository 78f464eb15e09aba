# Quick start: `make demo` and `make test`. Both create .venv from pyproject.toml when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck bench chaos fuzz clean redis-server

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "aistream needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[server,dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/aistream demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

test: lint typecheck redis-server
	$(BIN)/python -m pytest

# The replica tests run a real redis-server. Installed from Debian's package when missing and we
# are root with apt-get (CI, a fresh machine); otherwise say how (the tests then skip, and under
# CI=true a skip is a failure). Idempotent: a no-op when redis-server is on PATH.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing redis-server (apt-get)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq </dev/null >/dev/null && \
	    apt-get install -y -qq --no-install-recommends redis-server </dev/null >/dev/null; \
	  else \
	    echo "redis-server is missing: install it (apt-get install redis-server, brew install redis) for the replica tests"; \
	  fi; }

bench: $(STAMP) redis-server  ## quick benchmark run (< 60 s); `make bench BENCH_ARGS=--full` for all modes
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

chaos: $(STAMP) redis-server  ## the long chaos campaign (10,000 turns); CI runs the short one in `make test`
	AISTREAM_CHAOS_TURNS=10000 $(BIN)/python -m pytest tests/chaos -q -s --timeout=3600

fuzz: $(STAMP)             ## fuzz the decoders with atheris for FUZZ_SECONDS (default 300)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check atheris
	mkdir -p .fuzz-corpus   # new inputs go here; tests/fuzz/corpus is the tracked seed set
	$(BIN)/python tests/fuzz/fuzz_decoders.py -max_total_time=$${FUZZ_SECONDS:-300} .fuzz-corpus tests/fuzz/corpus

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
