"""A detector checkpoint runs no code: crafted pickles are refused before ultralytics sees them."""

from __future__ import annotations

import contextlib
import importlib
import os
import pathlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wildid.crop.detector import Detector, detect_boxes, train
from wildid.crop.detector.weights import UnsafeWeightsError, check_weights
from wildid.errors import WildidError

detect_crop = importlib.import_module("wildid.crop.detector.crop")


class _Payload:
    """Pickles as `call(*args)`: what a crafted checkpoint runs when it is unpickled."""

    def __init__(self, call, *args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def _payloads(marker: Path) -> dict[str, _Payload]:
    from ultralytics.nn.tasks import DetectionModel

    # DetectionModel is a genuine layer class, but called with a cfg it evals the
    # activation string: a checkpoint made only of allowed classes can still run code.
    cfg = {
        "nc": 1,
        "activation": f"__import__('pathlib').Path({str(marker)!r}).touch()",
        "backbone": [[-1, 1, "Conv", [16, 3, 2]]],
        "head": [],
    }
    return {
        "os.system": _Payload(os.system, f"touch '{marker}'"),
        "open": _Payload(open, str(marker), "w"),
        "Path.touch": _Payload(pathlib.Path.touch, marker),
        "DetectionModel(cfg)": _Payload(DetectionModel, cfg),
    }


PAYLOADS = ["os.system", "open", "Path.touch", "DetectionModel(cfg)"]


def _crafted(tmp_path: Path, kind: str) -> tuple[Path, Path]:
    """A .pt shaped like an ultralytics checkpoint whose model writes `marker` on unpickling."""
    marker = tmp_path / "pwned"
    path = tmp_path / f"{kind.replace('(', '_').replace(')', '')}.pt"
    torch.save({"model": _payloads(marker)[kind], "epoch": -1}, path)
    assert not marker.exists()
    return path, marker


def _load_in_subprocess(code: str) -> None:
    """Run `code` in a fresh interpreter: what a payload changes must not leak into this one."""
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=300)


@pytest.mark.parametrize("kind", ["os.system", "open", "Path.touch"])
def test_crafted_checkpoint_does_write_when_unpickled_freely(tmp_path: Path, kind: str) -> None:
    """Control: the crafted files are real attacks on ultralytics' weights_only=False load."""
    path, marker = _crafted(tmp_path, kind)
    _load_in_subprocess(f"import torch; torch.load({str(path)!r}, weights_only=False)")
    assert marker.exists()


def test_layer_called_with_arguments_writes_even_under_weights_only(tmp_path: Path) -> None:
    """Control: allowlisting DetectionModel is not enough; its constructor must be blocked."""
    path, marker = _crafted(tmp_path, "DetectionModel(cfg)")
    _load_in_subprocess(
        "import torch; from ultralytics.nn.tasks import DetectionModel\n"
        "with torch.serialization.safe_globals([DetectionModel]):\n"
        f"    torch.load({str(path)!r}, weights_only=True)"
    )
    assert marker.exists()


@pytest.mark.parametrize("kind", PAYLOADS)
def test_crafted_checkpoint_is_refused_and_writes_nothing(tmp_path: Path, kind: str) -> None:
    path, marker = _crafted(tmp_path, kind)
    before = set(torch.serialization.get_safe_globals())
    with pytest.raises(UnsafeWeightsError) as err:
        check_weights(path)
    assert not marker.exists()
    assert isinstance(err.value, WildidError)
    assert set(torch.serialization.get_safe_globals()) == before  # the check leaves torch as it was


def test_refusal_is_one_line_naming_the_file_the_global_and_the_switch(tmp_path: Path) -> None:
    path, _ = _crafted(tmp_path, "os.system")
    with pytest.raises(UnsafeWeightsError) as err:
        check_weights(path)
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    assert "posix.system" in message or "os.system" in message
    assert "detect.trust_weights: true" in message


def test_layer_constructor_call_is_named(tmp_path: Path) -> None:
    path, _ = _crafted(tmp_path, "DetectionModel(cfg)")
    with pytest.raises(UnsafeWeightsError, match=r"calls ultralytics\.nn\.tasks\.DetectionModel"):
        check_weights(path)


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(UnsafeWeightsError, match="not a torch.save zip checkpoint"):
        check_weights(path)


def test_trust_skips_the_check(tmp_path: Path) -> None:
    path, marker = _crafted(tmp_path, "os.system")
    assert check_weights(path, trust=True) == path
    assert not marker.exists()


def test_model_yaml_passes_untouched() -> None:
    assert check_weights("yolov8n.yaml") == Path("yolov8n.yaml")


def test_genuine_checkpoints_pass(tiny_run) -> None:
    """The detector's own best.pt and last.pt hold only layers and plain data."""
    weights = tiny_run.detector.weights
    for path in (weights, weights.with_name("last.pt")):
        assert check_weights(path) == path


def test_plain_data_of_other_checkpoints_passes(tiny_run, tmp_path: Path) -> None:
    """A killed run's last.pt carries IterableSimpleNamespace args; others paths, dates, numpy."""
    import datetime

    import numpy as np
    from ultralytics.utils import IterableSimpleNamespace

    ckpt = torch.load(tiny_run.detector.weights, weights_only=False)  # our own file: trusted
    ckpt["model"].args = IterableSimpleNamespace(imgsz=128, project=pathlib.Path("/tmp/x"))
    ckpt["train_metrics"] = {"fitness": np.float64(0.5), "counts": np.arange(3)}
    ckpt["date"] = datetime.datetime(2024, 1, 2)
    path = tmp_path / "last.pt"
    torch.save(ckpt, path)
    assert check_weights(path) == path


# ----------------------------------------------------------------------------- entry points


@pytest.mark.parametrize("epochs", [0, 1])
def test_train_refuses_a_crafted_detect_model(
    tiny_competition: Path, tmp_path: Path, tiny_config, epochs: int
) -> None:
    from wildid.data.competition import load_competition

    path, marker = _crafted(tmp_path, "os.system")
    config = tiny_config(
        tiny_competition, tmp_path / "working", f"detect.model={path}", f"detect.epochs={epochs}"
    )
    with pytest.raises(UnsafeWeightsError, match="detect.trust_weights"):
        train(config, load_competition(tiny_competition), progress=False)
    assert not marker.exists()
    assert not list((tmp_path / "working").glob("detect/*/train/weights/*.pt"))


def test_crop_refuses_crafted_detector_weights(tiny_run, tmp_path: Path, tiny_config) -> None:
    path, marker = _crafted(tmp_path, "open")
    config = tiny_config(tiny_run.competition.root, tmp_path / "working")
    detector = Detector(tmp_path / "working" / "detect" / "given", path, {})
    detector.run_dir.mkdir(parents=True, exist_ok=True)
    with pytest.raises(UnsafeWeightsError, match=str(path)):
        detect_boxes(config, tiny_run.competition, detector, progress=False)
    assert not marker.exists()


def test_trust_weights_hands_the_file_to_ultralytics(
    tiny_run, tmp_path: Path, tiny_config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """detect.trust_weights: true: no refusal; the file goes to the YOLO loader as it is."""
    path, marker = _crafted(tmp_path, "os.system")
    config = tiny_config(
        tiny_run.competition.root,
        tmp_path / "working",
        f"detect.model={path}",
        "detect.epochs=0",
        "detect.trust_weights=true",
    )
    detector = train(config, tiny_run.competition, progress=False)
    assert detector.weights == path
    loaded: list[str] = []

    class FakeYOLO:
        def __init__(self, weights: str) -> None:
            loaded.append(weights)
            raise RuntimeError("stop: not unpickled in this test")

    monkeypatch.setattr(detect_crop, "ultralytics_env", lambda: contextlib.nullcontext(FakeYOLO))
    detector.run_dir.mkdir(parents=True, exist_ok=True)
    with pytest.raises(RuntimeError, match="stop"):
        detect_boxes(config, tiny_run.competition, detector, progress=False)
    assert loaded == [str(path)]
    assert not marker.exists()
