# The operator interface. `make demo` and `make test` are all a new machine needs.
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup up down status migrate test pytest lint typecheck unit demo bench clean lock

setup:
	@bash scripts/setup.sh

up: setup
	@$(PY) -m ops up

down:
	@if [ -x $(PY) ]; then $(PY) -m ops down; else echo "nothing was running."; fi

status:
	@$(PY) -m ops status

migrate: setup
	@$(PY) -m ops migrate

lint: setup
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .

typecheck: setup
	@.venv/bin/mypy
	@.venv/bin/mypy --config-file client/pyproject.toml

test: setup lint typecheck pytest

# The suite against the default stack, which it leaves as it found it: started for the
# run, it is stopped afterwards unless some of it was running before (`ops status` showed
# a PID). The exit code is pytest's (or `ops up`'s, if the stack could not start).
pytest:
	@if $(PY) -m ops status 2>/dev/null | awk 'NR > 1 && $$3 != "-" {up = 1} END {exit !up}'; \
	then was_up=1; else was_up=0; fi; \
	trap : INT TERM; \
	$(PY) -m ops up && $(PY) -m pytest --durations=40 $(PYTEST_ARGS); rc=$$?; \
	if [ $$was_up = 0 ]; then echo "make test: stopping the stack it started"; $(PY) -m ops down; fi; \
	exit $$rc

demo: up
	@$(PY) -m ops demo

bench: up
	@$(PY) -m bench

# Rewrites requirements.lock and requirements-dev.lock (pinned, with hashes) from the .txt files.
lock:
	@bash scripts/lock.sh

clean: down
	rm -rf .run
