# One command for every check, one for the demo, one for the benchmark.
#   make test   install what is missing, then ruff, ruff format --check, mypy --strict, pytest
#   make demo   RabbitMQ + the WeCom simulator + the worker, end to end, with a table of results
#   make bench  the throughput benchmark (bare aio-pika loop vs the worker)

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test check lint types pytest demo bench system clean

test: system $(STAMP) check

check: lint types pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

demo: system $(STAMP)
	$(BIN)/python scripts/demo.py

bench: system $(STAMP)
	$(BIN)/python bench/throughput.py

system:
	@bash scripts/ensure-system-packages.sh

$(STAMP): pyproject.toml contracts/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e './contracts[client]'
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $(STAMP)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
