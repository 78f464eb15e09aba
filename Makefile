# Quick start: `make demo` and `make test`. Both create .venv from pyproject.toml when needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: lock demo test lint typecheck bench chaos fuzz clean redis-server npm-ai chromium screenshots bench-litellm

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "aistream needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[server,dev]'
	@touch $(STAMP)

# Re-pin constraints.txt to the newest releases pyproject.toml allows (then run `make test`).
lock:
	rm -rf .cache/lock-venv
	$(PYTHON) -m venv .cache/lock-venv
	.cache/lock-venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[server,dev]'
	{ sed -n '1,3p' constraints.txt; .cache/lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^aistream'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .cache/lock-venv

demo: $(STAMP)
	$(BIN)/aistream demo

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

# Branch coverage: the floor of pyproject.toml for the package, 100% for the sans-I/O `_wire`.
# One pytest worker per core (pytest-xdist); every test picks free ports and its own temp dirs;
# the Redis and replica tests share one worker (tests/conftest.py).
test: lint typecheck redis-server npm-ai chromium
	$(BIN)/python -m pytest -n auto --dist loadgroup --cov --cov-report=term:skip-covered
	$(BIN)/coverage report --include='src/aistream/_wire/*' --fail-under=100

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

# The chat page tests drive Debian's chromium with Playwright (its Python package, which
# brings its own driver; no browser download). Installed with apt-get when missing and we are
# root; otherwise say how (the tests skip; under CI=true that fails).
chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq </dev/null >/dev/null && \
	    apt-get install -y -qq --no-install-recommends chromium </dev/null >/dev/null; \
	  else \
	    echo "chromium is missing: install it (apt-get install chromium) for the chat page tests"; \
	  fi; }

# The node tests read our Vercel output with the `ai` package as users run it: npm installs the
# versions pinned by tests/node/package-lock.json into .cache/npm-ai (npm ci, so exactly those),
# again only when the lock changes. Node.js and npm come from Debian's packages when missing and
# we are root with apt-get; otherwise say how (the tests skip; under CI=true that fails).
NPM_AI := .cache/npm-ai
npm-ai: $(NPM_AI)/.installed

$(NPM_AI)/.installed: tests/node/package.json tests/node/package-lock.json
	@command -v npm >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing nodejs and npm (apt-get)"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq </dev/null >/dev/null && \
	    apt-get install -y -qq --no-install-recommends nodejs npm </dev/null >/dev/null; \
	  fi; }
	@if command -v npm >/dev/null 2>&1; then \
	  mkdir -p $(NPM_AI) && cp tests/node/package.json tests/node/package-lock.json $(NPM_AI)/ && \
	  cd $(NPM_AI) && npm ci --no-audit --no-fund --loglevel=error </dev/null && touch .installed; \
	else \
	  echo "npm is missing: install Node.js and npm for the ai package tests (tests/node)"; \
	fi

# The relay mode compares create_app with LiteLLM's proxy, which lives in its own environment
# (its many dependencies stay out of ours): made once, the version pinned.
# The benchmark's peers, in their own venv: LiteLLM's proxy (the relay mode), and aiohttp (its
# dependency; the concurrency mode's aiohttp row runs here, with pyee for aistream's imports).
LITELLM_ENV := .cache/bench-litellm
bench-litellm: $(LITELLM_ENV)/.installed-2

$(LITELLM_ENV)/.installed-2:
	python3 -m venv $(LITELLM_ENV)
	$(LITELLM_ENV)/bin/python -m pip install --quiet --disable-pip-version-check 'litellm[proxy]==1.108.7' 'pyee==13.0.1'
	touch $@

bench: $(STAMP) redis-server bench-litellm  ## quick benchmark run (< 60 s); `make bench BENCH_ARGS=--full` for all modes
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

chaos: $(STAMP) redis-server  ## the long chaos campaign (10,000 turns); CI runs the short one in `make test`
	AISTREAM_CHAOS_TURNS=10000 $(BIN)/python -m pytest tests/chaos -q -s --timeout=3600

fuzz: $(STAMP)             ## fuzz the decoders with atheris for FUZZ_SECONDS (default 300)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check atheris
	mkdir -p .fuzz-corpus   # new inputs go here; tests/fuzz/corpus is the tracked seed set
	$(BIN)/python tests/fuzz/fuzz_decoders.py -max_total_time=$${FUZZ_SECONDS:-300} .fuzz-corpus tests/fuzz/corpus

screenshots: $(STAMP) chromium  ## the README's screenshots again (docs/*.png)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check nbconvert
	$(BIN)/python docs/screenshots.py

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .cache
