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

.PHONY: run test test-fast bench repro install redis browser clean-state deploy deploy-stop

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

# Debian's chromium and chromedriver: the dashboard's tests drive a real headless browser.
browser:
	@command -v chromedriver >/dev/null || { \
	  echo "installing Debian's chromium and chromium-driver"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

# The main job, offline, on the embedded defaults (synthetic market).
run: install
	$(VENV)/bin/qt run

# The whole suite, end-to-end tests included, on TEST_WORKERS processes (pytest-xdist): a test file
# stays on one process (its module fixtures are built once), files are shared out. Most end-to-end
# tests wait on subprocesses, so two processes on two cores halve the wall time (19 -> 11 min here).
# TEST_WORKERS=0 runs everything in this process, one test after another.
TEST_WORKERS ?= 2
test: install browser
	$(VENV)/bin/pytest -q -n $(TEST_WORKERS) --dist loadfile

# While working: the tests that start no process, fit no model and read no full data set (about a minute).
test-fast: install
	$(VENV)/bin/pytest -q -m "not slow and not e2e"

# Measurements, not tests: ratios against a reference measured in the same run; JSON in reports/.
bench: install
	$(VENV)/bin/python -m bench

# Rebuild the lineage with DVC (default state directory, where dvc.yaml looks).
repro: install
	$(VENV)/bin/dvc repro

# A local Prefect server and a `process` worker (PIDs in the state directory), every deployment of
# prefect.yaml registered; `make deploy-stop` stops both by PID. PREFECT_PORT moves the server.
STATE := $(abspath $(or $(QT_HOME),state))
PREFECT_PORT ?= 4200
PREFECT_UI := http://127.0.0.1:$(PREFECT_PORT)
PREFECT_ENV := PREFECT_HOME=$(STATE)/prefect PREFECT_API_URL=$(PREFECT_UI)/api

deploy: install
	@mkdir -p $(STATE)/prefect $(STATE)/logs
	@if [ -f $(STATE)/prefect/server.pid ] && kill -0 $$(cat $(STATE)/prefect/server.pid) 2>/dev/null; then \
	  echo "prefect server already running (PID $$(cat $(STATE)/prefect/server.pid))"; else \
	  $(PREFECT_ENV) setsid $(VENV)/bin/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT) \
	    >> $(STATE)/logs/prefect-server.log 2>&1 & echo $$! > $(STATE)/prefect/server.pid; fi
	@for i in $$(seq 120); do curl -sf $(PREFECT_UI)/api/health >/dev/null && break; sleep 1; done; \
	  curl -sf $(PREFECT_UI)/api/health >/dev/null || { echo "prefect server not healthy; see $(STATE)/logs/prefect-server.log"; exit 1; }
	@$(PREFECT_ENV) $(VENV)/bin/prefect work-pool inspect process >/dev/null 2>&1 || \
	  $(PREFECT_ENV) $(VENV)/bin/prefect work-pool create process --type process >/dev/null
	@if [ -f $(STATE)/prefect/worker.pid ] && kill -0 $$(cat $(STATE)/prefect/worker.pid) 2>/dev/null; then \
	  echo "prefect worker already running (PID $$(cat $(STATE)/prefect/worker.pid))"; else \
	  $(PREFECT_ENV) QT_HOME=$(STATE) setsid $(VENV)/bin/prefect worker start --pool process --type process \
	    >> $(STATE)/logs/prefect-worker.log 2>&1 & echo $$! > $(STATE)/prefect/worker.pid; fi
	$(PREFECT_ENV) $(VENV)/bin/prefect deploy --all --no-prompt > $(STATE)/logs/prefect-deploy.log
	@grep -o "Deployment '[^']*' successfully created" $(STATE)/logs/prefect-deploy.log
	@echo "Prefect UI: $(PREFECT_UI)  (server PID $$(cat $(STATE)/prefect/server.pid), worker PID $$(cat $(STATE)/prefect/worker.pid); make deploy-stop)"

deploy-stop:
	@for name in worker server; do f=$(STATE)/prefect/$$name.pid; [ -f $$f ] || continue; pid=$$(cat $$f); \
	  kill -TERM -- -$$pid 2>/dev/null; for i in $$(seq 10); do kill -0 $$pid 2>/dev/null || break; sleep 1; done; \
	  kill -KILL -- -$$pid 2>/dev/null; rm -f $$f; echo "stopped prefect $$name (PID $$pid)"; done

# Keeps state/trials: the ledger of every (model, decision config) scored on a holdout, which the
# deflated Sharpe counts as its trials; a fresh store must not make old tries look like none.
# `make clean-state FORGET_TRIALS=1` deletes it too.
clean-state:
	rm -rf state/raw state/features state/models state/evaluation state/reports state/mlflow state/prefect state/bentoml state/executor state/logs
	$(if $(FORGET_TRIALS),rm -rf state/trials,@echo "kept state/trials (the deflated Sharpe's trial ledger); FORGET_TRIALS=1 deletes it")
