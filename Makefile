# LLM Studio. `make wave` starts the studio, `make test` runs the tests; both install what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
export PATH := $(HOME)/.local/bin:$(PATH)
export PIPENV_VENV_IN_PROJECT := 1
export PIPENV_IGNORE_VIRTUALENVS := 1
export PIPENV_YES := 1
export PIPENV_NOSPIN := 1
export PIPENV_VERBOSITY := -1
export DS_BUILD_OPS := 0
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
WAVE_HOST ?= 127.0.0.1
WAVE_PORT ?= 10101
PYTEST_ARGS ?=

.PHONY: setup wave test test-all test-gpu bench lint clean-venv browser

# Reinstall only when Pipfile.lock or pyproject.toml changed since the last install: a second run takes seconds.
setup: $(STAMP)

$(STAMP): Pipfile.lock pyproject.toml
	@command -v pipenv >/dev/null 2>&1 || $(PYTHON) -m pip install --user --quiet pipenv
	pipenv sync --dev
	@touch $(STAMP)

# The studio at http://$(WAVE_HOST):$(WAVE_PORT); the Wave server ships inside the h2o-wave wheel.
wave: setup
	H2O_WAVE_LISTEN=$(WAVE_HOST):$(WAVE_PORT) H2O_WAVE_ADDRESS=http://$(WAVE_HOST):$(WAVE_PORT) \
	H2O_WAVE_NO_LOG=1 $(VENV)/bin/wave run --no-reload app.main

# Chromium for the browser tests (Debian package; test tools' own browser downloads do not work offline).
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

test: setup browser
	$(PY) -m pytest $(PYTEST_ARGS)

# Everything, slow tests included.
test-all: setup browser
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

# CPU throughput against TRL and a bare PyTorch loop, then UI latency (benchmarks/README.md); never in `make test`.
bench: setup
	$(PY) benchmarks/train_throughput.py --quick --memory-processes
	$(PY) benchmarks/ui_latency.py

clean-venv:
	rm -rf $(VENV)
