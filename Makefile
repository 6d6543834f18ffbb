# Funnel Tracker: `make run` starts the whole stack, `make test` runs every test.
.DEFAULT_GOAL := help
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PROMTOOL := $(BIN)/promtool

.PHONY: help install browser-deps run test test-unit test-integration test-e2e lint format bench clean

help: ## Show this help
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'

$(INSTALLED): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

install: $(INSTALLED) ## Create .venv and install the project with pinned dependencies

# promtool, for the tests' `promtool check metrics`: the system's if there is one, else the one
# binary taken out of Debian's prometheus package (no server, service or web assets installed).
$(PROMTOOL): | $(INSTALLED)
	@set -e; if command -v promtool >/dev/null; then ln -sf "$$(command -v promtool)" $@; exit 0; fi; \
	tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; cd "$$tmp"; \
	apt-get download -qq prometheus 2>/dev/null || { apt-get update -qq; apt-get download -qq prometheus; }; \
	dpkg-deb --fsys-tarfile prometheus_*.deb | tar -xO ./usr/bin/promtool > "$(CURDIR)/$@.part"; \
	chmod +x "$(CURDIR)/$@.part"; mv "$(CURDIR)/$@.part" "$(CURDIR)/$@"

# Browser tests: Debian's chromium (apt) driven by playwright-core, Segment's analytics.js
# bundled from tests/browser/node_modules (versions pinned by its package-lock.json).
BROWSER := tests/browser
CHROMIUM := /usr/bin/chromium
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium

$(BROWSER)/node_modules/.installed: $(BROWSER)/package.json $(BROWSER)/package-lock.json
	cd $(BROWSER) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

$(BROWSER)/dist/analytics.js: $(BROWSER)/node_modules/.installed $(BROWSER)/build.mjs
	cd $(BROWSER) && node build.mjs

browser-deps: $(CHROMIUM) $(BROWSER)/dist/analytics.js ## Install chromium and the npm packages of the browser tests when missing

run: install ## Run the whole stack: embedded broker, SQLite, ingest, aggregator, API
	$(BIN)/funnel run

test: lint test-unit test-integration test-e2e ## Run every test tier (lint, unit, integration, e2e)

# Parallel test workers (pytest-xdist), each with its own PostgreSQL cluster, broker and ports.
# Unit tests are CPU-bound (2 workers for 2 cores); integration tests wait mostly on their
# databases, so 3 workers; end-to-end tests by module (a module's stack is started once), 2
# workers, as their timings (faults, overload) must not depend on a crowded machine.
# `make test-integration WORKERS=0` runs in one process.
UNIT_WORKERS ?= 2
INTEGRATION_WORKERS ?= 3
E2E_WORKERS ?= 2
workers = $(if $(WORKERS),$(WORKERS),$(1))

test-unit: install ## Pure logic and services against fakes
	$(BIN)/pytest tests/unit -n $(call workers,$(UNIT_WORKERS))

test-integration: install ## Real SQLite and PostgreSQL
	$(BIN)/pytest tests/integration -n $(call workers,$(INTEGRATION_WORKERS))

test-e2e: install $(PROMTOOL) browser-deps ## Real processes: broker, ingest, aggregator, API, a browser
	$(BIN)/pytest tests/e2e -n $(call workers,$(E2E_WORKERS)) --dist loadscope

lint: install ## ruff lint, ruff format check, mypy strict
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install ## Format the code
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The benchmarks' own engines (chdb, DuckDB): the bench extra, installed when missing.
BENCH_INSTALLED := $(VENV)/.bench-installed

$(BENCH_INSTALLED): $(INSTALLED)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,bench]'
	touch $@

bench: $(BENCH_INSTALLED) ## Benchmarks: ratios against a baseline measured in the same run
	$(BIN)/python -m bench

clean: ## Remove the venv and local data
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .hypothesis $(BROWSER)/node_modules $(BROWSER)/dist
