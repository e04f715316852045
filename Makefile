# Set-up, demo and tests of prep-assets. Every target installs what it needs.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
# Dagster reads dagster.yaml from DAGSTER_HOME; `instance` copies the repo's file there.
export DAGSTER_HOME := $(CURDIR)/.dagster_home

# Debian packages the tests start or use: OpenSSH test hosts, the sysstat tools
# they offer, Prometheus with node_exporter, git.
DEBIAN_PACKAGES := openssh-server openssh-client sysstat prometheus prometheus-node-exporter git iproute2 procps

.PHONY: setup system-packages venv instance demo test bench dev lint clean

setup: system-packages venv instance

instance:
	@mkdir -p $(DAGSTER_HOME) && cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

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
	$(VENV)/bin/prep-assets run --repo .demo/homelab

# pytest exits with 5 when it collected no tests; that fails the target too.
test: setup
	@$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$status

bench: setup
	$(PY) -m bench.run_all

dev: setup
	$(VENV)/bin/dagster dev -h 127.0.0.1 -p 3000

lint: venv
	$(VENV)/bin/ruff check prep_assets prep_assets_tests bench
	$(VENV)/bin/mypy prep_assets

clean:
	rm -rf .demo .dagster_home
