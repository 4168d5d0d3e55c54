# Two commands do all the set-up: `make serve` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: serve test lint bench

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The first install compiles llama-cpp-python (~11 minutes on 2 cores); pip caches the wheel after that.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[test]'
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/llmhost serve $(ARGS)

test: $(VENV)/.installed-test
	$(BIN)/ruff check llmhost tests benchmarks
	$(BIN)/pytest $(ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check llmhost tests benchmarks
	$(BIN)/ruff format --check llmhost tests benchmarks

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_core.py $(ARGS)
