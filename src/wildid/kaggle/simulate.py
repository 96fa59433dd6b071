"""A faithful local rehearsal of the kernels on Kaggle: `wildid kaggle simulate`.

Kaggle runs each notebook as its own kernel: a fresh machine whose Python image lacks
wildid, the competition and the attached datasets and kernel outputs mounted read-only
under `/kaggle/input/<slug>/`, an empty `/kaggle/working` whose contents become the
kernel's output, and (offline kernels) no network. This module reproduces that for the
kernel folders `wildid kaggle bundle` writes, in order:

- the **image**: a virtual environment holding this environment's packages except wildid
  and the packages the code dataset brings (so they can only come from its wheels);
  wildid is installed by the notebook's own first cell from the code dataset with
  `pip --no-index`, and removed again before the next kernel;
- the **inputs**: `<root>/input/` holds only what a kernel's metadata attaches (the
  competition's four items, the datasets, the outputs of its `kernel_sources`), read-only:
  a read-only bind mount in a mount namespace where `unshare` allows it (root included),
  and every input's files are compared before and after each kernel in any case;
- **no network**: a network namespace with only loopback where `unshare` allows it, and in
  any case a guard in the image that refuses every non-loopback connection;
- the **outputs**: `<root>/working` starts empty; after the kernel it is stored as that
  kernel's output, attached read-only to the kernels that list it.

The result says, per kernel, what it wrote; `check` asserts that no kernel trained a model
an earlier one had trained (no `.pt` written after the training kernel) and that the last
kernel's `submission.csv` is valid for the competition.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import re
import shlex
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from wildid.errors import WildidError
from wildid.kaggle.bundle import CODE_DATASET
from wildid.kaggle.install import dist as wheel_dist

COMPETITION = "happy-whale-and-dolphin"
COMPETITION_ITEMS = ("train.csv", "sample_submission.csv", "train_images", "test_images")
KERNEL_NAME = "kaggle-image"

# Refuses every connection that leaves the machine; loopback (the notebook's own kernel
# channels) stays open. Installed as the image's sitecustomize, so every process of it
# (the notebook kernel, pip, workers) runs behind it.
GUARD = """
import socket

_connect = socket.socket.connect


def _local(address):
    host = address[0] if isinstance(address, tuple) else address
    return not isinstance(host, str) or host in ("127.0.0.1", "::1", "localhost")


def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _local(address):
        raise OSError(101, f"network is off in this simulated Kaggle kernel: {address}")
    return _connect(self, address)


socket.socket.connect = connect
"""

# Run by the image's Python: execute one notebook as Kaggle does, top to bottom.
RUNNER = """
import sys
import nbformat
from nbclient import NotebookClient

source, executed, timeout, workdir, kernel = sys.argv[1:6]
notebook = nbformat.read(source, as_version=4)
client = NotebookClient(
    notebook, timeout=int(timeout), kernel_name=kernel, resources={"metadata": {"path": workdir}}
)
try:
    client.execute()
finally:
    nbformat.write(notebook, executed)
"""


class SimulationError(WildidError, RuntimeError):
    """A kernel failed, or broke a rule of Kaggle's, in the simulated session."""


@dataclass(frozen=True)
class KernelRun:
    slug: str
    seconds: float
    output: Path  # the stored /kaggle/working of this kernel
    written: list[str]  # files it wrote, relative to its working folder
    executed: Path  # the executed notebook, with its outputs


@dataclass
class Simulation:
    root: Path  # what a kernel sees as /kaggle
    kernels: list[KernelRun] = field(default_factory=list)
    isolation: list[str] = field(default_factory=list)  # how inputs and network were closed
    help_text: str = ""  # `wildid --help` in the image, installed from the code dataset alone


def _dist_name(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _site_packages() -> Path:
    return Path(sysconfig.get_paths()["purelib"])


def _owned_entries(dists: set[str]) -> set[str]:
    """Top-level site-packages entries of the distributions `dists`."""
    site = _site_packages().resolve()
    owned: set[str] = set()
    for dist in metadata.distributions():
        if _dist_name(dist.metadata["Name"] or "") not in dists:
            continue
        for file in dist.files or []:
            path = Path(dist.locate_file(file)).resolve()
            if path.is_relative_to(site):
                owned.add(path.relative_to(site).parts[0])
    return owned


def make_image(target: Path, without: set[str]) -> Path:
    """A venv with this environment's packages, less `without` (distribution names) and
    wildid: what Kaggle's image offers before the code dataset is installed."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(target)], check=True)
    python = target / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    skip = _owned_entries({*without, "wildid"}) | {"__pycache__"}
    for entry in _site_packages().iterdir():
        if entry.name not in skip and not entry.name.startswith("__editable__"):
            (site / entry.name).symlink_to(entry)
    (site / "sitecustomize.py").write_text(GUARD)
    return python


def _snapshot(folder: Path) -> str:
    """Digest of every file's path, size and modification time under `folder`."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        digest.update(f"{path.relative_to(folder)} {info.st_size} {info.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _read_only(folder: Path) -> None:
    """Everyone may read (and enter) `folder`'s contents, nobody may write them."""
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            readable = 0o555 if path.is_dir() else 0o444
            path.chmod((stat.S_IMODE(path.stat().st_mode) | readable) & ~0o222)


def _namespaces_work() -> bool:
    """Whether `unshare` can give a kernel its own mounts and network (root, or a user
    namespace): then inputs are a read-only mount and only loopback exists."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "-n", "sh", "-c", "mount --bind / /mnt && ip link set lo up"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


# Inside the namespaces: the store becomes a read-only mount, loopback comes up, then the
# command runs ("$0" "$@"), as root or not, with inputs it cannot write and no network.
ISOLATE = (
    'mount --bind "$WILDID_SIM_STORE" "$WILDID_SIM_STORE" && '
    'mount -o remount,bind,ro "$WILDID_SIM_STORE" && ip link set lo up && exec "$0" "$@"'
)


def _slug(identifier: str) -> str:
    return identifier.split("/", 1)[-1]


def _attach(root: Path, sources: Mapping[str, Path], names: Sequence[str], who: str) -> None:
    """Make <root>/input hold exactly `names` (links to their stored, read-only copies)."""
    for link in (root / "input").iterdir():
        link.unlink()
    for name in names:
        if name not in sources:
            raise SimulationError(f"{who}: attaches '{name}', which no earlier step provides.")
        (root / "input" / name).symlink_to(sources[name])


def _store_inputs(store: Path, competition: Path, datasets: Sequence[Path]) -> dict[str, Path]:
    """Read-only copies of what Kaggle attaches: the competition's items, each dataset."""
    sources = {COMPETITION: store / COMPETITION}
    sources[COMPETITION].mkdir()
    for item in COMPETITION_ITEMS:
        source = Path(competition) / item
        if not source.exists():
            raise SimulationError(f"{competition}: no {item}; give a competition folder.")
        copy = shutil.copytree if source.is_dir() else shutil.copy2
        copy(source, sources[COMPETITION] / item)
    for dataset in datasets:
        meta = json.loads((Path(dataset) / "dataset-metadata.json").read_text())
        sources[_slug(meta["id"])] = target = store / _slug(meta["id"])
        shutil.copytree(dataset, target)
    for folder in sources.values():
        _read_only(folder)
    return sources


def simulate(
    kernels: Sequence[Path],
    datasets: Sequence[Path],
    competition: Path,
    root: Path,
    env: Mapping[str, str] | None = None,
    timeout: int = 900,
) -> Simulation:
    """Run the kernel folders in order as Kaggle would (see the module docstring).

    `datasets`: folders with dataset-metadata.json, the code dataset (CODE_DATASET) among
    them; `competition`: a folder with the competition's items; `root` must not exist yet
    and becomes the simulated /kaggle; `env`: extra environment for every kernel (e.g.
    WILDID_CONFIG for a CPU run). Raises SimulationError at the first broken rule.
    """
    root = Path(root).resolve()
    if root.exists():
        raise SimulationError(f"{root}: exists; the simulation needs a fresh folder.")
    store, home = root.parent / f"{root.name}-store", root.parent / f"{root.name}-home"
    for folder in (root / "input", store, home):
        folder.mkdir(parents=True)
    sim = Simulation(root)
    sources = _store_inputs(store, competition, datasets)
    if CODE_DATASET not in sources:
        raise SimulationError(f"no {CODE_DATASET} dataset among {list(sources)}.")
    wheels = list(sources[CODE_DATASET].glob("*.whl"))

    image = root.parent / f"{root.name}-image"
    python = make_image(image, {wheel_dist(w) for w in wheels})
    site = next((image / "lib").glob("python*/site-packages"))
    pristine = {folder: {p.name for p in folder.iterdir()} for folder in (site, image / "bin")}
    spec = home / "jupyter" / "kernels" / KERNEL_NAME
    spec.mkdir(parents=True)
    kernelspec = {
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "simulated Kaggle image",
        "language": "python",
    }
    spec.joinpath("kernel.json").write_text(json.dumps(kernelspec))
    (home / "runner.py").write_text(RUNNER)
    namespaces = _namespaces_work()
    sim.isolation += [
        "inputs a read-only mount, network namespace with loopback only"
        if namespaces
        else "no namespaces: inputs chmod a-w (root ignores it), compared after each kernel",
        "socket guard in the image's sitecustomize",
    ]
    kernel_env = {
        "PATH": f"{image / 'bin'}:/usr/bin:/bin",
        "HOME": str(home),
        "JUPYTER_PATH": str(home / "jupyter"),
        "WILDID_KAGGLE_ROOT": str(root),
        "WILDID_SIM_STORE": str(store),
        "PIP_NO_CACHE_DIR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        "YOLO_CONFIG_DIR": str(home / "ultralytics"),
        "MPLCONFIGDIR": str(home / "matplotlib"),
        **(env or {}),
    }

    def isolated(command: list[str]) -> subprocess.CompletedProcess:
        """Run `command` as a kernel runs: inputs read-only, offline, the image on PATH."""
        if namespaces:
            command = ["unshare", "-m", "-n", "sh", "-c", ISOLATE, *command]
        return subprocess.run(command, env=kernel_env, capture_output=True, text=True, check=False)

    # The wheel alone makes a working wildid in an image that has torch.
    _attach(root, sources, [CODE_DATASET], "install check")
    install = [str(python), str(root / "input" / CODE_DATASET / "install.py")]
    for original in (install, [str(image / "bin" / "wildid"), "--help"]):
        done = isolated(original)
        if done.returncode != 0:
            raise SimulationError(f"{' '.join(original)} failed in the image:\n{_tail(done)}")
    sim.help_text = done.stdout
    _restore(pristine)

    for folder in kernels:
        meta = json.loads((Path(folder) / "kernel-metadata.json").read_text())
        kernel = _slug(meta["id"])
        attached = [
            *meta.get("competition_sources", []),
            *map(_slug, meta.get("dataset_sources", [])),
            *map(_slug, meta.get("kernel_sources", [])),
        ]
        _attach(root, sources, attached, kernel)
        working = root / "working"
        working.mkdir()
        before = {name: _snapshot(path) for name, path in sources.items()}
        executed = home / f"{kernel}.ipynb"
        original = [str(python), str(home / "runner.py"), str(Path(folder) / meta["code_file"])]
        original += [str(executed), str(timeout), str(working), KERNEL_NAME]
        start = time.perf_counter()
        result = isolated(original)
        seconds = round(time.perf_counter() - start, 1)
        if result.returncode != 0:
            raise SimulationError(f"kernel {kernel} failed after {seconds} s:\n{_tail(result)}")
        changed = [name for name, path in sources.items() if _snapshot(path) != before[name]]
        if changed:
            raise SimulationError(f"kernel {kernel} wrote into its read-only inputs: {changed}")
        written = sorted(str(p.relative_to(working)) for p in working.rglob("*") if p.is_file())
        sources[kernel] = output = store / kernel
        shutil.move(working, output)
        _read_only(output)
        _restore(pristine)  # a fresh image for the next kernel
        sim.kernels.append(KernelRun(kernel, seconds, output, written, executed))
    return sim


def _restore(pristine: dict[Path, set[str]]) -> None:
    """Remove what was installed into the image since `pristine` was taken."""
    for folder, names in pristine.items():
        for extra in {p.name for p in folder.iterdir()} - names:
            path = folder / extra
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def check(sim: Simulation, trainer: str) -> Path:
    """The rules a chain of kernels must keep; returns the last kernel's submission.csv.

    Only `trainer` writes models (`.pt` files under working/<run>/models/): a later kernel
    that writes one retrained what an earlier kernel trained. The last kernel leaves
    `submission.csv` in its working folder, valid for the competition.
    """
    from wildid.data.competition import load_competition
    from wildid.evaluation.submission import validate_against_competition

    names = [k.slug for k in sim.kernels]
    if trainer not in names:
        raise SimulationError(f"no kernel {trainer} among {names}.")
    for kernel in sim.kernels:
        models = [f for f in kernel.written if "/models/" in f and f.endswith(".pt")]
        if kernel.slug == trainer and not models:
            raise SimulationError(f"{trainer} wrote no model (.pt under working/<run>/models).")
        if kernel.slug != trainer and models:
            raise SimulationError(f"{kernel.slug} trained a model again: {models[:3]}")
    submission = sim.kernels[-1].output / "submission.csv"
    if not submission.is_file():
        raise SimulationError(f"{sim.kernels[-1].slug} wrote no submission.csv to /kaggle/working.")
    competition = load_competition(
        sim.root.parent / f"{sim.root.name}-store" / COMPETITION, check_images=False
    )
    validate_against_competition(submission, competition)
    return submission


def _tail(result: subprocess.CompletedProcess, lines: int = 40) -> str:
    text = (result.stderr or "") + (result.stdout or "")
    return "\n".join(text.strip().splitlines()[-lines:])


# The public full-body boxes Happywhale competitors attach (wildid.kaggle.bundle.BOX_DATASET,
# read by wildid.data.boxfiles), as the Kaggle configs name them: the rehearsal attaches the
# competition's own boxes in their format under their slug, and crops with them.
BOX_OVERRIDE = (
    "[{path: ../input/fullbodywhaleannotations/fullbody_train.csv, kind: fullbody}, "
    "{path: ../input/fullbodywhaleannotations/fullbody_test.csv, kind: fullbody}]"
)


def box_dataset(competition: Path, out: Path) -> Path | None:
    """The competition's fullbody boxes.csv as Jan Bremer's fullbody_{train,test}.csv
    (`image, bbox, conf`, bbox printed "[[x1 y1 x2 y2]]"), a dataset folder; None without
    boxes.csv. Kaggle's competition has no boxes: this stands in for the attached set."""
    import pandas as pd

    from wildid.data.competition import load_competition
    from wildid.kaggle.metadata import DATASET_FILE, dataset_metadata, write_metadata

    source = load_competition(competition, check_images=False)
    if source.boxes is None:
        return None
    boxes = source.boxes[source.boxes["kind"] == "fullbody"].drop_duplicates("image")
    boxes = boxes.set_index("image")
    out.mkdir(parents=True)
    for split, table in (("train", source.train), ("test", source.test)):
        rows = []
        for image in table["image"]:
            box = boxes.loc[image, ["x1", "y1", "x2", "y2"]] if image in boxes.index else None
            bbox = "" if box is None else "[[" + " ".join(str(int(v)) for v in box) + "]]"
            rows.append({"image": image, "bbox": bbox, "conf": "" if box is None else "[0.9]"})
        pd.DataFrame(rows).to_csv(out / f"fullbody_{split}.csv", index=False)
    from wildid.kaggle.bundle import BOX_DATASET

    owner, slug = BOX_DATASET.split("/")
    meta = dataset_metadata(owner, slug, "Full-body whale annotations (rehearsal copy)")
    write_metadata(out, DATASET_FILE, meta)
    return out


def rehearse(
    out: str | Path,
    competition: str | Path,
    config: str = "mini",
    overrides: Sequence[str] = (),
    packages: Sequence[str] | None = None,
    timeout: int = 900,
) -> tuple[Simulation, Path]:
    """Bundle this checkout for a simulated user, run every kernel on `competition`, check.

    The kernels get `config` and `overrides` through WILDID_CONFIG / WILDID_OVERRIDES (as a
    user would set CONFIG and OVERRIDES in the parameters cell); wheels are fetched for this
    interpreter, since the simulated image is this environment. Returns the simulation and
    the validated submission.
    """
    from wildid.kaggle.bundle import KAGGLE_MISSING, bundle
    from wildid.kaggle.metadata import kernel_slug

    out = Path(out)
    if out.exists():
        raise SimulationError(f"{out}: exists; give a new folder (or delete this one).")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    wheels = KAGGLE_MISSING if packages is None else packages
    boxes = box_dataset(Path(competition), out / "boxes")
    made = bundle(out / "bundle", "wildid-sim", wheels, python=python)  # attaches BOX_DATASET
    if boxes is not None:  # the kernels crop with the attached box files, as on Kaggle
        overrides = [f"crop.boxes={BOX_OVERRIDE}", *overrides]
    env = {"WILDID_CONFIG": config, "WILDID_OVERRIDES": shlex.join(overrides)}
    datasets = [made.dataset] if boxes is None else [made.dataset, boxes]
    sim = simulate(made.kernels, datasets, Path(competition), out / "kaggle", env, timeout)
    return sim, check(sim, kernel_slug("03_train"))
