"""The packaged model on CPU, and the crop a new photo gets.

A new photo comes without a box. When the package's model was trained on box crops
(`crop.source` boxes or detector, kinds fullbody/backfin/foreground), the photo is
cropped at the box of the ImageNet classifier's activation map (`crop.saliency.CamBoxer`,
the boxes `wildid boxes` makes for catalogues without boxes), expanded by `crop.margin`
as the crop stage does; with `crop.source: whole` or kind `whole`, the whole photo is
used; kind `foreground` blacks out what lies off the animal's GrabCut mask first. The
crop is shrunk to `crop.size` and JPEG-encoded at the crop stage's quality and decoded
again, so it reaches the network exactly as a cached crop does. Kinds are embedded each,
with flip TTA as the config's `embed.flip_tta` (mirrors averaged for "mean"), and
combined as `crop.combine`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from wildid.errors import WildidError
from wildid.gallery.package import Package


class PhotoError(WildidError, ValueError):
    """A photo cannot be read or is not an image."""


@dataclass(frozen=True)
class Embedded:
    """Unit embeddings (photos, dim) and each photo's crop (RGB uint8, the first kind's)."""

    vectors: np.ndarray
    crops: list[np.ndarray]


def read_photo(path: str | Path) -> np.ndarray:
    """A photo as BGR uint8, or PhotoError."""
    data = np.fromfile(str(path), dtype=np.uint8) if Path(path).is_file() else None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data is not None and data.size else None
    if image is None:
        raise PhotoError(f"{path}: cannot read this photo (missing, or not an image).")
    return image


class PhotoEmbedder:
    """Loads the package's model once (CPU, eval); `embed(paths)` crops and embeds photos."""

    def __init__(self, package: Package) -> None:
        import torch
        from safetensors.torch import load_file

        from wildid.data.transforms import eval_transform
        from wildid.models.net import EmbeddingNet

        self.package = package
        meta = package.meta
        config = package.config
        self.crop = config.crop
        self.mode = meta.get("crop_mode", "whole")
        self.flip = config.embed.flip_tta == "mean"
        net = EmbeddingNet(config.model, pretrained="none")
        net.load_state_dict(load_file(str(package.weights), device="cpu"))
        self.net = net.eval()
        mean, std = meta["mean_std"]
        self.transform = eval_transform(int(meta["image_size"]), (tuple(mean), tuple(std)))
        self._boxer = None
        self._torch = torch

    def box(self, image: np.ndarray) -> tuple[int, int, int, int]:
        """The region of a new photo to crop: its CAM box (expanded), or the whole photo."""
        height, width = image.shape[:2]
        if self.mode == "whole":
            return (0, 0, width, height)
        if self._boxer is None:
            from wildid.crop.saliency import CamBoxer

            self._boxer = CamBoxer()
        from wildid.crop.boxes import expand_box

        box, _ = self._boxer.box(image)
        return expand_box(box, self.crop.margin, width, height)

    def crops(self, image: np.ndarray) -> list[np.ndarray]:
        """One RGB crop per crop kind, as the crop stage would cache it (JPEG q95)."""
        from wildid.crop.boxes import crop_image
        from wildid.crop.foreground import without_background

        cam = self.box(image) if self.mode == "cam" else None
        whole = (0, 0, image.shape[1], image.shape[0])
        out = []
        for kind in self.crop.kinds:
            region = whole if kind == "whole" or cam is None else cam
            source = without_background(image, region) if kind == "foreground" else image
            crop = crop_image(source, region, self.crop.size)
            ok, encoded = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 95])
            decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if ok else crop
            out.append(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))
        return out

    def embed(self, paths: Sequence[str | Path]) -> Embedded:
        torch = self._torch
        from wildid.infer.embed import l2_normalise

        per_photo = [self.crops(read_photo(p)) for p in paths]
        if not per_photo:
            return Embedded(np.zeros((0, self.package.meta["embedding_dim"]), np.float32), [])
        kinds = []
        with torch.inference_mode():
            for k in range(len(self.crop.kinds)):
                batch = torch.stack([self.transform(image=c[k])["image"] for c in per_photo])
                plain = torch.nn.functional.normalize(self.net(batch).float(), dim=1)
                if self.flip:
                    mirror = torch.nn.functional.normalize(self.net(batch.flip(-1)).float(), dim=1)
                    plain = torch.nn.functional.normalize(plain + mirror, dim=1)
                kinds.append(plain.numpy())
        if len(kinds) == 1:
            vectors = kinds[0]
        elif self.crop.combine == "concat":
            vectors = l2_normalise(np.hstack(kinds))
        else:
            vectors = l2_normalise(np.mean(kinds, axis=0))
        return Embedded(l2_normalise(vectors), [c[0] for c in per_photo])
