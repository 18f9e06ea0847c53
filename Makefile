# Turnout — the two commands: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-sdk test-server lint setup clean

$(STAMP): pyproject.toml sdk/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Turnout needs Python 3.11 or newer")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ./sdk -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# `make run`: HOST and PORT of the web server (HOST=0.0.0.0 serves other machines: set ALLOWED_HOSTS too).
HOST ?= 127.0.0.1
PORT ?= 8000
DEV_URL_HOST := $(if $(filter 0.0.0.0 ::,$(HOST)),127.0.0.1,$(if $(findstring :,$(HOST)),[$(HOST)],$(HOST)))
LOG_LEVEL ?= WARNING
export HOST PORT LOG_LEVEL
export TURNOUT_DEV_URL := http://$(DEV_URL_HOST):$(PORT)

run: $(STAMP)
	@$(BIN)/python manage.py migrate --noinput --verbosity 0
	@$(BIN)/python manage.py dev_setup --quiet-block
	@$(BIN)/honcho -f Procfile.dev start --port $(PORT)

test: $(STAMP) test-sdk test-server

# The SDK's own tests run with Django absent (pytest-django off).
test-sdk: $(STAMP)
	$(BIN)/python -m pytest -p no:django -p no:cacheprovider tests/sdk -q

# The server suite in TEST_WORKERS processes (pytest-xdist, a test file per process at a time): each has its
# own test database, Redis database and var directory (tests/worker_env.py).
TEST_WORKERS ?= 2
test-server: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/sdk -q -n $(TEST_WORKERS) --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy --strict sdk/turnout
	$(BIN)/mypy --strict config common rollout cohorts audit actions notifications

clean:
	rm -rf $(VENV) var .pytest_cache
