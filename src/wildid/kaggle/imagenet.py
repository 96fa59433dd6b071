"""A Kaggle dataset of timm ImageNet weights, copied from a local Hugging Face cache.

Offline kernels cannot download pretrained weights; `model.weights_dir` reads them from
`<dir>/<backbone>/model.safetensors` (`models.backbones.local_checkpoint`). This fills that
layout from the hub cache of a machine that has downloaded them once:

    OUT/<backbone>/model.safetensors     (pytorch_model.bin when the hub has only that)
    OUT/README.md  OUT/dataset-metadata.json

The cache is `--cache DIR`, else `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
`~/.cache/huggingface/hub`; timm keeps `<backbone>`'s weights under
`models--timm--<arch>.<tag>/snapshots/<revision>/`, where `timm/<arch>.<tag>` is the
backbone's `hf_hub_id` (deprecated names such as `tf_efficientnet_b6_ns` resolve first).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from wildid.io import write_text
from wildid.kaggle import metadata
from wildid.kaggle.api import KaggleError
from wildid.kaggle.weights import DatasetFolder, copy_file

SLUG = "wildid-imagenet-weights"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class ImagenetWeightsError(KaggleError):
    """A backbone timm does not know, or whose weights are not in the cache."""


@dataclass(frozen=True)
class CachedWeights:
    backbone: str
    hub_id: str  # timm/<arch>.<tag>
    path: Path  # the file in the cache


def hub_cache(cache: str | Path | None = None) -> Path:
    if cache:
        return Path(cache)
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def hub_id(backbone: str) -> str:
    """timm's Hugging Face repository for a backbone name (`timm/<arch>.<tag>`)."""
    from timm.models import get_pretrained_cfg
    from timm.models._registry import get_deprecated_models

    name = get_deprecated_models().get(backbone) or backbone
    try:
        cfg = get_pretrained_cfg(name, allow_unregistered=False)
    except RuntimeError:
        cfg = None
    if cfg is None or not cfg.hf_hub_id:
        raise ImagenetWeightsError(
            f"timm has no pretrained weights on the Hugging Face hub for '{backbone}' "
            "(check the name with `timm.list_models(pretrained=True)`)."
        )
    return cfg.hf_hub_id


def _snapshots(repo: Path) -> list[Path]:
    """The cached revisions, the one refs/main points at first, then the newest."""
    root = repo / "snapshots"
    if not root.is_dir():
        return []
    found = sorted(root.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
    main = repo / "refs" / "main"
    if main.is_file():
        head = root / main.read_text(encoding="utf-8").strip()
        found = [head, *[p for p in found if p != head]] if head.is_dir() else found
    return found


def find_cached(backbone: str, cache: str | Path | None = None) -> CachedWeights:
    repo_id = hub_id(backbone)
    root = hub_cache(cache)
    repo = root / ("models--" + repo_id.replace("/", "--"))
    for snapshot in _snapshots(repo):
        for name in WEIGHT_FILES:
            if (snapshot / name).is_file():
                return CachedWeights(backbone, repo_id, snapshot / name)
    raise ImagenetWeightsError(
        f"'{backbone}' ({repo_id}) is not in the Hugging Face cache {root}; fill it on a "
        f'machine with internet: python -c "import timm; timm.create_model('
        f"'{backbone}', pretrained=True)\" (then copy the cache, or pass --cache DIR)."
    )


def _readme(slug: str, found: Sequence[CachedWeights]) -> str:
    name = slug.split("/")[-1]
    rows = "\n".join(f"- `{w.backbone}/{w.path.name}` from `{w.hub_id}`" for w in found)
    return f"""# wildid ImageNet weights

timm's pretrained weights for offline Kaggle kernels, one folder per backbone:

{rows}

Attach this dataset (or `wildid kaggle bundle OUT --weights-dataset {slug}`) and set

    model.weights_dir=/kaggle/input/{name}

The weights keep the license of their source models on the Hugging Face hub.
"""


def imagenet_weights(
    out: str | Path,
    models: Sequence[str],
    user: str,
    cache: str | Path | None = None,
    slug: str = SLUG,
) -> DatasetFolder:
    """Copy each backbone's cached weights to `out/<backbone>/`; write the metadata."""
    if not models:
        raise ImagenetWeightsError("name at least one backbone with --model NAME.")
    out = Path(out)
    found = [find_cached(name, cache) for name in models]  # every one, before any copy
    written = []
    for weights in found:
        relative = Path(weights.backbone, weights.path.name)
        copy_file(weights.path, out / relative)  # the cache holds symlinks; copy the blob
        written.append(relative)
    ref = f"{user}/{slug}"
    write_text(out / "README.md", _readme(ref, found))
    metadata.write_metadata(
        out,
        metadata.DATASET_FILE,
        metadata.dataset_metadata(user, slug, "wildid ImageNet weights (timm)"),
    )
    metadata.validate([out])
    written += [Path("README.md"), Path(metadata.DATASET_FILE)]
    return DatasetFolder(out, ref, tuple(written))
