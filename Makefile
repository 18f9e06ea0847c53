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

run: $(STAMP)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py dev_setup
	$(BIN)/honcho -f Procfile.dev start

test: $(STAMP) test-sdk test-server

# The SDK's own tests run with Django absent (pytest-django off).
test-sdk: $(STAMP)
	$(BIN)/python -m pytest -p no:django -p no:cacheprovider tests/sdk -q

test-server: $(STAMP)
	$(BIN)/python -m pytest tests --ignore=tests/sdk -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy --strict sdk/turnout
	$(BIN)/mypy --strict config common rollout cohorts audit actions notifications

clean:
	rm -rf $(VENV) var .pytest_cache
