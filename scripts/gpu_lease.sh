#!/usr/bin/env bash
# The one command of a GPU lease for issue 17 (benchmarks/README.md, "GPU (issue 17)"), run
# on the device machine from the repository root with working/gpu carried (built here first
# by scripts/gpu_wheels.sh):
#   bash scripts/gpu_lease.sh [benchmarks/bench_gpu.py options, e.g. --only train,ddp]
# It says what the machine has (GPU, Python, packages), installs the carried wheels into
# /tmp (there is no registry there), runs wildid from this tree's src/ (nothing to build or
# install), and runs benchmarks/bench_gpu.py under a hard timeout. $OUT/bench_gpu.json holds
# the figures (written after every stage, so a killed run leaves them) and
# $OUT/bench_gpu.log everything printed, $OUT/bench_gpu.md the README rows; the last line
# printed is the JSON.
# BUDGET_S (default 480) is the benchmark's own time box; PY the Python (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-working/bench/gpu}
BUDGET_S=${BUDGET_S:-480}
PY=${PY:-python3}
CARRIED=working/gpu
SITE=/tmp/wildid-site
mkdir -p "$OUT"

lease() {
  echo "== machine: $(date -u +%FT%TZ), $(getconf _NPROCESSORS_ONLN) CPUs"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 || true
  df -h /dev/shm /tmp 2>&1 | sed 's/^/   /'
  "$PY" --version
  if compgen -G "$CARRIED/wheels/*.whl" >/dev/null; then
    # by name from the folder: pip takes the wheel of each that fits this Python
    mapfile -t NAMES < <(ls "$CARRIED"/wheels/*.whl | xargs -n1 basename | cut -d- -f1 | sort -u)
    echo "== installing ${NAMES[*]} (carried wheels) into $SITE"
    "$PY" -m pip install -q --disable-pip-version-check --no-index --no-deps --no-compile \
      --no-cache-dir --upgrade --target "$SITE" --find-links "$CARRIED/wheels" "${NAMES[@]}" \
      || echo "lease: the carried wheels did not install; trying with what the machine has"
  else
    echo "== no $CARRIED/wheels (scripts/gpu_wheels.sh): using what the machine has"
  fi
  [ -d "$SITE" ] && export PYTHONPATH="$SITE:$PWD/src${PYTHONPATH:+:$PYTHONPATH}" \
    || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  [ -d "$CARRIED/weights" ] && export WILDID_WEIGHTS="$PWD/$CARRIED/weights"
  # no network there: no library may wait on an update check or the hub (wildid sets
  # these too, at its import; the package list below imports some libraries first)
  export NO_ALBUMENTATIONS_UPDATE=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1
  echo "== packages"
  "$PY" - <<'EOF'
import importlib

for name in ("wildid", "torch", "torchvision", "timm", "albumentations", "pytorch_metric_learning",
             "pydantic", "cv2", "numpy", "pandas", "sklearn", "faiss", "wildid.train.engine"):
    try:
        module = importlib.import_module(name)
        print(f"   {name} {getattr(module, '__version__', '')} {module.__file__}")
    except Exception as err:  # what is missing is the point of this list
        print(f"   {name} MISSING ({type(err).__name__}: {err})")
EOF
  echo "== bench_gpu (budget ${BUDGET_S} s)"
  PYTHONUNBUFFERED=1 timeout -k 15 $((BUDGET_S + 60)) "$PY" benchmarks/bench_gpu.py \
    --budget-s "$BUDGET_S" --out "$OUT/bench_gpu.json" --work /tmp/bench_gpu "$@"
  local rc=$?
  if [ "$rc" != 0 ]; then
    echo "lease: bench_gpu exited $rc (124: timed out); the figures so far: $OUT/bench_gpu.json" >&2
  fi
  return "$rc"
}

lease "$@" 2>&1 | tee "$OUT/bench_gpu.log"
exit "${PIPESTATUS[0]}"
