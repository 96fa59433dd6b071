"""The packaged model on CPU, and the crop a new photo gets.

A new photo comes without a box. When the package's model was trained on box crops
(`crop.source` boxes or detector, kinds fullbody/backfin), the photo is cropped at the box
of the ImageNet classifier's activation map (`crop.saliency.CamBoxer`, the boxes
`wildid boxes` makes for catalogues without boxes), expanded by `crop.margin` as the crop
stage does; with `crop.source: whole` or kind `whole`, the whole photo is used. The crop
is shrunk to `crop.size` and JPEG-encoded at the crop stage's quality and decoded again,
so it reaches the network exactly as a cached crop does. Kinds are embedded each, with
flip TTA as the config's `embed.flip_tta` (mirrors averaged for "mean"), and combined as
`crop.combine`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Embedded:
    """Unit embeddings (photos, dim) and each photo's crop (RGB uint8, the first kind's)."""

    vectors: np.ndarray
    crops: list[np.ndarray]


class PhotoEmbedder:
    """Loads the package's model once (CPU, eval); `embed(paths)` crops and embeds photos."""

    def __init__(self, package) -> None:  # noqa: ANN001 (gallery.package.Package)
        raise NotImplementedError

    def embed(self, paths: Sequence[str | Path]) -> Embedded:
        raise NotImplementedError
