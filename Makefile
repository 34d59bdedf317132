# The two commands of the README. Both install what is missing and are safe to run again.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

# Debian packages the tests use, as package:probe (a command, or a file it installs): headless
# Chromium (UI test), docker-compose 1.29 (`config` of the compose file; no Docker engine is
# needed), and what the compose parity test runs compose's services with: the PostgreSQL server,
# unshare and ip (own network, mount and pid namespaces).
SYSTEM_PACKAGES := chromium:chromium docker-compose:docker-compose \
	postgresql:/usr/lib/postgresql/15/bin/postgres util-linux:unshare iproute2:ip
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install system-packages lint test test-unit demo stack-up stack-down clean

CHART_PAGE := crypto_api/page

install: $(VENV)/.installed $(CHART_PAGE)/node_modules/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -e ".[dev]"
	touch $@

# The chart page's library (lightweight-charts), from npm at the locked version; never committed.
$(CHART_PAGE)/node_modules/.installed: $(CHART_PAGE)/package-lock.json
	npm ci --prefix $(CHART_PAGE) --no-audit --no-fund
	touch $@

system-packages:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  package=$${pair%%:*}; probe=$${pair#*:}; \
	  [ -e "$$probe" ] || command -v "$$probe" >/dev/null || missing="$$missing $$package"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq$$missing; \
	fi

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy crypto_pipeline spark_jobs crypto_assets crypto_api crypto_cli local_stack tests

test-unit: install
	$(BIN)/pytest tests/unit

# The integration tests start the local stack once per session (and stop it if they started it).
# Two workers, one test module at a time each: most tests wait on servers more than they compute,
# so two keep both cores busy; every worker after the first runs a stack of its own
# (tests/conftest.py).
test: lint system-packages
	$(BIN)/pytest -n 2 --dist loadfile tests

demo: install
	$(BIN)/crypto-pipeline demo

stack-up: install
	$(BIN)/crypto-pipeline stack up

stack-down: install
	$(BIN)/crypto-pipeline stack down

clean: stack-down
	rm -rf $(VENV) .stack .stack-gw*
