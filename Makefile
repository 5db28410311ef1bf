# `make demo` and `make test` build .venv on first use (about 2 minutes), then run.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE ?= 1
export HF_HUB_DISABLE_TELEMETRY := 1

$(VENV)/.installed: requirements.txt requirements-benchmarks.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $@

.PHONY: demo test lint format
demo: $(VENV)/.installed  ## the whole method, offline, on CPU
	$(PY) demo.py

test: $(VENV)/.installed lint  ## lint, then the offline test suite
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(VENV)/.installed
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .
