"""Kaggle metadata files: what each kernel reads and runs on, and their official validation.

`kernel-metadata.json` and `dataset-metadata.json` are written here and nowhere else.
Which kernel reads which earlier kernel's outputs is one table, `KERNEL_INPUTS`; which
kernels ask for a GPU is `GPU_KERNELS`.

Validation runs the official `kaggle` package's own checks, the ones `kaggle kernels
push` and `kaggle datasets create` run before they first touch the network:
`KaggleApi.kernels_push` (title length, code_file present, id via
`parse_kernel_string`/`validate_kernel_string`, language, kernel_type, every dataset,
kernel and model source via `validate_dataset_string`, `validate_kernel_string`,
`validate_model_instance_version_string`, docker pinning type, notebook JSON) stopped at
its `build_kaggle_client()`; `KaggleApi.dataset_create_new` (default id and title, one
license, slug and title 6-50 characters, subtitle length, `validate_resources`) stopped at
its `dataset_status()`; plus `validate_dataset_string`, `_validate_slug_syntax` on every
slug, and the package's own `slugify(title) == slug` rule (it only prints a warning; we
refuse, so a kernel's URL is the one its metadata names).

`import kaggle` authenticates at import (and with an OAuth or access-token login, may
call the network), so the checks run in a child interpreter: a fresh empty home and
KAGGLE_CONFIG_DIR (no real credentials read), placeholder KAGGLE_USERNAME/KAGGLE_KEY that
exist only in that child's environment, and every socket connection refused. Nothing is
written to disk but the metadata itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

from wildid.io import write_text
from wildid.kaggle.api import COMPETITION, KaggleError

KERNEL_FILE = "kernel-metadata.json"
DATASET_FILE = "dataset-metadata.json"
LICENSE = "other"  # wildid is MIT; Kaggle's license list has no MIT entry

# The six notebooks, in the order they run and are pushed.
NOTEBOOKS = ("01_data", "02_crop", "03_train", "04_embed", "05_retrieve", "06_submit")
# Which earlier kernels' outputs a kernel reads (attached as kernel_sources): the one
# table of the pipeline's order on Kaggle. 01_data and 02_crop read only the competition.
KERNEL_INPUTS: dict[str, tuple[str, ...]] = {
    "03_train": ("02_crop",),
    "04_embed": ("03_train",),
    "05_retrieve": ("03_train", "04_embed"),
    "06_submit": ("03_train", "04_embed"),
}
# Kernels that ask for a GPU. 01_data (tables and the validation split) and 06_submit
# (threshold and CSV from stored embeddings) run on CPU, sparing the weekly GPU quota.
GPU_KERNELS = frozenset({"02_crop", "03_train", "04_embed", "05_retrieve"})


class MetadataError(KaggleError):
    """A metadata file that Kaggle would refuse; the message names the file and the rule."""


def kernel_slug(name: str) -> str:
    """`03_train` -> `wildid-03-train` (Kaggle slugs: lowercase, digits, single hyphens)."""
    return "wildid-" + name.lower().replace("_", "-")


def kernel_title(name: str) -> str:
    """A title whose slug is the kernel's slug (`wildid 03 train`)."""
    return kernel_slug(name).replace("-", " ")


def kernel_metadata(
    user: str,
    name: str,
    code_file: str,
    datasets: Sequence[str] = (),
    inputs: Sequence[str] | None = None,
    gpu: bool | None = None,
) -> dict:
    """The kernel-metadata.json of notebook `name` (e.g. `03_train`) for `user`."""
    inputs = KERNEL_INPUTS.get(name, ()) if inputs is None else inputs
    return {
        "id": f"{user}/{kernel_slug(name)}",
        "title": kernel_title(name),
        "code_file": code_file,
        "language": "python",
        "kernel_type": "notebook",
        "is_private": True,
        "enable_gpu": name in GPU_KERNELS if gpu is None else gpu,
        "enable_tpu": False,
        "enable_internet": False,
        "dataset_sources": list(datasets),
        "competition_sources": [COMPETITION],
        "kernel_sources": [f"{user}/{kernel_slug(source)}" for source in inputs],
        "model_sources": [],
    }


def dataset_metadata(
    user: str, slug: str, title: str, subtitle: str | None = None, description: str = ""
) -> dict:
    data = {"id": f"{user}/{slug}", "title": title, "licenses": [{"name": LICENSE}]}
    if subtitle:
        data["subtitle"] = subtitle
    if description:
        data["description"] = description
    return data


def write_metadata(folder: str | Path, filename: str, data: dict) -> Path:
    """Write one metadata file atomically (never with credentials: it is uploaded)."""
    if any(key in json.dumps(data).lower() for key in ('"key"', "kaggle_key")):
        raise MetadataError(f"{filename}: refusing to write something that looks like a key")
    return write_text(Path(folder) / filename, json.dumps(data, indent=2) + "\n")


# The child's script: reads [{"kind", "folder"}] on stdin, prints one JSON line:
# {"checks": [...names...], "problems": {folder: [messages]}}.
_CHECKER = r"""
import json, re, socket, sys

def refuse(*args, **kwargs):
    raise OSError("network disabled while validating Kaggle metadata")

socket.socket.connect = socket.create_connection = socket.getaddrinfo = refuse

from kaggle.api.kaggle_api_extended import KaggleApi  # noqa: E402
from slugify import slugify  # noqa: E402  (the package kaggle itself uses)

class Passed(Exception):
    pass

def stop(*args, **kwargs):
    raise Passed

api = KaggleApi()
api.config_values = {api.CONFIG_NAME_USER: "wildid-validator"}
api.build_kaggle_client = stop  # kernels_push: the first network step after its checks
api.dataset_status = stop  # dataset_create_new: likewise
checks = set()
problems = {}

def check(folder, name, call):
    checks.add(name)
    try:
        call()
    except Passed:
        pass
    except ValueError as err:
        problems.setdefault(folder, []).append(f"{name}: {err}")
    except Exception as err:
        problems.setdefault(folder, []).append(f"{name}: {type(err).__name__}: {err}")

def slug_rules(folder, ref, title):
    slug = ref.split("/")[-1]
    if hasattr(api, "_validate_slug_syntax"):
        check(folder, "KaggleApi._validate_slug_syntax", lambda: api._validate_slug_syntax(slug))
    checks.add("slugify(title) == slug")
    if title and slugify(title) != slug:
        problems.setdefault(folder, []).append(
            f"title {title!r} resolves to the slug {slugify(title)!r}, not {slug!r}")

def silent(call):
    def run():
        import contextlib, io
        with contextlib.redirect_stdout(io.StringIO()):
            call()
    return run

for item in json.load(sys.stdin):
    folder, kind = item["folder"], item["kind"]
    try:
        meta = json.load(open(f"{folder}/{item['file']}", encoding="utf-8"))
    except (OSError, ValueError) as err:
        problems.setdefault(folder, []).append(f"{item['file']}: {err}")
        continue
    if kind == "kernel":
        check(folder, "KaggleApi.kernels_push", silent(lambda: api.kernels_push(folder)))
        slug_rules(folder, str(meta.get("id", "")), meta.get("title"))
    else:
        check(folder, "KaggleApi.validate_dataset_string",
              lambda: api.validate_dataset_string(meta.get("id")))
        check(folder, "KaggleApi.dataset_create_new",
              silent(lambda: api.dataset_create_new(folder, dir_mode="zip")))
        if hasattr(api, "_validate_slug_syntax"):
            check(folder, "KaggleApi._validate_slug_syntax",
                  lambda: api._validate_slug_syntax(str(meta.get("id", "")).split("/")[-1]))
print(json.dumps({"checks": sorted(checks), "problems": problems}))
"""


def _items(folders: Iterable[str | Path]) -> list[dict]:
    items = []
    for folder in folders:
        folder = Path(folder).resolve()
        if (folder / KERNEL_FILE).is_file():
            items.append({"kind": "kernel", "folder": str(folder), "file": KERNEL_FILE})
        elif (folder / DATASET_FILE).is_file():
            items.append({"kind": "dataset", "folder": str(folder), "file": DATASET_FILE})
        else:
            raise MetadataError(f"{folder}: neither {KERNEL_FILE} nor {DATASET_FILE}")
    return items


def official_checks(folders: Iterable[str | Path], timeout: float = 120) -> dict:
    """Run the official kaggle package's offline checks on kernel and dataset folders.

    Returns {"checks": names of the checks run, "problems": {folder: [messages]}}.
    """
    items = _items(folders)
    with tempfile.TemporaryDirectory(prefix="wildid-kaggle-check-") as home:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("KAGGLE_") and k not in ("HOME", "XDG_CONFIG_HOME")
        }
        # Placeholders so `import kaggle` authenticates from the environment, offline;
        # they live only in this child's environment, never in a file.
        env.update(
            HOME=home,
            XDG_CONFIG_HOME=home,
            KAGGLE_CONFIG_DIR=home,
            KAGGLE_USERNAME="wildid-validator",
            KAGGLE_KEY="placeholder-not-a-key",
        )
        try:
            done = subprocess.run(
                [sys.executable, "-c", _CHECKER],
                input=json.dumps(items),
                env=env,
                cwd=home,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise MetadataError(f"the kaggle package's checks took over {timeout:.0f} s") from None
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        if "No module named 'kaggle'" in done.stderr:
            tail = ["the kaggle package is not installed; run `pip install kaggle`"]
        raise MetadataError(f"cannot run the kaggle package's checks: {tail[0]}")
    return json.loads(lines[-1])


def validate(folders: Iterable[str | Path]) -> list[str]:
    """Raise MetadataError listing every problem; return the names of the checks run."""
    result = official_checks(folders)
    if result["problems"]:
        lines = [f"{folder}: {msg}" for folder, msgs in result["problems"].items() for msg in msgs]
        raise MetadataError("Kaggle would refuse this metadata: " + "; ".join(lines))
    return result["checks"]
