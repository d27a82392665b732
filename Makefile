# Two commands on a fresh machine: `make run` and `make test`. Everything else is a helper.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
CONFIG ?= config

.PHONY: install bytecode run test lint format bench soak check plugins clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# Bytecode for the engine and its plugins, as pip compiles an installed package's: where
# PYTHONDONTWRITEBYTECODE is set, Python would otherwise compile every module on every start
# (about 0.1 s of each command). Only changed files are compiled again; a read-only checkout
# just runs without it.
bytecode: $(STAMP)
	-$(BIN)/python -m compileall -q engine strategies

install: $(STAMP)

run: bytecode
	$(BIN)/engine run --config $(CONFIG)

check: $(STAMP)
	$(BIN)/engine check --config $(CONFIG)

plugins: $(STAMP)
	$(BIN)/engine plugins --config $(CONFIG)

lint: $(STAMP)
	$(BIN)/ruff check engine strategies tests bench
	$(BIN)/ruff format --check engine strategies tests bench
	$(BIN)/mypy engine strategies

format: $(STAMP)
	$(BIN)/ruff check --fix engine strategies tests bench
	$(BIN)/ruff format engine strategies tests bench

test: lint
	$(BIN)/pytest

bench: bytecode
	$(BIN)/python -m bench

soak: $(STAMP)
	$(BIN)/python -m bench.soak --minutes $(or $(MINUTES),10)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
