"""Embedding stage: images -> L2-normalised vectors, with optional horizontal-flip TTA.

Per run, fold and crop kind, the stage stores each image's embedding and (with flip TTA)
its mirror's, as separate "views", L2-normalised float16 `.npy` files read back as memory
maps. Keeping the views apart means the flip mode (none, mean, or mirrors as extra
gallery entries) and how crop kinds are combined can change without re-embedding, which
is what an ensemble or an ablation needs. Layout of `working/<run>/embeddings/<fold>/`::

    <kind>/train.npy, test.npy            plain views, rows in table order
    <kind>/train_flip.npy, test_flip.npy  mirrored views (when flip TTA is on)
    <kind>/stage.json                     fingerprint: weights + config + crops
    train.npy, test.npy, index.csv        the combined embeddings the run used

`index.csv` has one line per row of the combined files: split, row, image, view.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from wildid import cache
from wildid.data.dataset import ImageDataset, loader_options
from wildid.data.pixels import pixel_batches
from wildid.data.transforms import MeanStd
from wildid.io import write_csv, write_npy
from wildid.models.backbones import WeightsError

SPLITS = ("train", "test")
Views = dict[str, np.ndarray]  # "train", "test", "train_flip", "test_flip" -> (N, D)


def l2_normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def flip_mode(flip_tta: bool | str) -> str:
    """ "none", "mean" or "gallery", accepting the booleans of older configs."""
    if isinstance(flip_tta, bool):
        return "mean" if flip_tta else "none"
    if flip_tta not in ("none", "mean", "gallery"):
        raise ValueError(f"embed.flip_tta '{flip_tta}': use none, mean or gallery.")
    return flip_tta


@torch.inference_mode()
def embed_views(
    forward: Callable[[torch.Tensor], torch.Tensor] | nn.Module,
    paths: Sequence[str],
    transform: Callable[..., dict],
    batch_size: int = 64,
    flip: bool = True,
    num_workers: int = 1,
    device: str | torch.device = "cpu",
    desc: str = "embed",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(plain, mirrored or None): unit-length float32 (N, D) embeddings in `paths` order."""
    if isinstance(forward, nn.Module):
        forward.eval()
    loader = DataLoader(
        ImageDataset(paths, transform=transform),
        batch_size=batch_size,
        **loader_options(num_workers),
    )
    plain, mirrored = [], []
    for images, _ in tqdm(loader, desc=desc, disable=not progress, unit="batch", leave=False):
        images = images.to(device)
        plain.append(F.normalize(forward(images).float(), dim=1).cpu().numpy())
        if flip:
            mirrored.append(F.normalize(forward(images.flip(-1)).float(), dim=1).cpu().numpy())
    if not plain:
        return np.zeros((0, 0), dtype=np.float32), np.zeros((0, 0), np.float32) if flip else None
    return np.concatenate(plain), np.concatenate(mirrored) if flip else None


@torch.inference_mode()
def embed_pixels(
    forward: Callable[[torch.Tensor], torch.Tensor] | nn.Module,
    pixels: np.ndarray,
    mean_std: MeanStd,
    batch_size: int = 64,
    flip: bool = True,
    device: str | torch.device = "cpu",
    desc: str = "embed",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray | None]:
    """`embed_views` of images already letterboxed (`wildid.data.pixels`): uint8 (N, S, S,
    3) normalised a batch at a time in this process, no decoding, no loader workers."""
    if isinstance(forward, nn.Module):
        forward.eval()
    plain, mirrored = [], []
    for images in pixel_batches(pixels, batch_size, mean_std, device, desc, progress):
        plain.append(F.normalize(forward(images).float(), dim=1).cpu().numpy())
        if flip:
            mirrored.append(F.normalize(forward(images.flip(-1)).float(), dim=1).cpu().numpy())
    if not plain:
        return np.zeros((0, 0), dtype=np.float32), np.zeros((0, 0), np.float32) if flip else None
    return np.concatenate(plain), np.concatenate(mirrored) if flip else None


def embed_paths(
    forward: Callable[[torch.Tensor], torch.Tensor] | nn.Module,
    paths: Sequence[str],
    transform: Callable[..., dict],
    batch_size: int = 64,
    flip_tta: bool | str = True,
    num_workers: int = 1,
    device: str | torch.device = "cpu",
    desc: str = "embed",
    progress: bool = True,
) -> np.ndarray:
    """Embed every image as a query; with flip TTA "mean" it is the mean of image and mirror.

    Returns float32 (N, D), each row unit length, in the order of `paths`.
    """
    mode = flip_mode(flip_tta)
    plain, mirrored = embed_views(
        forward, paths, transform, batch_size, mode == "mean", num_workers, device, desc, progress
    )
    return l2_normalise(plain + mirrored if mirrored is not None else plain)


# --------------------------------------------------------------------------- combining


@dataclass(frozen=True)
class Embeddings:
    """Unit-length embeddings of every train and test image.

    The first len(train table) rows of `train` are the images in table order (their query
    form); with flip mode "gallery" the mirrors follow as extra gallery rows.
    `train_source[i]` is the table row that gallery row i shows (None: row i).
    """

    train: np.ndarray
    test: np.ndarray
    train_source: np.ndarray | None = None

    @property
    def n_train_images(self) -> int:
        return len(self.train) if self.train_source is None else int(self.train_source.max()) + 1

    def gallery_source(self) -> np.ndarray:
        return np.arange(len(self.train)) if self.train_source is None else self.train_source


def _join(parts: list[np.ndarray], combine: str) -> np.ndarray:
    stacked = np.hstack(parts) if combine == "concat" else np.mean(parts, axis=0)
    return l2_normalise(stacked)


def combine_views(
    views: Mapping[str, Views], flip_tta: bool | str = "mean", combine: str = "concat"
) -> Embeddings:
    """One embedding per image from each crop kind's views, for the given flip mode.

    Kinds are concatenated (then re-normalised) or averaged; "mean" averages each image
    with its mirror first; "gallery" appends the train mirrors as extra gallery rows.
    """
    mode = flip_mode(flip_tta)
    kinds = list(views)

    def view(split: str, mirrored: bool) -> list[np.ndarray]:
        name = f"{split}_flip" if mirrored else split
        missing = [k for k in kinds if name not in views[k]]
        if missing:
            raise ValueError(
                f"crop kind(s) {missing} have no '{name}' embeddings; embed with "
                "embed.flip_tta set to mean or gallery to store mirrors."
            )
        return [np.asarray(views[k][name], dtype=np.float32) for k in kinds]

    if mode == "mean":
        tta = {
            s: [l2_normalise(a + b) for a, b in zip(view(s, False), view(s, True), strict=True)]
            for s in SPLITS
        }
        return Embeddings(_join(tta["train"], combine), _join(tta["test"], combine))
    train, test = _join(view("train", False), combine), _join(view("test", False), combine)
    if mode == "none":
        return Embeddings(train, test)
    mirrors = _join(view("train", True), combine)
    source = np.concatenate([np.arange(len(train)), np.arange(len(mirrors))])
    return Embeddings(np.vstack([train, mirrors]), test, source)


# --------------------------------------------------------------------------- storage


def save_array(path: str | Path, array: np.ndarray, dtype: str = "float16") -> Path:
    """Write unit rows as `dtype` .npy atomically (float16 halves disk and page cache)."""
    return write_npy(path, np.asarray(array).astype(dtype))


def load_array(path: str | Path) -> np.ndarray:
    """A stored embedding file as a read-only memory map (nothing read until used)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: embeddings not found; run `wildid run` (or the "
            "embed stage) for this run and fold first."
        )
    return np.load(path, mmap_mode="r")


def load_views(kind_dir: str | Path) -> Views:
    """The views stored for one crop kind, memory-mapped."""
    kind_dir = Path(kind_dir)
    names = [n for s in SPLITS for n in (s, f"{s}_flip")]
    views = {
        n: load_array(kind_dir / f"{n}.npy") for n in names if (kind_dir / f"{n}.npy").is_file()
    }
    if not all(s in views for s in SPLITS):
        raise FileNotFoundError(f"{kind_dir}: train.npy/test.npy missing; embed this run first.")
    return views


def index_table(
    train_images: Sequence[str], test_images: Sequence[str], embeddings: Embeddings
) -> pd.DataFrame:
    """split, row, image, view for every row of the combined train.npy and test.npy."""
    source = embeddings.gallery_source()
    n = len(train_images)
    train = pd.DataFrame(
        {
            "split": "train",
            "row": np.arange(len(source)),
            "image": np.asarray(train_images, dtype=object)[source],
            "view": np.where(np.arange(len(source)) < n, "query", "flip"),
        }
    )
    test = pd.DataFrame(
        {
            "split": "test",
            "row": np.arange(len(test_images)),
            "image": list(test_images),
            "view": "query",
        }
    )
    return pd.concat([train, test], ignore_index=True)


def write_embeddings(
    out_dir: str | Path,
    embeddings: Embeddings,
    train_images: Sequence[str],
    test_images: Sequence[str],
    dtype: str = "float16",
) -> Path:
    out_dir = Path(out_dir)
    save_array(out_dir / "train.npy", embeddings.train, dtype)
    save_array(out_dir / "test.npy", embeddings.test, dtype)
    write_csv(index_table(train_images, test_images, embeddings), out_dir / "index.csv")
    return out_dir


def read_embeddings(out_dir: str | Path) -> tuple[Embeddings, pd.DataFrame]:
    """Combined embeddings (memory-mapped) and their index table."""
    out_dir = Path(out_dir)
    index = pd.read_csv(out_dir / "index.csv", dtype={"image": str})
    train_rows = index[index["split"] == "train"]
    order = {
        image: i for i, image in enumerate(train_rows.loc[train_rows["view"] == "query", "image"])
    }
    source = train_rows["image"].map(order).to_numpy()
    has_extra = (train_rows["view"] != "query").any()
    embeddings = Embeddings(
        load_array(out_dir / "train.npy"),
        load_array(out_dir / "test.npy"),
        source if has_extra else None,
    )
    return embeddings, index


def weights_digest(module: nn.Module) -> str:
    """A hash of a model's weights: what a cached embedding depends on besides config."""
    digest = hashlib.sha1()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def embed_kind(
    out_dir: str | Path,
    key: str,
    paths: Mapping[str, Sequence[str]],
    embedder: Callable[[Sequence[str], str], tuple[np.ndarray, np.ndarray | None]],
    dtype: str = "float16",
) -> Views:
    """Embed one crop kind's train and test images, or reuse them if `key` is unchanged.

    `embedder(paths, desc)` returns (plain, mirrored or None). The stage record is written
    last, so a killed run embeds again rather than trusting half-written files.
    """
    out_dir = Path(out_dir)
    if cache.is_done(out_dir, key):
        try:
            return load_views(out_dir)
        except FileNotFoundError:
            pass
    for split in SPLITS:
        plain, mirrored = embedder(paths[split], f"embed {split}/{out_dir.name}")
        save_array(out_dir / f"{split}.npy", plain, dtype)
        if mirrored is not None:
            save_array(out_dir / f"{split}_flip.npy", mirrored, dtype)
        else:
            (out_dir / f"{split}_flip.npy").unlink(missing_ok=True)
    cache.mark_done(out_dir, key, **{s: len(paths[s]) for s in SPLITS})
    return load_views(out_dir)


def load_class_centres(checkpoint: str | Path):
    """The ArcFace head of a training checkpoint as unit class centres (for blending)."""
    from wildid.infer.retrieval import ClassCentres

    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    centres = {
        k: v for k, v in state.get("loss", {}).items() if k in ("head.weight", "loss.proxies")
    }  # ArcFace centres, ProxyAnchor proxies
    if not centres or "classes" not in state:
        raise WeightsError(
            f"{checkpoint}: its loss has no class centres to blend (ArcFace or "
            "ProxyAnchor); set retrieval.head_weight=0."
        )
    weights = next(iter(centres.values())).float()
    classes = np.asarray([str(c) for c in state["classes"]], dtype=object)
    subcenters = len(weights) // max(1, len(classes))
    return ClassCentres(l2_normalise(weights.numpy()), classes, subcenters)


def concat(members: list[Embeddings], weights: list[float], chunk: int = 8192) -> Embeddings:
    """sqrt(weight)-scaled concatenation, re-normalised (cosine = weighted mean cosine)."""
    sources = {None if m.train_source is None else m.train_source.tobytes() for m in members}
    if len(sources) > 1:
        raise ValueError("ensemble members have different gallery layouts; use one flip mode.")
    scale = [math.sqrt(w / sum(weights)) for w in weights]

    def stack(split: str) -> np.ndarray:
        arrays = [getattr(m, split) for m in members]
        out = np.empty((len(arrays[0]), sum(a.shape[1] for a in arrays)), dtype=np.float32)
        for start in range(0, len(out), chunk):
            parts = [
                s * np.asarray(a[start : start + chunk], dtype=np.float32)
                for s, a in zip(scale, arrays, strict=True)
            ]
            out[start : start + chunk] = l2_normalise(np.hstack(parts))
        return out

    return Embeddings(stack("train"), stack("test"), members[0].train_source)
