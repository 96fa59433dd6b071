"""Make PyPI's CUDA build of torchvision load beside a CPU-only torch (install-time fix).

Why: PyPI has no CPU build of torchvision. Its compiled ops (`_C.so`, `image.so`) link
against `libc10_cuda.so` and `libtorch_cuda.so`, which a CPU torch lacks, so the ops
fail to load and `import torchvision` (hence `import timm`) raises "operator
torchvision::nms does not exist".

What: compile a small `libc10_cuda.so` that defines each undefined `c10::cuda` /
`at::cuda` symbol the extensions reference (functions abort if ever called: on a CPU
machine they never are), install it with an empty `libtorch_cuda.so` in
`torchvision.libs/`, and point the extensions at them and at the wheel's bundled
libcudart with patchelf. Afterwards every op works (`nms`, `roi_align`, `decode_jpeg`),
whatever the import order, in notebooks, subprocesses and torchrun workers alike.

Chosen over registering a Python `nms` kernel at import time because that works only if
it runs before anything imports torchvision, and only for the ops it re-implements.

Idempotent: does nothing when `torchvision.extension._has_ops()` is already true
(a GPU box or Kaggle, where torch and torchvision come matched). Re-run it after any
reinstall of torchvision.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

EXTENSIONS = ("_C.so", "image.so")
STUB_LIBS = ("libc10_cuda.so", "libtorch_cuda.so")
DATA_SYMBOLS = re.compile(r"allocator", re.IGNORECASE)


def ops_load() -> bool:
    """True when torchvision's compiled ops load (checked in a fresh interpreter)."""
    code = "import torchvision, sys; sys.exit(0 if torchvision.extension._has_ops() else 1)"
    return subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def torchvision_dir() -> Path:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        sys.exit("torchvision is not installed in this environment.")
    return Path(spec.origin).parent


def undefined_cuda_symbols(library: Path) -> set[str]:
    out = subprocess.run(
        ["nm", "-D", "--undefined-only", str(library)], capture_output=True, text=True, check=True
    ).stdout
    names = {line.split()[-1] for line in out.splitlines() if line.strip()}
    return {n for n in names if "@" not in n and ("4cuda" in n)}


def stub_source(symbols: set[str]) -> str:
    """C source defining every symbol; mangled C++ names are valid C identifiers."""
    lines = ["#include <stdlib.h>", "#include <stdio.h>"]
    for name in sorted(symbols):
        if DATA_SYMBOLS.search(name):
            lines.append(f"void *{name}[16];")
        else:
            lines.append(
                f'void {name}(void) {{ fputs("wildid CUDA stub {name} called on a CPU '
                f'build\\n", stderr); abort(); }}'
            )
    return "\n".join(lines) + "\n"


def build_stubs(symbols: set[str], libs_dir: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "stubs.c"
        source.write_text(stub_source(symbols))
        for name, src in (("libc10_cuda.so", source), ("libtorch_cuda.so", None)):
            cmd = ["cc", "-shared", "-fPIC", "-o", str(libs_dir / name)]
            if src is None:
                empty = Path(tmp) / "empty.c"
                empty.write_text("int wildid_empty_stub;\n")
                src = empty
            subprocess.run([*cmd, str(src), "-Wl,-soname," + name], check=True)


def patchelf() -> str:
    exe = shutil.which("patchelf") or str(Path(sys.executable).parent / "patchelf")
    if not Path(exe).exists():
        sys.exit("patchelf not found: pip install patchelf")
    return exe


def relink(extension: Path, libs_dir: Path) -> None:
    cudart = next(libs_dir.glob("libcudart*.so*"), None)
    needed = subprocess.run(
        [patchelf(), "--print-needed", str(extension)], capture_output=True, text=True, check=True
    ).stdout.split()
    if cudart is not None:
        for lib in needed:
            if lib.startswith("libcudart") and lib != cudart.name:
                subprocess.run(
                    [patchelf(), "--replace-needed", lib, cudart.name, str(extension)], check=True
                )
    rpath = "$ORIGIN:$ORIGIN/../torchvision.libs"
    subprocess.run([patchelf(), "--set-rpath", rpath, str(extension)], check=True)


def main() -> int:
    if ops_load():
        print("torchvision ops load already; nothing to fix.")
        return 0
    tv = torchvision_dir()
    libs_dir = tv.parent / "torchvision.libs"
    libs_dir.mkdir(exist_ok=True)
    extensions = [tv / name for name in EXTENSIONS if (tv / name).exists()]
    symbols = set().union(*(undefined_cuda_symbols(ext) for ext in extensions))
    build_stubs(symbols, libs_dir)
    for ext in extensions:
        relink(ext, libs_dir)
    if not ops_load():
        sys.exit("torchvision ops still do not load after the stub fix; see scripts/setup_env.sh")
    print(f"torchvision fixed for CPU torch: {len(symbols)} CUDA symbols stubbed in {libs_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
