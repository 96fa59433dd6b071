"""The simulated Kaggle session's rules, each shown to bite (the whole chain of kernels
runs in `make kaggle-sim`, which `make test` runs too)."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from wildid.kaggle.simulate import (
    GUARD,
    KernelRun,
    Simulation,
    SimulationError,
    box_dataset,
    check,
    make_image,
)


def test_the_image_lacks_wildid_and_the_bundled_packages(tmp_path: Path) -> None:
    python = make_image(tmp_path / "image", {"faiss-cpu"})
    code = textwrap.dedent(
        """
        import importlib.util as u
        print([u.find_spec(n) is not None for n in ("wildid", "faiss", "torch", "timm")])
        """
    )
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[False, False, True, True]"


def test_the_guard_refuses_connections_off_the_machine(tmp_path: Path) -> None:
    code = GUARD + textwrap.dedent(
        """
        import socket
        server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
        socket.create_connection(server.getsockname(), timeout=2).close()  # loopback: fine
        try:
            socket.create_connection(("10.255.255.1", 443), timeout=2)
        except OSError as err:
            print(err)
        """
    )
    out = subprocess.run(["python3", "-c", code], capture_output=True, text=True, check=True)
    assert "network is off in this simulated Kaggle kernel" in out.stdout


def _run(tmp_path: Path, slug: str, written: list[str]) -> KernelRun:
    output = tmp_path / "store" / slug
    for name in written:
        (output / name).parent.mkdir(parents=True, exist_ok=True)
        (output / name).write_text("x")
    return KernelRun(slug, 1.0, output, written, output / "nb.ipynb")


def test_check_refuses_a_retrained_model_and_a_missing_submission(tmp_path: Path) -> None:
    model = "working/mini/models/fold0/best.pt"
    sim = Simulation(tmp_path / "kaggle")
    sim.kernels = [_run(tmp_path, "k-train", [model]), _run(tmp_path, "k-embed", [model])]
    with pytest.raises(SimulationError, match="k-embed trained a model again"):
        check(sim, "k-train")
    sim.kernels = [_run(tmp_path, "k-train", []), _run(tmp_path, "k-submit", [])]
    with pytest.raises(SimulationError, match="k-train wrote no model"):
        check(sim, "k-train")
    sim.kernels = [_run(tmp_path, "k-train", [model]), _run(tmp_path, "k-submit", ["x.csv"])]
    with pytest.raises(SimulationError, match="k-submit wrote no submission.csv"):
        check(sim, "k-train")


def test_box_dataset_is_read_back_as_the_competition_boxes(tiny_comp: Path, tmp_path) -> None:  # noqa: ANN001
    from wildid.config import BoxFile
    from wildid.data.boxfiles import read_box_files
    from wildid.data.competition import load_competition

    folder = box_dataset(tiny_comp, tmp_path / "boxes")
    entries = [
        BoxFile(path=str(folder / f"fullbody_{s}.csv"), kind="fullbody") for s in ("train", "test")
    ]
    read = read_box_files(entries).set_index("image")
    truth = load_competition(tiny_comp).boxes
    truth = truth[truth["kind"] == "fullbody"].set_index("image")
    assert len(read) == len(truth)
    columns = ["x1", "y1", "x2", "y2"]
    assert (read.loc[truth.index, columns].to_numpy() == truth[columns].to_numpy()).all()
