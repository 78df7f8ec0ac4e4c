# The two entry points of the README; everything else is a helper of these.
SHELL := /bin/bash
UV ?= uv

.PHONY: up test venv system-deps ocr-deps lint bench

venv:
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --locked

## Start the platform locally: every service, training the models the store lacks (quickest
## first, each service starting when its model is ready). One line per step on the terminal.
up: venv ocr-deps
	@$(UV) run --quiet medserve up

# Tesseract with Portuguese data for `medserve anonymize` (installed, or how to, without root).
ocr-deps:
	@./tools/install-system-deps.sh --ocr-only

system-deps:
	./tools/install-system-deps.sh

lint: venv
	$(UV) run ruff check .
	$(UV) run ruff format --check .

## Run the whole test suite against real local servers, on PYTEST_WORKERS processes
## (pytest-xdist; tests/xdist_scheduling.py). `PYTEST_WORKERS=0` runs it in one process.
PYTEST_WORKERS ?= 3
test: system-deps venv lint
	$(UV) run pytest -n $(PYTEST_WORKERS)

bench: system-deps venv
	$(UV) run python -m bench.heart_serving
