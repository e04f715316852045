# Set-up, demo and tests of prep-assets. Every target installs what it needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Dagster reads dagster.yaml from DAGSTER_HOME; `instance` copies the repo's file there:
# dagster.yaml (SQLite), or dagster-postgres.yaml with PREP_DAGSTER_STORAGE=postgres,
# which also needs PREP_DAGSTER_PG_URL (docs/operations.md).
PREP_DAGSTER_STORAGE ?= sqlite
export DAGSTER_HOME := $(CURDIR)/.dagster_home

# Debian packages the tests start or use: OpenSSH test hosts, the sysstat tools
# they offer, Prometheus with node_exporter, git, network namespaces (iproute2),
# dnsmasq-base (the binary, no system service) for DNS discovery, sudo for provisioning
# as a non-root user, PostgreSQL for the instance tests, Chromium for the UI screenshot.
DEBIAN_PACKAGES := openssh-server openssh-client sysstat prometheus prometheus-node-exporter git \
	iproute2 procps dnsmasq-base sudo postgresql chromium

.PHONY: setup system-packages services test-debs venv instance demo test bench bench-tools dev lint clean

setup: system-packages services venv instance test-debs

# The provisioning tests install sysstat inside a test root from a local .deb; it is
# downloaded here, at set-up, so that no test reaches a package mirror itself.
test-debs: system-packages
	@mkdir -p .cache/debs; \
	version=$$(dpkg-query -W -f='$${Version}' sysstat); \
	arch=$$(dpkg-query -W -f='$${Architecture}' sysstat); \
	file="sysstat_$${version//:/%3a}_$$arch.deb"; \
	if [ ! -f "/var/cache/apt/archives/$$file" ] && [ ! -f ".cache/debs/$$file" ]; then \
	  echo "Downloading $$file for the provisioning tests"; \
	  (cd .cache/debs && apt-get download -q "sysstat=$$version"); \
	fi

# The tests use the machine's PostgreSQL on 127.0.0.1:5432; start its cluster if it is down.
services: system-packages
	@if ! pg_isready -q -h 127.0.0.1 -p 5432; then \
	  cluster=$$(ls /etc/postgresql | sort -V | tail -n 1); \
	  echo "Starting PostgreSQL $$cluster"; \
	  pg_ctlcluster --skip-systemctl-redirect "$$cluster" main start; \
	fi

instance:
	@mkdir -p $(DAGSTER_HOME)
	@case "$(PREP_DAGSTER_STORAGE)" in \
	  sqlite) cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml ;; \
	  postgres) \
	    if [ -z "$$PREP_DAGSTER_PG_URL" ]; then \
	      echo "PREP_DAGSTER_PG_URL is not set: set it to postgresql+psycopg2://USER@HOST:5432/DB" >&2; exit 2; \
	    fi; \
	    cp dagster-postgres.yaml $(DAGSTER_HOME)/dagster.yaml ;; \
	  *) echo "invalid PREP_DAGSTER_STORAGE=$(PREP_DAGSTER_STORAGE): use sqlite or postgres" >&2; exit 2 ;; \
	esac

system-packages:
	@missing=""; for package in $(DEBIAN_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$package" 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "Run as root (or install:$$missing) to continue." >&2; exit 1; fi; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,dev]"
	touch $@

demo: setup
	$(PY) -m prep_assets.demo .demo/homelab
	PREP_SSH_CONFIG= $(VENV)/bin/prep-assets run --repo .demo/homelab

# pytest exits with 5 when it collected no tests; that fails the target too.
test: setup
	@$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

# The check benchmark runs pyinfra on the same hosts for comparison, from a venv of its own
# so that its dependencies (gevent, another paramiko) never mix with the product's.
PYINFRA_VENV := .cache/pyinfra-venv
PYINFRA_VERSION := 3.10.0

bench-tools:
	@if [ ! -x $(PYINFRA_VENV)/bin/pyinfra ]; then \
	  $(PYTHON) -m venv $(PYINFRA_VENV) && \
	  $(PYINFRA_VENV)/bin/pip install -q "pyinfra==$(PYINFRA_VERSION)"; \
	fi

bench: setup bench-tools
	PREP_BENCH_PYINFRA=$(CURDIR)/$(PYINFRA_VENV)/bin/pyinfra $(PY) -m bench.run_all

dev: setup
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000

lint: venv
	$(VENV)/bin/ruff check prep_assets prep_assets_tests bench
	$(VENV)/bin/mypy prep_assets

clean:
	rm -rf .demo .dagster_home
