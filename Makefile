# Parley — the two commands a fresh machine needs:
#   make run    set everything up, then serve gRPC on :50051 (embedded default: SQLite, local model)
#   make test   set everything up, then lint, check generated code, and run the whole suite
# Everything else here is a step of those two.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: run test setup system-deps generate lint typecheck check-generated pytest pytest-sqlite pytest-postgres clean

run: setup
	$(PY) -m parley

test: setup lint check-generated typecheck pytest

setup: $(STAMPS)/python $(STAMPS)/system

# System packages (Debian/Ubuntu): espeak-ng (speech), libmagic (audio sniffing), PostgreSQL (tests).
$(STAMPS)/system: scripts/install-system-deps.sh
	@mkdir -p $(STAMPS)
	bash scripts/install-system-deps.sh
	@touch $@

# Python environment. llama-cpp-python compiles from source (about 5 minutes, once; pip caches
# the wheel). GGML_NATIVE=OFF keeps the build portable across CPUs.
$(STAMPS)/python: pyproject.toml
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	CMAKE_ARGS="-DGGML_NATIVE=OFF" $(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

generate: setup
	$(PY) scripts/generate.py

check-generated: setup
	$(PY) scripts/generate.py --check
	buf lint
	if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
	  buf breaking --against '.git#ref=HEAD~1'; fi

lint: setup
	$(VENV)/bin/ruff check server tests scripts migrations

typecheck: setup
	$(VENV)/bin/mypy

pytest: pytest-sqlite pytest-postgres

pytest-sqlite: setup
	$(PY) -m pytest

pytest-postgres: setup
	PARLEY_TEST_DATABASE=postgres $(PY) -m pytest

clean:
	rm -rf $(STAMPS) data .pytest_cache .mypy_cache .ruff_cache
