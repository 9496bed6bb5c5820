# Two commands do all the set-up on a fresh machine:
#   make quickstart   the main job on the embedded default (no servers)
#   make test         the test suite (starts a private PostgreSQL on loopback, stops it afterwards)
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: quickstart test install bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install -q --upgrade pip
	@$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

quickstart: $(STAMP)
	@$(VENV)/bin/towerctl quickstart

test: $(STAMP)
	@bash ops/run_tests.sh

clean:
	rm -rf .tower .tower-test
