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

.PHONY: install demo test unit integration lint clean

install: $(STAMP)

# Re-runs only when the pins change, so a second `make install` takes well under a second.
$(STAMP): pyproject.toml constraints.txt
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
