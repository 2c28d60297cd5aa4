# deckstream — the README's two commands are `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PYTHON ?= python3
# Exact versions of a working venv, used as pip constraints by every install below.
LOCK := requirements.lock

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

system-deps: ## Check Java 17+ and Maven; install Tesseract's English data (OCR) and Chromium (browser tests) if missing
	@command -v java >/dev/null || { echo "Java 17+ is required (the Kafka broker runs on it)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required (it resolves the Kafka jars)"; exit 1; }
	@if [ ! -f /usr/share/tesseract-ocr/5/tessdata/eng.traineddata ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq tesseract-ocr-eng >/dev/null) \
	      || echo "warning: could not install tesseract-ocr-eng; scanned pages will be skipped"; \
	  else echo "note: install tesseract-ocr-eng for OCR of scanned pages (optional)"; fi; \
	fi
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
	      || echo "warning: could not install chromium; the browser tests will fail"; \
	  else echo "note: install Debian's chromium for the browser tests (make test)"; fi; \
	fi

$(STAMP): pyproject.toml $(LOCK)
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]' -c $(LOCK)
	@touch $(STAMP)

# axe-core for the browser tests' accessibility checks, at the version tests/e2e/package-lock.json pins.
E2E_NODE := tests/e2e/node_modules/.package-lock.json

$(E2E_NODE): tests/e2e/package.json tests/e2e/package-lock.json
	@command -v npm >/dev/null || { echo "npm (Node 20+) is required for the browser tests' axe-core"; exit 1; }
	npm ci --prefix tests/e2e --no-audit --no-fund --loglevel=error

install: system-deps $(STAMP) $(E2E_NODE) ## Create .venv and install deckstream with the test tools

$(VENV)/.qwen: $(STAMP)
	$(PIP) install -q -e '.[dev,qwen]' -c $(LOCK)
	@touch $@

run: install $(VENV)/.qwen ## Install what is missing, start everything, print the URL and token
	$(VENV)/bin/deckstream up

test: install $(VENV)/.qwen ## Lint, type-check, then unit, integration and browser tests (real Kafka, llama.cpp, Chromium)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

lint: install ## ruff and mypy only
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install ## Run a benchmark: make bench NAME=pipeline
	$(PY) -m bench $(NAME)

define LOCK_HEADER
# Constraints for pip, used by `make install`: pip install -e '.[dev]' -c requirements.lock
# Every package of a working .venv at its exact version, so installs are reproducible.
# Regenerate with `make lock` (pip freeze --exclude-editable of .venv, without deckstream itself,
# pip, setuptools, wheel and pkg_resources); do not edit by hand. To move a version: edit
# pyproject.toml, install without -c (e.g. .venv/bin/pip install -e '.[dev]' 'name==new'), run the
# tests, then `make lock`.
endef
export LOCK_HEADER

# Exact (==) pins of pyproject.toml, extras included, that the venv lacks (the qwen model parts
# when only `make install` ran): listed too, so the lock is complete either way.
define LOCK_UNINSTALLED_PINS
import importlib.metadata as md, re, tomllib
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
reqs = project["dependencies"] + [r for rs in project.get("optional-dependencies", {}).values() for r in rs]
missing = []
for req in reqs:
    m = re.fullmatch(r"([A-Za-z0-9._-]+)(\[[^]]*\])?\s*==\s*([^;\s]+)", req.strip())
    if m:
        try:
            md.version(m[1])
        except md.PackageNotFoundError:
            missing.append(m[1] + "==" + m[3])
if missing:
    print("# Pinned exactly in pyproject.toml, not installed in the venv this was frozen from:")
    print(*missing, sep="\n")
endef
export LOCK_UNINSTALLED_PINS

lock: ## Regenerate requirements.lock from the current venv
	@test -x $(PIP) || { echo "no $(VENV): run make install first"; exit 1; }
	@set -o pipefail; { printf '%s\n' "$$LOCK_HEADER"; \
	  $(PIP) freeze --exclude-editable | grep -vE '^(#|-e )' \
	    | grep -viE '^(deckstream|pip|setuptools|wheel|pkg[-_.]resources)=='; \
	  $(PY) -c "$$LOCK_UNINSTALLED_PINS"; } > $(LOCK).new
	@mv $(LOCK).new $(LOCK)
	@if [ -f $(STAMP) ]; then touch $(STAMP); fi
	@echo "wrote $(LOCK): $$(grep -c '==' $(LOCK)) pins"

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

.PHONY: help system-deps install run test lint lock bench clean
