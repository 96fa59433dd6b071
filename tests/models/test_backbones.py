"""The weight resolver: shipped ImageNet weights, local checkpoints, and the offline error."""

from __future__ import annotations

import os
import pickle
import socket
import statistics
import time
from pathlib import Path

import cv2
import pytest
import timm
import torch
from torch import nn

import wildid  # (offline switches)
from wildid.data.transforms import eval_transform
from wildid.models import backbones
from wildid.models.backbones import (
    SHIPPED,
    WeightsError,
    create_backbone,
    read_state_dict,
)

SHIPPED_NAMES = [n for n, s in SHIPPED.items() if s.path() is not None]
MILITARY_UNIFORM = 652  # ImageNet class of matplotlib's Grace Hopper portrait


def _photo() -> torch.Tensor:
    """A real photograph that every environment with matplotlib has."""
    from matplotlib import cbook

    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _bn_mismatch(model: nn.Module, image: torch.Tensor) -> float:
    """Median over BatchNorm layers of |log(batch variance / running variance)|.

    Weights loaded into the right tensors see a natural photo's activations with about
    the variances they were trained on (near 0); random or shuffled weights do not.
    """
    scores: list[float] = []

    def hook(module: nn.BatchNorm2d, inputs: tuple[torch.Tensor], _out: torch.Tensor) -> None:
        var = inputs[0].var(dim=(0, 2, 3))
        scores.append(((var + 1e-5) / (module.running_var + 1e-5)).log().abs().median().item())

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.BatchNorm2d)
    ]
    with torch.no_grad():
        model.eval()(image)
    for handle in handles:
        handle.remove()
    return statistics.median(scores)


def _input(model: nn.Module, size: int = 224) -> torch.Tensor:
    cfg = model.pretrained_cfg
    return eval_transform(size, (cfg["mean"], cfg["std"]))(image=_photo())["image"][None]


@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_shipped_weights_are_the_files_tensors(name: str) -> None:
    model, source = create_backbone(name)
    assert "shipped" in source
    file_tensors = list(read_state_dict(SHIPPED[name].path()).values())
    own = list(model.state_dict().values())
    for mine, theirs in zip(own, file_tensors, strict=False):
        assert torch.equal(mine, theirs)


@pytest.mark.parametrize("name", SHIPPED_NAMES)
def test_shipped_weights_are_coherent_on_a_photo(name: str) -> None:
    pretrained, _ = create_backbone(name)
    random_init, _ = create_backbone(name, "none")
    image = _input(pretrained)
    assert _bn_mismatch(pretrained, image) < 0.6
    assert _bn_mismatch(random_init, image) > 1.2


@pytest.mark.skipif("efficientnet_lite0" not in SHIPPED_NAMES, reason="package not installed")
def test_efficientnet_lite0_recognises_a_military_uniform() -> None:
    model, _ = create_backbone("efficientnet_lite0")
    assert model.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)  # what the file was trained on
    with torch.no_grad():
        top = model.eval()(_input(model)).argmax(-1).item()
    assert top == MILITARY_UNIFORM


def _timm_checkpoint(tmp_path: Path, name: str, filename: str) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    state = timm.create_model(name, pretrained=False).state_dict()
    path = tmp_path / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": state}, path)
    return state


@pytest.mark.parametrize("filename", ["mobilenetv2_100.pth", "mobilenetv2_100/model.safetensors"])
def test_local_checkpoint_in_weights_dir_wins(tmp_path: Path, filename: str) -> None:
    state = _timm_checkpoint(tmp_path, "mobilenetv2_100", filename)
    model, source = create_backbone("mobilenetv2_100", "auto", str(tmp_path))
    assert source == str(tmp_path / filename)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_checkpoint_path_as_pretrained(tmp_path: Path) -> None:
    state = _timm_checkpoint(tmp_path, "resnet18", "r18.pth")
    model, _ = create_backbone("resnet18", str(tmp_path / "r18.pth"))
    assert torch.equal(model.conv1.weight, state["conv1.weight"])


def test_checkpoint_of_another_architecture_is_refused(tmp_path: Path) -> None:
    _timm_checkpoint(tmp_path, "resnet18", "resnet34.pth")
    with pytest.raises(WeightsError, match="resnet34.pth"):
        create_backbone("resnet34", "auto", str(tmp_path))


def test_missing_checkpoint_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        create_backbone("resnet18", str(tmp_path / "absent.pth"))


def _no_local_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WILDID_WEIGHTS", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)


def test_users_own_hub_offline_is_respected(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF_HUB_OFFLINE=1 set by the user: no probe, no download, the options listed."""
    _no_local_weights(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(wildid.HUB_DEFAULT_MARK, raising=False)

    def no_probe(*args, **kwargs):
        raise AssertionError("the hub must not be probed")

    monkeypatch.setattr(backbones, "hub_reachable", no_probe)
    with pytest.raises(WeightsError) as err:
        create_backbone("resnet18", "auto", None)
    message = str(err.value)
    assert "HF_HUB_OFFLINE is set" in message
    for option in (
        "weights_dir",
        "model.pretrained=",
        "wildid kaggle imagenet-weights OUT --model resnet18",
        "model.pretrained=none",
    ):
        assert option in message


def test_unreachable_hub_is_the_weights_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """wildid's own default offline switch does not block: the probe decides."""
    _no_local_weights(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(wildid.HUB_DEFAULT_MARK, "1")
    monkeypatch.setattr(backbones, "hub_reachable", lambda *a, **k: False)
    monkeypatch.setattr(backbones, "_timm_download", lambda name: pytest.fail("downloaded"))
    with pytest.raises(WeightsError, match="(?s)huggingface.co is not reachable.*weights_dir"):
        create_backbone("resnet18", "auto", None)


def test_reachable_hub_downloads_with_the_hub_online(monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub

    _no_local_weights(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv(wildid.HUB_DEFAULT_MARK, "1")
    monkeypatch.setattr(backbones, "hub_reachable", lambda *a, **k: True)
    seen = []

    def download(name):
        def build():
            seen.append((os.environ["HF_HUB_OFFLINE"], hub.is_offline_mode()))
            return nn.Identity()

        return build

    monkeypatch.setattr(backbones, "_timm_download", download)
    before = hub.HF_HUB_OFFLINE
    model, source = create_backbone("resnet18", "auto", None)
    assert source == "timm hub download" and seen == [("0", False)]
    restored = hub.HF_HUB_OFFLINE
    assert os.environ["HF_HUB_OFFLINE"] == "1" and restored is before


def test_probe_of_a_closed_port_answers_fast() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]  # bound, never listening: refused
    start = time.monotonic()
    assert backbones.hub_reachable(("127.0.0.1", port), timeout=2) is False
    assert time.monotonic() - start < 2.5


def test_probe_gives_up_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup that never answers (a closed network's DNS) cannot hold the caller."""

    def hangs(*args, **kwargs):
        time.sleep(2)
        raise OSError("timed out")

    monkeypatch.setattr(backbones.socket, "create_connection", hangs)
    start = time.monotonic()
    assert backbones.hub_reachable(("huggingface.co", 443), timeout=0.3) is False
    assert time.monotonic() - start < 1.5


class _WritesOnUnpickle:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def test_crafted_checkpoint_as_pretrained_runs_no_code(tmp_path: Path) -> None:
    """model.pretrained / weights_dir files load with weights_only: a pickle's call is refused."""
    marker = tmp_path / "pwned"
    torch.save({"state_dict": _WritesOnUnpickle(marker)}, tmp_path / "resnet18.pth")
    with pytest.raises(pickle.UnpicklingError):
        create_backbone("resnet18", str(tmp_path / "resnet18.pth"))
    with pytest.raises(pickle.UnpicklingError):
        create_backbone("resnet18", "auto", str(tmp_path))
    assert not marker.exists()
