"""Upload a bundle (see `bundle`): datasets first, then the kernels in pipeline order.

Before anything is uploaded, every metadata file passes the official kaggle package's
checks (`metadata.validate`). Each upload then goes through `api`'s preflight (CLI,
private credentials, network). A dataset is created when `kaggle datasets status` does
not know it, else given a new version; kernels wait until the datasets are ready.

`kaggle kernels push` starts the kernel. A kernel that reads an earlier kernel's outputs
(`metadata.KERNEL_INPUTS`) is pushed only once that kernel, when pushed in the same call,
has completed, so it reads the new outputs rather than an older version's; `wait=False`
pushes all at once (when the earlier outputs are already current).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from wildid.kaggle import api, metadata
from wildid.kaggle.api import KaggleError


class PushError(KaggleError):
    """A bundle cannot be pushed, or Kaggle reported a failed dataset or kernel."""


def _ids(folder: Path, filename: str) -> dict:
    return json.loads((folder / filename).read_text(encoding="utf-8"))


def bundle_folders(out: str | Path) -> tuple[list[Path], list[Path]]:
    """(dataset folders, kernel folders in push order) of a bundle."""
    out = Path(out)
    datasets = sorted(p.parent for p in out.glob(f"datasets/*/{metadata.DATASET_FILE}"))
    kernels = sorted(p.parent for p in out.glob(f"kernels/*/{metadata.KERNEL_FILE}"))
    order = {name: i for i, name in enumerate(metadata.NOTEBOOKS)}
    kernels.sort(key=lambda p: (order.get(p.name, len(order)), p.name))
    if not datasets and not kernels:
        raise PushError(
            f"{out}: no datasets/*/{metadata.DATASET_FILE} nor kernels/*/"
            f"{metadata.KERNEL_FILE}; write it with `wildid kaggle bundle {out}`."
        )
    return datasets, kernels


def _status(kind: str, ref: str) -> tuple[int, str]:
    cli, creds = api.preflight()
    done = api._run(cli, [kind, "status", ref], creds, check=False)
    return done.returncode, (done.stdout + done.stderr).strip().replace(creds.key, "***")


def wait_for(
    kind: str,
    ref: str,
    done: str,
    poll_s: float,
    timeout_s: float,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Poll `kaggle <kind> status REF` until it says `done`; an error status raises."""
    deadline = time.monotonic() + timeout_s
    while True:
        code, text = _status(kind, ref)
        lowered = text.lower()
        if code == 0 and done in lowered:
            return
        if code != 0 or "error" in lowered or "cancel" in lowered:
            raise PushError(f"{ref}: {text or f'kaggle {kind} status failed ({code})'}")
        if time.monotonic() > deadline:
            raise PushError(f"{ref}: not {done} after {timeout_s:.0f} s (last: {text})")
        sleep(poll_s)


def push(
    out: str | Path,
    message: str = "wildid bundle",
    wait: bool = True,
    poll_s: float = 60.0,
    timeout_s: float = 12 * 3600.0,
    sleep: Callable[[float], None] = time.sleep,
) -> list[str]:
    """Push a bundle's datasets, then its kernels; returns one line per upload."""
    datasets, kernels = bundle_folders(out)
    metadata.validate([*datasets, *kernels])
    log = []
    for folder in datasets:
        ref = _ids(folder, metadata.DATASET_FILE)["id"]
        exists = _status("datasets", ref)[0] == 0
        output = api.upload_dataset(folder, message, new=not exists)
        log.append(f"dataset {ref} {'new version' if exists else 'created'}: {output}")
    if wait:
        for folder in datasets:
            ref = _ids(folder, metadata.DATASET_FILE)["id"]
            wait_for("datasets", ref, "ready", poll_s, timeout_s, sleep)
    pushed: set[str] = set()
    completed: set[str] = set()
    for folder in kernels:
        meta = _ids(folder, metadata.KERNEL_FILE)
        if wait:
            for source in meta.get("kernel_sources", []):
                if source in pushed and source not in completed:
                    wait_for("kernels", source, "complete", poll_s, timeout_s, sleep)
                    completed.add(source)
        output = api.push_kernel(folder)
        pushed.add(meta["id"])
        log.append(f"kernel {meta['id']}: {output}")
    return log
