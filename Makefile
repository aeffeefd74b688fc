# Two commands: `make run` (set up + main job) and `make test` (set up + tests).
# Set-up installs the exact versions of requirements.lock (see `make lock`), so every machine gets the same
# packages; `make test-latest` runs the suite against the newest releases in a separate venv.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOCK   := requirements.lock
# The lock tool, pinned so that `make lock` itself is reproducible.
UV_VERSION := 0.13.9
PYTEST_ARGS ?= -q -n 2 --durations=15

.PHONY: run test test-latest setup lock bench clean

setup: $(STAMP)

$(STAMP): $(LOCK) pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q -r $(LOCK)
	$(BIN)/python -m pip install -q --no-deps -e .
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/metaopt run

test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests

# Regenerate the lock from pyproject.toml's ranges (newest versions that satisfy them, for every platform).
lock:
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra torch --universal --python-version 3.11 --upgrade \
		--override lock-overrides.txt $(if $(wildcard /opt/wheels),--find-links /opt/wheels) -o $(LOCK)

# The suite against today's newest releases (a throwaway venv, the lock untouched): run it before `make lock`.
test-latest:
	rm -rf .venv-latest
	$(PYTHON) -m venv .venv-latest
	.venv-latest/bin/python -m pip install -q --upgrade pip
	.venv-latest/bin/python -m pip install -q --upgrade -e ".[dev,torch]"
	.venv-latest/bin/python -m pip freeze --exclude-editable > .venv-latest/versions.txt
	.venv-latest/bin/python -m pytest $(PYTEST_ARGS) tests

bench: $(STAMP)
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .venv-latest .pytest_cache
