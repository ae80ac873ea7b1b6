# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Each creates .venv if needed and installs what it needs (llama-cpp-python compiles from
# source on first install, ~5 minutes on 2 cores; pip caches the wheel afterwards).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export CMAKE_BUILD_PARALLEL_LEVEL ?= 2

.PHONY: install install-test demo test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(BIN)/duet models
	$(BIN)/duet ask "In two sentences, what is the difference between a managed LLM API and a self-hosted model?" -m llama -m chatgpt --max-tokens 96 --seed 7
	$(BIN)/duet rag ingest src/llmduet/data/handbook/docs --index .duet/demo-index
	$(BIN)/duet rag search "How many vacation days do I get after five years?" --index .duet/demo-index -k 3
	$(BIN)/duet rag ask "How many vacation days do I get after five years?" --index .duet/demo-index -m llama -m chatgpt -k 3 --max-tokens 96 --seed 7
	$(BIN)/duet eval src/llmduet/data/evals/chat.jsonl -m llama -m chatgpt --judge llama --max-tokens 64 --out .duet/demo-eval
	$(BIN)/python examples/gateway_demo.py

test: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(VENV)/.installed-test
	$(BIN)/mypy

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-test

bench: $(VENV)/.installed-bench
	$(BIN)/python benchmarks/model_layer_overhead.py
	$(BIN)/python benchmarks/serve_vs_llama_cpp_server.py
	$(BIN)/python benchmarks/rag_retrieval_quality.py
	$(BIN)/python benchmarks/rag_ingest_throughput.py
	$(BIN)/python benchmarks/rag_query_latency.py
	$(BIN)/python benchmarks/eval_harness.py
	$(BIN)/python benchmarks/agents_overhead.py
	$(BIN)/python benchmarks/agents_tasks.py
	$(BIN)/python benchmarks/pii_detection.py
	$(BIN)/python benchmarks/gateway_overhead.py

clean:
	rm -rf $(VENV) build .pytest_cache .ruff_cache .mypy_cache
