# Two commands do everything on a fresh machine:
#   make demo   installs folioscan in .venv and runs the job on the bundled sample book
#   make test   installs the test extras and runs the test suite (what .ci/run calls)
# Quiet by default (the progress line and the summary); `make demo VERBOSE=1` shows pip's, Ray's and
# the commands' own output.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
Q := $(if $(VERBOSE),,@)
PIP := $(BIN)/pip $(if $(VERBOSE),,-qq) --disable-pip-version-check

$(BIN)/activate:
	$(Q)$(PY) -m venv $(VENV)
	$(Q)$(PIP) install --upgrade pip

install: $(BIN)/activate
	$(Q)$(PIP) install -e .

install-test: $(BIN)/activate
	$(Q)$(PIP) install -e ".[test]"

demo: install
	$(Q)$(BIN)/folioscan demo out/demo $(if $(VERBOSE),--verbose)
	$(Q)$(BIN)/folioscan show out/demo

# The suite on TEST_WORKERS processes (pytest-xdist), one test file per process at a time (a file's
# module fixtures, finished jobs several tests read, are built once), the longest files first
# (tests/conftest.py HEAVY_FIRST; --no-loadscope-reorder keeps that order, where xdist would start
# the files with the most tests first and leave the few long ones for the end); -v names each test
# as it passes, with its worker and the suite's percentage; the slowest 15 are listed at the end.
TEST_WORKERS ?= 2
test: install-test
	$(Q)$(MAKE) --no-print-directory mirador || echo "Mirador could not be fetched from npm: the IIIF viewer test will skip"
	$(BIN)/python -m pytest -m "not gpu" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder -v --durations=15 tests

# Mirador 4 for the IIIF viewer test (tests/test_iiif.py): the npm package, unpacked once into an
# ignored cache; the test loads its browser bundle from there, offline, and skips saying why when it is missing
MIRADOR_VERSION := 4.0.0
MIRADOR := .cache/mirador-$(MIRADOR_VERSION)

$(MIRADOR)/package/dist/mirador.min.js:
	$(Q)mkdir -p $(MIRADOR)
	$(Q)cd $(MIRADOR) && npm pack --silent mirador@$(MIRADOR_VERSION) >/dev/null && tar xzf mirador-$(MIRADOR_VERSION).tgz package/dist/mirador.min.js package/LICENSE package/package.json && rm mirador-$(MIRADOR_VERSION).tgz

mirador: $(MIRADOR)/package/dist/mirador.min.js

bench: install-test
	$(BIN)/python bench/cpu_engines.py

.PHONY: install install-test demo test bench mirador
