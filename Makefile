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

.PHONY: demo test lint bench setup clean-working bench-train bench-retrieval bench-quality \
	bench-sweep kaggle-sim

$(STAMP): requirements.txt pyproject.toml scripts/setup_env.sh scripts/fix_torchvision_cpu.py
	bash scripts/setup_env.sh

setup: $(STAMP)

$(MINI)/train.csv: | $(STAMP)
	$(WILDID) synth $(MINI) --seed 0

demo: $(STAMP) $(MINI)/train.csv
	$(WILDID) run configs/mini.yaml data=$(MINI)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -q -ra
	$(MAKE) --no-print-directory kaggle-sim

# The six notebooks as Kaggle runs them (wildid.kaggle.simulate): the bundle built from this
# checkout, each notebook its own offline kernel on a tiny synthetic competition without
# boxes.csv (the public box files' format attached instead), read-only inputs, wildid
# installed from the code dataset alone; fails if a kernel retrains or the submission is bad.
KSIM ?= working/kaggle-sim
KSIM_OVERRIDES := --override train.epochs=1 --override train.image_size=64 \
	--override baseline=false --override train.num_workers=0 --override embed.flip_tta=false
kaggle-sim: $(STAMP)
	chmod -R u+w $(KSIM) 2>/dev/null; rm -rf $(KSIM)
	$(WILDID) synth $(KSIM)/competition --individuals 20 --size 96 > /dev/null
	$(WILDID) kaggle simulate $(KSIM)/run --competition $(KSIM)/competition $(KSIM_OVERRIDES)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: bench-train bench-embed bench-retrieval bench-detect bench-quality bench-identify

# Training step (JPEG crops, augmentation, model, loss, optimizer) vs a bare in-memory loop.
bench-train: $(STAMP) $(MINI)/train.csv
	$(PY) benchmarks/bench_train.py --data $(MINI)

# Embed stage (JPEG crops, loader, model, flip TTA) vs a bare forward loop of the same model.
.PHONY: bench-embed
bench-embed: $(STAMP) $(MINI)/train.csv
	$(PY) benchmarks/bench_embed.py --data $(MINI)

# Search + grouping + threshold + submission at full Happywhale scale (random 4608-d).
bench-retrieval: $(STAMP)
	$(PY) benchmarks/bench_retrieval.py $(BENCH_ARGS)


# Warm identify of one photo and start-up time: a Happywhale-sized package (51,033 x 512-d)
# and a trained nyala run's package when working/nyala exists. Last line: JSON.
.PHONY: bench-identify
bench-identify: $(STAMP)
	$(PY) benchmarks/bench_identify.py --work working/bench/identify

# Detector (YOLO, fullbody + backfin) on the mini-competition: mAP50 per class, CPU seconds.
.PHONY: bench-detect
bench-detect: $(STAMP) $(MINI)/train.csv
	$(PY) benchmarks/bench_detect.py configs/mini_detector.yaml data=$(MINI)

# Re-identification quality on a real catalogue (~1 h on 2 CPU cores): closed- and open-set
# protocols, untrained baselines, local keypoints (GrabCut + RootSIFT + RANSAC), the trained
# pipeline and their calibrated fusion, per photo and per sighting. Re-runs reuse every
# model, feature and pair. Table: working/bench/quality/results.md (another DATA or GROUP:
# working/bench/quality-<name>/); last line: JSON. QUALITY_ARGS: more bench_quality.py
# options, e.g. QUALITY_ARGS='--smoke' (a few minutes) or '--flank-variants --centred'.
QUALITY_ARGS ?=
bench-quality: $(STAMP)
	nice -n 10 $(PY) benchmarks/bench_quality.py --data '$(DATA)' --group '$(GROUP)' $(QUALITY_ARGS)

# What each trained-pipeline setting changes on the closed set (one variant per row, resumable;
# not part of `make bench`: each variant trains for up to 30 min on a CPU). With
# SWEEP=benchmarks/sweeps/nyala_fusion.yaml: what each fusion, local-matching, flank and
# open-set setting does on both protocols, reusing `make bench-quality`'s models.
SWEEP ?= benchmarks/sweeps/nyala.yaml
bench-sweep: $(STAMP)
	nice -n 10 $(PY) benchmarks/sweep_quality.py --variants '$(SWEEP)' --data '$(DATA)' --group '$(GROUP)'

# The competition configs on a GPU (issue 17; not part of `make bench`): per backbone
# (b6, v2-l, nfnet-l2, random weights) and fp16/bf16, a few hundred steps of the real
# Trainer on synthetic photos (images/s, peak GPU memory, loss falling), flip-TTA embedding,
# a Happywhale-sized search and a torchrun (NCCL) run, in at most 8 min; without CUDA its
# CPU-sized mode (< 1 min, run by `make test` too). Last line: JSON. GPU_ARGS: more options
# (`--headroom DATA`, `--only train,ddp`). A lease runs scripts/gpu_lease.sh instead.
GPU_ARGS ?=
.PHONY: bench-gpu
bench-gpu: $(STAMP)
	$(PY) benchmarks/bench_gpu.py --out working/bench/gpu/bench_gpu.json $(GPU_ARGS)

clean-working:
	chmod -R u+w working 2>/dev/null; rm -rf working/* submissions/*
	git checkout -- working/README.md submissions/README.md
