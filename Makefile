# The two quick-start commands: `make quickstart` (the main job) and `make test` (the whole suite).
# Both create .venv on first use; torch is installed first so pip takes the CPU wheel.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_VERSION ?= 2.13.0

.PHONY: setup browser quickstart test lint

$(BIN)/dmamba: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install -q torch==$(TORCH_VERSION)
	$(BIN)/pip install -q -e ".[test]"
	touch $@

setup: $(BIN)/dmamba

quickstart: setup
	$(BIN)/dmamba quickstart

# Debian's Chromium for the Space's browser test (root only; the test says why it skips otherwise).
browser:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } || echo "chromium missing (needs root): the browser test will skip"

test: setup browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	OMP_WAIT_POLICY=PASSIVE $(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .
