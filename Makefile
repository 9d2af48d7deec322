# rixin — the two commands: `make run` and `make test`. Everything installs into .venv.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: run test lint fmt bench bench-serving bench-gateway bench-generation bench-embeddings \
	bench-agents bench-retrieval bench-retrieval-api bench-search bench-ingestion bench-pdf lock clean-venv

$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip==25.3"
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/rixin serve

test: $(STAMP) lint
	$(BIN)/pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

fmt: $(STAMP)
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: bench-serving bench-retrieval bench-search bench-ingestion bench-pdf

bench-serving: bench-gateway bench-generation bench-embeddings

bench-gateway: $(STAMP)
	$(BIN)/python bench/gateway_overhead.py

bench-generation: $(STAMP)
	$(BIN)/python bench/generation.py

bench-embeddings: $(STAMP)
	$(BIN)/python bench/embeddings.py

bench-agents: $(STAMP)
	$(BIN)/python bench/agents.py

bench-retrieval: $(STAMP)
	$(BIN)/python bench/retrieval_quality.py --dataset scifact
	$(BIN)/python bench/retrieval_quality.py --dataset rgb

bench-retrieval-api: $(STAMP)
	$(BIN)/python bench/retrieval_api.py --dataset scifact --data-dir .bench/api-scifact --hits 30 --rerank-queries 10
	$(BIN)/python bench/retrieval_api.py --dataset rgb --data-dir .bench/api-rgb --hits 30 --rerank-queries 10

bench-search: $(STAMP)
	$(BIN)/python bench/search_latency.py --part ann --sizes 10000,100000
	$(BIN)/python bench/search_latency.py --part rixin --sizes 10000,100000,1000000

bench-ingestion: $(STAMP)
	$(BIN)/python bench/ingestion.py --docs 150 --reps 2

bench-pdf: $(STAMP)
	$(BIN)/python bench/pdf_parsing.py --reps 3

# Regenerate the hash-pinned lock from pyproject.toml (developers only; needs network).
lock:
	$(BIN)/pip install --quiet "uv==0.13.8"
	$(BIN)/uv pip compile pyproject.toml --extra models --extra dev --extra bench --generate-hashes \
		--python-version 3.11 --no-header -o requirements.lock

clean-venv:
	rm -rf $(VENV)
