# The two commands of the README. Both install what is missing and are safe to run again.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install lint test test-unit demo stack-up stack-down clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --progress-bar off -e ".[dev]"
	touch $@

lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy crypto_pipeline crypto_assets spark_jobs tests

test-unit: install
	$(BIN)/pytest tests/unit

# The integration tests start the local stack once per session (and stop it if they started it).
test: lint
	$(BIN)/pytest tests

demo: install
	$(BIN)/crypto-pipeline demo

stack-up: install
	$(BIN)/crypto-pipeline stack up

stack-down: install
	$(BIN)/crypto-pipeline stack down

clean: stack-down
	rm -rf $(VENV) .stack
