"""A Kaggle dataset folder from a trained run, so an offline kernel can load its weights.

    OUT/models/fold<k>/best.pt       every fold's best checkpoint (the layout the run has,
    OUT/models/fold<k>/history.csv   so a notebook finds them the same way)
    OUT/models/fold<k>/classes.csv
    OUT/config.yaml  OUT/run.json    when the run has them
    OUT/README.md                    how to attach it and which config key to set
    OUT/dataset-metadata.json        id USER/<slug>

Upload with `wildid kaggle push` (a bundle folder holding it under datasets/) or
`kaggle datasets create -p OUT --dir-mode zip`.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from wildid.io import atomic_path, write_text
from wildid.kaggle import metadata
from wildid.kaggle.api import KaggleError

RUN_FILES = ("config.yaml", "run.json")
FOLD_FILES = ("best.pt", "history.csv", "classes.csv")


class WeightsDatasetError(KaggleError):
    """A run folder without checkpoints, or a slug Kaggle would refuse."""


@dataclass(frozen=True)
class DatasetFolder:
    root: Path
    slug: str  # USER/<slug>
    files: tuple[Path, ...]  # relative to root, metadata and README included


def dataset_slug(text: str, suffix: str = "") -> str:
    """A Kaggle dataset slug (lowercase, digits, single hyphens, 6-50 characters)."""
    slug = re.sub(r"[^a-z0-9]+", "-", f"wildid-{text}-{suffix}".lower()).strip("-")
    slug = re.sub(r"-+", "-", slug)[:50].strip("-")
    return slug if len(slug) >= 6 else (slug + "-data")[:50]


def copy_file(source: Path, target: Path) -> None:
    """Copy atomically: a crash leaves the old file or the whole new one."""
    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _readme(slug: str, run: str, folds: list[str]) -> str:
    name = slug.split("/")[-1]
    first = folds[0]
    return f"""# wildid weights: {run}

The checkpoints of the wildid run `{run}` ({", ".join(folds)}), in the run's own layout
`models/fold<k>/best.pt`, with the config that trained it.

## Use it in a Kaggle notebook

1. Attach this dataset (Add input > Datasets > `{slug}`), or list it in the kernel's
   `dataset_sources` (`wildid kaggle bundle OUT --weights-dataset {slug}`).
2. Point the model at a checkpoint with the config key `model.checkpoint`:

       model.checkpoint=/kaggle/input/{name}/models/{first}/best.pt

   e.g. `WILDID_OVERRIDES="model.checkpoint=/kaggle/input/{name}/models/{first}/best.pt"`,
   or the same `key=value` after the config on the command line.

`config.yaml` is the resolved config of the run; `run.json` its training settings and
data digest; `history.csv` each fold's per-epoch losses and metrics.
"""


def weights_dataset(
    run_dir: str | Path, out: str | Path, user: str, slug: str | None = None
) -> DatasetFolder:
    """Copy a run's checkpoints into a Kaggle dataset folder `out`; returns what it wrote."""
    run_dir, out = Path(run_dir), Path(out)
    checkpoints = sorted(run_dir.glob("models/fold*/best.pt"))
    if not checkpoints:
        raise WeightsDatasetError(
            f"{run_dir}: no models/fold*/best.pt; train the run first "
            f"(`wildid train CONFIG`) or name its folder, e.g. working/<run>."
        )
    slug = slug or dataset_slug(run_dir.name, "weights")
    ref = f"{user}/{slug}"
    written = []
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            copy_file(run_dir / name, out / name)
            written.append(Path(name))
    folds = []
    for checkpoint in checkpoints:
        fold = checkpoint.parent
        folds.append(fold.name)
        for name in FOLD_FILES:
            if (fold / name).is_file():
                relative = Path("models", fold.name, name)
                copy_file(fold / name, out / relative)
                written.append(relative)
    write_text(out / "README.md", _readme(ref, run_dir.name, folds))
    title = f"wildid weights {run_dir.name}"[:50]
    metadata.write_metadata(
        out,
        metadata.DATASET_FILE,
        metadata.dataset_metadata(user, slug, title if len(title) >= 6 else title + " run"),
    )
    metadata.validate([out])
    written += [Path("README.md"), Path(metadata.DATASET_FILE)]
    return DatasetFolder(out, ref, tuple(written))
