# Two commands a user needs: `make run` and `make test`. Both install what is missing.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
TOOLS := .tools
UV := $(TOOLS)/bin/uv
UV_VERSION := 0.13.9
export BENTOML_DO_NOT_TRACK := true
export GX_ANALYTICS_ENABLED := false
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
export UV_LINK_MODE := copy

.PHONY: run test bench repro install redis clean-state

# uv resolves this stack (pip cannot); it lives in its own small venv, not in the project's.
$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install -q "uv==$(UV_VERSION)"

# The project venv, from the committed lock; bytecode compiled once at install time.
$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --compile-bytecode --python $(PYTHON)
	touch $@

install: $(VENV)/.installed redis

# Debian's redis-server: the executor's event bus in runs and tests.
redis:
	@command -v redis-server >/dev/null || { \
	  echo "installing Debian's redis-server"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# The main job, offline, on the embedded defaults (synthetic market).
run: install
	$(VENV)/bin/qt run

# The whole suite, end-to-end tests included.
test: install
	$(VENV)/bin/pytest -q

# Measurements, not tests: ratios against a reference measured in the same run; JSON in reports/.
bench: install
	$(VENV)/bin/python -m bench

# Rebuild the lineage with DVC (default state directory, where dvc.yaml looks).
repro: install
	$(VENV)/bin/dvc repro

clean-state:
	rm -rf data/raw data/features data/models data/evaluation data/reports data/mlflow data/prefect data/bentoml data/executor data/logs
