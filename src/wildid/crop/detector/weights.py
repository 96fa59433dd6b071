"""Detector weights are checked before ultralytics unpickles them: a checkpoint runs no code.

Ultralytics unpickles a `.pt` without torch's weights-only restriction, so it does whatever the
pickle says (a crafted file can write files or start processes). `check_weights` reads the
file first without executing it: torch lists the globals the pickle references beyond its
own tensor allowlist, and only model layers (nn.Module classes of torch.nn and ultralytics'
nn modules, ultralytics' loss objects) and a few plain data types (ultralytics' training
args, paths, dates, numpy scalars) are accepted. The file is then loaded with
`torch.load(weights_only=True)` against exactly those globals, the layers' constructors
blocked: a genuine checkpoint rebuilds its layers with `__new__` and `__setstate__` only,
while a call with arguments is how a crafted one would reach code (DetectionModel's
constructor `eval`s the yaml's activation string). A file that passes is handed to
ultralytics, whose load replays the same proven steps.

`detect.trust_weights: true` skips the check, for a file from a source you trust. Model
yamls (yolov8n.yaml) are not pickles and pass untouched.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from wildid.errors import WildidError

FIX = "set detect.trust_weights: true only for a file from a source you trust"
YAML_SUFFIXES = (".yaml", ".yml")
# Packages whose modules' nn.Module classes are model layers, and other modules whose are.
LAYER_PACKAGES = {"torch.nn.modules", "ultralytics.nn.modules"}
LAYER_MODULES = LAYER_PACKAGES | {"ultralytics.nn.tasks"}
# Plain classes a model may carry (e.g. model.criterion): any class defined in these modules.
CLASS_MODULES = {"ultralytics.utils.loss", "ultralytics.utils.tal", "ultralytics.nn.distill_model"}
# Names older ultralytics versions pickled, as ultralytics' own loader maps them.
LEGACY_MODULES = {
    "ultralytics.yolo.utils": "ultralytics.utils",
    "ultralytics.yolo.v8": "ultralytics.models.yolo",
    "ultralytics.yolo.data": "ultralytics.data",
}
RENAMED = {
    "ultralytics.nn.modules.block.Silence": "torch.nn.modules.linear.Identity",
    "ultralytics.nn.tasks.YOLOv10DetectionModel": "ultralytics.nn.tasks.DetectionModel",
    "ultralytics.utils.loss.v10DetectLoss": "ultralytics.utils.loss.E2EDetectLoss",
}


class UnsafeWeightsError(WildidError, ValueError):
    """A weights file references code, or cannot be read without unpickling it freely."""


def _refuse(path: Path, why: str) -> UnsafeWeightsError:
    why = " ".join(why.split())  # one line
    return UnsafeWeightsError(
        f"{path}: refused to load these weights: {why}; a pickle like this can run code "
        f"when unpickled ({FIX})."
    )


@functools.cache
def _data_globals() -> dict[str, Any]:
    """Plain data types of genuine checkpoints; building one runs no code of the file's choice."""
    import datetime
    import pathlib

    import numpy as np
    from ultralytics.utils import IterableSimpleNamespace

    scalar = np.float64(0).__reduce__()[0]  # numpy's scalar rebuilder (train metrics)
    reconstruct = np.zeros(1).__reduce__()[0]  # numpy's array rebuilder
    allowed: dict[str, Any] = {
        "ultralytics.utils.IterableSimpleNamespace": IterableSimpleNamespace,
        "ultralytics.yolo.utils.IterableSimpleNamespace": IterableSimpleNamespace,  # < 8.0.44
        "numpy.dtype": np.dtype,
        "numpy.ndarray": np.ndarray,
    }
    for core in ("numpy.core", "numpy._core"):
        allowed[f"{core}.multiarray.scalar"] = scalar
        allowed[f"{core}.multiarray._reconstruct"] = reconstruct
    for module in ("pathlib", "pathlib._local"):  # Python 3.13 pickles pathlib._local
        for name in ("Path", "PosixPath", "WindowsPath"):
            allowed[f"{module}.{name}"] = type(pathlib.Path())  # either OS's path, as ultralytics
        for name in ("PurePath", "PurePosixPath", "PureWindowsPath"):
            allowed[f"{module}.{name}"] = getattr(pathlib, name)
    for name in ("datetime", "date", "time", "timedelta", "timezone"):
        allowed[f"datetime.{name}"] = getattr(datetime, name)
    return allowed


def _numpy_dtype_types() -> list[type]:
    """The concrete dtype classes (numpy.dtypes.Float64DType, ...) a pickled dtype builds."""
    import numpy as np

    return [t for t in vars(np.dtypes).values() if isinstance(t, type) and issubclass(t, np.dtype)]


def _resolve(name: str) -> type | None:
    """The layer class `name` names (import path as pickled), or None if it is none."""
    name = RENAMED.get(name, name)
    module, _, attr = name.rpartition(".")
    for old, new in LEGACY_MODULES.items():
        if module == old or module.startswith(old + "."):
            module = new + module[len(old) :]
    is_layer = module in LAYER_MODULES or module.rpartition(".")[0] in LAYER_PACKAGES
    if not (is_layer or module in CLASS_MODULES):
        return None  # never import a module the file chooses outside these
    try:
        obj = getattr(importlib.import_module(module), attr, None)
    except ImportError:
        return None
    if not isinstance(obj, type):
        return None
    if is_layer:
        return obj if issubclass(obj, torch.nn.Module) else None
    return obj if obj.__module__ == module else None


@functools.cache
def _without_constructor(cls: type) -> type:
    """A stand-in for `cls` that unpickling may create with __new__ but never call.

    torch's weights_only unpickler calls any allowlisted global (REDUCE); a subclass whose
    metaclass refuses calls keeps that to __new__ (NEWOBJ) and __setstate__ (BUILD).
    """

    def refuse(self, *args, **kwargs):
        raise pickle.UnpicklingError(
            f"it calls {cls.__module__}.{cls.__qualname__}(...), a layer's constructor"
        )

    guard = type(f"{type(cls).__name__}Guard", (type(cls),), {"__call__": refuse})
    return guard(cls.__name__, (cls,), {"__module__": cls.__module__})


@contextlib.contextmanager
def _only_these_globals(entries: list) -> Iterator[None]:
    """Allowlist exactly `entries` for weights_only loads, hiding globals registered elsewhere."""
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        torch.serialization.add_safe_globals(entries)
        yield
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)


def check_weights(path: str | Path, trust: bool = False) -> Path:
    """`path` if ultralytics may load it: a model yaml, or a checkpoint that runs no code.

    Raises UnsafeWeightsError (one line: the file, what it references, the fix) otherwise.
    `trust` (detect.trust_weights) returns `path` unchecked.
    """
    path = Path(path)
    if trust or path.suffix.lower() in YAML_SUFFIXES:
        return path
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: weights file not found (nothing is downloaded; give a local .pt path, "
            "or a model yaml such as yolov8n.yaml)."
        )
    try:
        names = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except Exception as e:  # not a torch.save zip archive: unreadable without unpickling
        raise _refuse(path, f"it is not a torch.save zip checkpoint ({type(e).__name__})") from e
    data = _data_globals()
    entries: list = []
    offending: list[str] = []
    for name in names:
        cls = _resolve(name)
        if cls is not None:
            entries.append((_without_constructor(cls), name))
        elif name in data:
            entries.append((data[name], name))
        else:
            offending.append(name)
    if offending:
        more = f" and {len(offending) - 5} more" if len(offending) > 5 else ""
        listed = ", ".join(offending[:5]) + more
        raise _refuse(path, f"it references {listed}, which is not a model layer or plain data")
    if "numpy.dtype" in names:
        entries += _numpy_dtype_types()
    try:
        with _only_these_globals(entries):
            torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a refused global or call, or a file that is not what it claims
        raise _refuse(path, _reason(e)) from e
    return path


def _reason(error: Exception) -> str:
    """What torch's weights_only unpickler refused, without its advice to load unsafely."""
    text = str(error)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation")[0]
        return " ".join(text.split())
    return f"it cannot be read as plain data ({type(error).__name__}: {' '.join(text.split())})"
