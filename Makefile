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

.PHONY: demo test lint bench setup clean-working bench-quality

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

# Re-identification quality on a real catalogue (~1 h on 2 CPU cores): closed- and open-set
# protocols, untrained baselines, SIFT+RANSAC, the trained pipeline and their fusion.
# Table: working/bench/quality/results.md; last line: JSON of the figures.
bench-quality: $(STAMP)
	nice -n 10 $(PY) benchmarks/bench_quality.py --data '$(DATA)' --group '$(GROUP)'

clean-working:
	rm -rf working/* submissions/*
