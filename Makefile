# Two commands do all the set-up: `make demo` builds the sample map, `make test` runs the tests.
SHELL := /bin/bash
VENV := .venv
BIN := $(VENV)/bin
# The store and the Dagster instance persist in the checkout unless told otherwise.
export ATLAS_HOME ?= $(CURDIR)/data/store
export DAGSTER_HOME ?= $(ATLAS_HOME)/.dagster

.PHONY: setup browser postgres demo test lint dev bench

# torch first, pinned to the CPU build on this machine's disk: a bare requirement pulls CUDA.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[test,dask,postgres,s3]'
	touch $@

setup: $(VENV)/.installed

# Debian's Chromium for the explorer's browser tests (playwright's own browser download cannot
# work here). Needs root, as CI has; elsewhere those tests skip, saying why.
browser:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium) \
		|| echo "warning: chromium not installed; the explorer's browser tests will be skipped"

# Debian's PostgreSQL server for the tests of the PostgreSQL instance and tag store (each test
# starts its own server with initdb/pg_ctl on a free loopback port). Needs root, as CI has;
# elsewhere those tests skip, saying why. Debian keeps initdb off PATH, in its versioned folder.
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| (apt-get update -q && apt-get install -y -q postgresql) \
		|| echo "warning: postgresql not installed; the PostgreSQL tests will be skipped"

demo: setup
	$(BIN)/atlas demo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Two workers, each taking whole test files (their module fixtures build maps once): most tests
# wait on a subprocess, a server or one Python thread, so two of them fill the two cores.
test: lint browser postgres
	$(BIN)/pytest -n 2 --dist loadfile

# Every stage against its baseline, side by side (minutes to an hour; not part of `make test`).
bench: setup
	$(BIN)/python -m benchmarks.embed
	$(BIN)/python -m benchmarks.dask_embed
	$(BIN)/python -m benchmarks.dask_knn
	$(BIN)/python -m benchmarks.project
	$(BIN)/python -m benchmarks.topics
	$(BIN)/python -m benchmarks.duplicates
	$(BIN)/python -m benchmarks.e2e
	$(BIN)/python -m benchmarks.refresh
	$(BIN)/python -m benchmarks.scale
	$(BIN)/python -m benchmarks.reader
	$(BIN)/python -m benchmarks.shared_store
	$(BIN)/python -m benchmarks.lease

dev: setup
	$(BIN)/python -c "from atlas_assets.store.layout import ensure_dagster_home as e; e()"
	$(BIN)/dg dev -w workspace.yaml
