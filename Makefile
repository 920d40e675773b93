# Two entry points on a fresh machine (see README):
#   make demo   set up, then serve the bundled models over gRPC and call each one
#   make test   set up, then run the test suite (CPU only, about 13-16 minutes on 2 cores after the install)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup test test-slow demo clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(BIN)/pytest -q

test-slow: setup
	$(BIN)/pytest -q -m slow

demo: setup
	$(BIN)/python -m serving.demo

clean:
	rm -rf $(VENV) .pytest_cache
