# Two commands for a fresh machine: `make demo` and `make test`. Both install first when needed.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# This workplace keeps the CPU build of torch on local disk; elsewhere pip finds it on the index.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)
PIP := $(PY) -m pip --disable-pip-version-check
PYTEST_ARGS ?=

.PHONY: install os-deps demo test unit integration lint clean

install: $(STAMP)

# Debian packages the tests use: promtool (alert and dashboard checks), prometheus (the ops integration test)
# and chromium (the ops page test). Only a `command -v` when present; installing may start a prometheus daemon
# on port 9090 (postinst), which nothing here wants.
os-deps:
	@command -v promtool >/dev/null && command -v chromium >/dev/null || \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			prometheus chromium && (pkill -x prometheus || true))

# Re-runs only when the pins change, so a second `make install` takes well under a second. os-deps is
# order-only: it runs first but never makes the stamp out of date.
$(STAMP): pyproject.toml constraints.txt | os-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet pip==26.3
	$(PIP) install --quiet $(FIND_LINKS) torch==2.13.0
	$(PIP) install --quiet $(FIND_LINKS) -c constraints.txt -e '.[cpu,test]'
	@touch $(STAMP)

demo: install
	$(VENV)/bin/unison demo

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

unit: install
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

integration: install
	$(PY) -m pytest tests/integration $(PYTEST_ARGS)

clean:
	-$(VENV)/bin/unison stack down
	rm -rf .unison

lint: install
	$(VENV)/bin/ruff check platform tests pipelines
