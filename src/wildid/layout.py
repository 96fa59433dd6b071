"""The one owner of a run's paths, and of the record of what a run was made from.

Every path under `working/<run>/` and the run's submission files are spelled here and
nowhere else:

    working/<run>/
      run.json              what shapes this run's models (see `training_settings`)
      config.yaml           the resolved config of the latest run (describes metrics.json)
      folds.csv, split.csv  validation roles
      models/fold<k>/       best.pt, last.pt, history.csv, classes.csv, config.yaml
      embeddings/fold<k>/   per-kind views and the combined train/test embeddings
      metrics.json, breakdown.csv, threshold.png, val_predictions.csv
      <method>/             the same for other methods (baseline/)
      report/               index.html (self-contained), figures.json, the pictures as PNG
      pseudo/               pseudo-labelled competition (pseudo.out unset)
    working/crops/<key>/    crops shared by runs with the same crop settings and data folder
    working/detect/<run>/   detector runs
    working/compare/        `wildid compare` tables (<run>_vs_<run>....csv)
    submissions/<run>.csv   the trained model's submission; <run>_<method>.csv for others

A run name is bound to the settings that trained it: `claim` refuses, before anything is
written, a config whose training settings or data differ from the ones the folder was
made with, and names the keys that differ.

`claim` also makes the run this process's own before the long stages start:
- it locks `working/<run>/.lock` (wildid.faults.RunLock, an exclusive flock): a second
  process running the same run stops at once with a one-line error naming the holder's
  pid. The lock lasts as long as the process (the kernel drops it at exit, SIGKILL
  included); `release(layout)` gives it up earlier (a notebook done with a run).
  Locks are kept per process in `_LOCKS`, keyed by the run folder, because a flock belongs
  to an open file: a second claim of the same run in one process (a notebook re-running
  `prepare`, `wildid train` after `prepare`) must reuse the lock it holds, not wait on it.
  Under torchrun only process 0 locks (the others are its helpers, not rival runs).
- it removes temporaries a killed process left in the run's folder and among its
  submissions (wildid.faults.sweep), which only this run writes, and those older than
  `faults.STALE_AFTER` in the crop folders that runs of other names share;
- it checks that the working and submissions folders can be written and have room
  (wildid.faults.preflight), so a read-only `submissions/` is found before training.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wildid import faults
from wildid.config import Config, load_config
from wildid.errors import RunConflictError, RunNotFoundError
from wildid.io import write_text

# Keys that change how fast or where a run computes, never what it computes.
RUNTIME_KEYS = {
    "model": {"checkpoint"},
    "train": {"num_workers", "threads", "device", "cache_gb", "fold_ids"},
    "detect": {"workers", "device", "predict_batch", "trust_weights"},
}
DATA_FILES = ("train.csv", "sample_submission.csv", "boxes.csv")
# The run folders this process has claimed, and their locks (see the module docstring).
_LOCKS: dict[Path, faults.RunLock] = {}


def training_settings(config: Config) -> dict[str, Any]:
    """The settings that shape a run's trained models (what its name stands for)."""
    dump = config.model_dump(mode="json")
    sections = ["crop", "model", "loss", "train"]
    if config.crop.source == "detector":
        sections.append("detect")
    settings: dict[str, Any] = {"data": str(Path(config.data).resolve())}
    for name in sections:
        drop = RUNTIME_KEYS.get(name, set())
        settings[name] = {k: v for k, v in dump[name].items() if k not in drop}
    return settings


def data_digest(root: str | Path) -> str:
    """SHA-256 of the competition's tables: a changed train set is other data."""
    digest = hashlib.sha256()
    for name in DATA_FILES:
        path = Path(root) / name
        digest.update(name.encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """`key old -> new` for every leaf that differs between two nested dicts."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            out += differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')} {old!r} -> {new!r}"]


@dataclass(frozen=True)
class RunLayout:
    working: Path
    submissions: Path
    name: str

    @classmethod
    def of(cls, config: Config, name: str | None = None) -> RunLayout:
        """The layout of run `name` (default: the config's own run) under its folders."""
        return cls(Path(config.working), Path(config.submissions), name or config.name)

    @classmethod
    def find(cls, run: str | Path, working: str | Path = "working") -> RunLayout:
        """An existing run's layout: `run` is its folder, or its name under `working`.

        Its submissions folder is the one its saved config.yaml names. Raises
        RunNotFoundError, listing the runs under `working`, when there is no such run.
        """
        folder = Path(run)
        if not (folder / "config.yaml").is_file():
            folder = Path(working) / str(run)
        if not (folder / "config.yaml").is_file():
            runs = sorted(p.parent.name for p in Path(working).glob("*/config.yaml"))
            raise RunNotFoundError(
                f"{run}: neither a run folder nor a run under {working}/ (no config.yaml); "
                f"runs there: {', '.join(runs) or 'none'}."
            )
        submissions = load_config(folder / "config.yaml").submissions
        return cls(folder.parent, Path(submissions), folder.name)

    @property
    def root(self) -> Path:
        return self.working / self.name

    @property
    def record(self) -> Path:
        return self.root / "run.json"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def split(self) -> Path:
        return self.root / "split.csv"

    @property
    def folds(self) -> Path:
        return self.root / "folds.csv"

    @property
    def pseudo(self) -> Path:
        return self.root / "pseudo"

    def fold(self, k: int) -> Path:
        """Where fold k's model trains: best.pt, last.pt, history.csv, config.yaml."""
        return self.root / "models" / f"fold{k}"

    def checkpoint(self, k: int = 0) -> Path:
        return self.fold(k) / "best.pt"

    @property
    def all_embeddings(self) -> Path:
        """embeddings/: one folder per fold (fold<k>), and `ensemble` for an ensemble."""
        return self.root / "embeddings"

    def embeddings(self, k: int = 0) -> Path:
        return self.all_embeddings / f"fold{k}"

    def method(self, method: str) -> Path:
        """metrics.json, breakdown.csv and threshold.png of one method."""
        return self.root if method == "trained" else self.root / method

    def metrics(self, method: str = "trained") -> Path:
        return self.method(method) / "metrics.json"

    def val_predictions(self, method: str = "trained") -> Path:
        """Each validation query's truth, top-5 predictions and top-1 score."""
        return self.method(method) / "val_predictions.csv"

    @property
    def report(self) -> Path:
        """report/: index.html, figures.json and the pictures (wildid.report)."""
        return self.root / "report"

    def comparison(self, others: Sequence[str]) -> Path:
        """Where `wildid compare` writes its CSV for this run beside `others`."""
        names = "_vs_".join([self.name, *others])
        if len(names) > 120:  # many runs: a short, stable name
            names = (
                f"{self.name}_vs_{len(others)}-runs-{hashlib.sha1(names.encode()).hexdigest()[:8]}"
            )
        return self.working / "compare" / f"{names}.csv"

    def submission(self, method: str = "trained") -> Path:
        stem = self.name if method == "trained" else f"{self.name}_{method}"
        return self.submissions / f"{stem}.csv"

    def crops(self, key: str) -> Path:
        return self.working / "crops" / key

    @property
    def pixels(self) -> Path:
        """Letterboxed crops as uint8 arrays (wildid.data.pixels), shared by this folder's
        runs."""
        return self.working / "cache" / "pixels"

    def detector(self, run: str) -> Path:
        return self.working / "detect" / run

    def claim(self, config: Config) -> None:
        """Bind this run's name to its training settings and data, or refuse.

        Called before a run writes anything: a folder whose models were trained with other
        settings or data is left untouched, and the error names what differs. First it
        locks the run (or refuses: another process runs it), sweeps the temporaries killed
        runs left, and checks the output folders can be written and have room.
        """
        start = time.time()
        self.lock()
        faults.sweep(self.root, older_than=start)
        for path in self.submissions.glob(f".{self.name}*"):  # <run>.csv, <run>_<method>.csv
            target = faults.temporary_of(path) or ""
            ours = target == f"{self.name}.csv" or target.startswith(f"{self.name}_")
            if ours and path.stat().st_mtime <= start:
                path.unlink(missing_ok=True)
        # Crops are shared by runs of other names (no lock of ours covers them): only
        # temporaries older than any live write could be are theirs to sweep.
        faults.sweep(self.working / "crops", older_than=start - faults.STALE_AFTER)
        faults.preflight([self.working, self.root, self.submissions])
        record = {"settings": training_settings(config), "data_digest": data_digest(config.data)}
        old = self._recorded() if (self.root / "models").is_dir() else None
        if old is not None:
            diff = differences(old.get("settings"), record["settings"])
            if old.get("data_digest") not in (None, record["data_digest"]):
                diff.append(
                    f"the tables in {config.data} (train.csv, sample_submission.csv, "
                    "boxes.csv) changed since this run was trained"
                )
            if diff:
                raise RunConflictError(
                    f"{self.root} was made with other settings: {'; '.join(diff)}. Give this "
                    f"run its own name (name={self.name}-2) to keep both, or delete "
                    f"{self.root} to start it over."
                )
        write_text(self.record, json.dumps(record, indent=2))

    def lock(self) -> faults.RunLock | None:
        """Hold this run's lock for the rest of the process (None under torchrun rank > 0)."""
        if int(os.environ.get("RANK", "0")) != 0:
            return None
        key = self.root.resolve()
        held = _LOCKS.get(key)
        if held is None or not held.held:
            held = _LOCKS[key] = faults.RunLock(self.root).acquire()
        return held

    def _recorded(self) -> dict[str, Any] | None:
        if self.record.is_file():
            return json.loads(self.record.read_text())
        if self.config.is_file():  # a run from before run.json: its saved config stands in
            return {"settings": training_settings(load_config(self.config))}
        return None


def release(layout: RunLayout) -> None:
    """Give up this process's lock on a run before the process ends."""
    held = _LOCKS.pop(layout.root.resolve(), None)
    if held is not None:
        held.release()
