SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV   := .venv
PYTHON := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# make run installs only what the relay needs to run (the server extra), under its own stamp;
# make test, lint and format install the dev extras (which include the server's).
RUN_STAMP := $(VENV)/.run-installed

# Set these on the command line (make run PORT=9000 CONFIG=config/dev.toml); unset, the
# relay's own settings apply (127.0.0.1:8080 unless the config file or environment say else).
# Plain "=" so a stray HOST or PORT in the environment does not leak in.
HOST   =
PORT   =
CONFIG =
# Extra pytest arguments; may also come from the environment. TEST_WORKERS: pytest-xdist
# workers for make test (1 runs the suite in one process, in file order).
PYTEST_ARGS ?=
TEST_WORKERS ?= 2
# make bench: which scenarios (comma-separated; empty: all), runs per scenario (medians are
# reported), and a scale factor for the counts (0.1 for a quick smoke run).
SCENARIOS ?=
RUNS      ?= 3
SCALE     ?= 1
BENCH_STAMP := $(VENV)/.bench-installed
# The npm package (service/npm): its tools come from its lock file (npm ci), reinstalled only
# when the lock file changes; the stamp holds the lock file's hash, as the tests check it.
NPM_DIR   := service/npm
NPM_STAMP := $(NPM_DIR)/node_modules/.progress-relay-lock

.PHONY: help venv run test bench lint format clean npm

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z]+:.*## / {printf "  make %-7s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(PYTHON):
	python3 -m venv $(VENV)

# Reinstall only when pyproject.toml changes; the stamp lives in the venv, so
# a recreated venv is always installed into.
$(STAMP): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install -e '.[dev]'
	touch $@

venv: $(STAMP) ## create .venv and install the project with its dev extras

$(RUN_STAMP): pyproject.toml | $(PYTHON)
	$(PYTHON) -m pip install -e '.[server]'
	touch $@

run: $(RUN_STAMP) ## start the relay with its demo at / (HOST, PORT, CONFIG)
	PROGRESS_RELAY_DEMO_ENABLED=$${PROGRESS_RELAY_DEMO_ENABLED:-true} exec $(VENV)/bin/progress-relay serve$(if $(HOST), --host "$(HOST)")$(if $(PORT), --port "$(PORT)")$(if $(CONFIG), --config "$(CONFIG)")

test: venv ## install redis-server, chromium and nginx-light if missing, then run pytest
	.ci/install-system-deps
	$(PYTHON) -m pytest --cov --cov-report=term:skip-covered $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS)) $(PYTEST_ARGS)

$(BENCH_STAMP): pyproject.toml $(STAMP)
	$(PYTHON) -m pip install -e '.[dev,bench]'
	touch $@

bench: $(BENCH_STAMP) ## benchmark against Nchan and a naive relay (SCENARIOS, RUNS, SCALE); see docs/performance.md
	.ci/install-system-deps bench
	SCENARIOS="$(SCENARIOS)" RUNS="$(RUNS)" SCALE="$(SCALE)" $(PYTHON) -m bench

$(NPM_STAMP): $(NPM_DIR)/package-lock.json
	cd $(NPM_DIR) && npm ci --no-audit --no-fund
	sha256sum $(NPM_DIR)/package-lock.json | cut -d' ' -f1 | tr -d '\n' > $@

npm: $(NPM_STAMP) ## build the npm package (service/npm/dist, its tarball) and the React example's page
	cd $(NPM_DIR) && npm run build && npm run typecheck && npm run example && npm pack

lint: venv ## ruff check, ruff format --check, mypy
	$(VENV)/bin/ruff check service tests examples bench
	$(VENV)/bin/ruff format --check service tests examples bench
	$(VENV)/bin/mypy

format: venv ## ruff format and ruff check --fix
	$(VENV)/bin/ruff format service tests examples bench
	$(VENV)/bin/ruff check --fix service tests examples bench

clean: ## remove .venv, build output and tool caches
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -rf $(NPM_DIR)/node_modules $(NPM_DIR)/dist $(NPM_DIR)/*.tgz examples/react_page/dist
	find . -path ./.git -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +
