# Atoll developer entry points. `make up` and `make test` are the two set-up
# commands of the README; everything they need is installed from here.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
RUN_DIR ?= $(CURDIR)/.run
PYTEST_ARGS ?=

.PHONY: help deps venv wheelhouse proto check-proto lint typecheck test unit functional integration harness up down bench buf-lint clean

help:
	@echo "make up           all-in-one cluster (coordinator + local agent) with the examples"
	@echo "make down         stop what make up started"
	@echo "make test         lint, type-check and run every test once (all the tiers below, and tests/fuzz)"
	@echo "make unit         tests/unit: no root, no daemons (about 10 s)"
	@echo "make functional   tests/functional: in-process coordinator, fake agents (about 35 s)"
	@echo "make integration  tests/integration on test beds: root, dockerd, namespaces (minutes)"
	@echo "make harness      tests/integration/{ironic,openstack}: a real Ironic and OpenStack (minutes)"
	@echo "make proto        regenerate atoll/v1 from protos/"
	@echo "make bench        run the benchmarks in bench/"

deps:
	@scripts/install-deps.sh

$(VENV)/.installed: pyproject.toml constraints.txt setup.py
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,coordinator,etcd]'
	touch $@

atoll/v1/__init__.py: $(VENV)/.installed $(wildcard protos/atoll/v1/*.proto) protos/generate.py
	$(PY) protos/generate.py

# The pinned wheels the RPMs bundle (packaging/lock), fetched while the network
# is there so that `make rpm` works offline afterwards; quick once complete.
ATOLL_PYTHON_VERSION ?= 3.11
wheelhouse: $(VENV)/.installed
	$(PY) packaging/wheelhouse.py fetch --python-version $(ATOLL_PYTHON_VERSION)

venv: $(VENV)/.installed atoll/v1/__init__.py wheelhouse

proto: venv
	$(PY) protos/generate.py

check-proto: venv
	@tmp=$$(mktemp -d) && $(PY) protos/generate.py --out $$tmp 2>/dev/null && \
	  diff -r -x __pycache__ $$tmp/atoll/v1 atoll/v1 >/dev/null && rm -rf $$tmp && echo "atoll/v1 is current" || \
	  { rm -rf $$tmp; echo "atoll/v1 is stale: run make proto"; exit 1; }

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

typecheck: venv
	$(VENV)/bin/mypy

buf-lint:
	@if command -v npx >/dev/null; then cd protos && npx --yes @bufbuild/buf@1.75.0 lint && echo "buf lint: ok"; else echo "buf-lint: npx not found, skipped"; fi

unit: venv
	$(VENV)/bin/pytest -q tests/unit $(PYTEST_ARGS)

functional: venv
	$(VENV)/bin/pytest -q tests/functional $(PYTEST_ARGS)

# The test beds of tests/integration; the OpenStack and Ironic harnesses below it are `make harness`.
integration: deps venv
	$(VENV)/bin/pytest -q -m "not harness" tests/integration $(PYTEST_ARGS)

# Whole services booted once per run (session fixtures): a real Ironic, a minimal real OpenStack,
# a real systemd as PID 1 running the RPMs' units.
harness: deps venv
	$(VENV)/bin/pytest -q tests/integration/ironic tests/integration/openstack tests/integration/systemd $(PYTEST_ARGS)

test: deps venv check-proto lint typecheck buf-lint
	$(VENV)/bin/pytest -q tests $(PYTEST_ARGS)

up: deps venv
	@scripts/up.sh "$(RUN_DIR)"

down:
	@scripts/down.sh "$(RUN_DIR)"

bench: deps venv
	$(PY) bench/pod_startup.py

clean:
	rm -rf $(VENV) build dist *.egg-info atoll/v1 .mypy_cache .ruff_cache .pytest_cache

# RPMs for RHEL/Fedora-family hosts, built offline on this machine with
# Debian's rpmbuild (packaging/README.md). Packages land in $(RPM_DIR)/RPMS.
RPM_DIR ?= $(CURDIR)/build/rpm
.PHONY: rpm rpmlint

rpm: deps venv
	@ATOLL_PYTHON=$(abspath $(PY)) ATOLL_PYTHON_VERSION=$(ATOLL_PYTHON_VERSION) packaging/build-rpm.sh "$(RPM_DIR)"

rpmlint: rpm
	rpmlint -r packaging/rpmlintrc packaging/atoll.spec $(RPM_DIR)/RPMS/*/*.rpm $(RPM_DIR)/SRPMS/*.rpm
