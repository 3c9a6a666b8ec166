# The operator interface. `make demo` and `make test` are all a new machine needs.
PY := .venv/bin/python
export PYTHONUNBUFFERED := 1

.PHONY: setup up down status migrate test lint typecheck unit demo bench clean

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

test: up lint typecheck
	@$(PY) -m pytest

demo: up
	@$(PY) -m ops demo

bench: up
	@$(PY) -m bench

clean: down
	rm -rf .run
