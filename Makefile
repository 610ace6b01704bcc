# Two commands do everything on a fresh machine:
#   make demo   installs folioscan in .venv and runs the job on the bundled sample book
#   make test   installs the test extras and runs the test suite (what .ci/run calls)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

install: $(BIN)/activate
	$(BIN)/pip install -q -e .

install-test: $(BIN)/activate
	$(BIN)/pip install -q -e ".[test]"

demo: install
	$(BIN)/folioscan demo out/demo
	$(BIN)/folioscan show out/demo

test: install-test
	$(BIN)/python -m pytest -q -m "not gpu" tests

bench: install-test
	$(BIN)/python bench/cpu_engines.py

.PHONY: install install-test demo test bench
