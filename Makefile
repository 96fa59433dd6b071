# Two commands on a fresh machine: `make demo` (the main job) and `make test`.
# Each creates .venv and installs into it on first use (scripts/setup_env.sh).
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
WILDID := $(VENV)/bin/wildid
STAMP := $(VENV)/.wildid-installed
MINI ?= input/mini-whales
# Benchmarks on real data: any folder-per-individual catalogue and sighting regex.
DATA ?= ../shared/datasets/nyala
GROUP ?= ^(\d+)_

.PHONY: demo test lint bench setup clean-working bench-retrieval

$(STAMP): requirements.txt pyproject.toml scripts/setup_env.sh
	bash scripts/setup_env.sh

setup: $(STAMP)

$(MINI)/train.csv: | $(STAMP)
	$(WILDID) synth $(MINI) --seed 0

demo: $(STAMP) $(MINI)/train.csv
	$(WILDID) run configs/mini.yaml data=$(MINI)

test: $(STAMP)
	$(PY) -m pytest -q -ra

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests notebooks benchmarks

bench: $(STAMP)

# Search + grouping + threshold + submission at full Happywhale scale (random 4608-d).
bench-retrieval: $(STAMP)
	$(PY) benchmarks/bench_retrieval.py $(BENCH_ARGS)

clean-working:
	rm -rf working/* submissions/*
