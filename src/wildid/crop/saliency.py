"""Training-free animal boxes from class activation maps (CAM) of an ImageNet classifier.

Why: field photos of one sighting share their background, and another sighting at the same
waterhole shares it too, so whole-photo features and keypoints match places, not animals.
No labelled boxes exist for most catalogues and no detector weights can be downloaded
offline, but the shipped EfficientNet-Lite0 keeps its ImageNet classifier, whose classes
include many animals (ungulates among them). Its class activation map (Zhou et al. 2016:
the classifier weights of a class applied to the last feature map) lights up where the
network sees the predicted animal; the bounding box of the largest region above a fraction
of the peak is the animal box.

Output: a boxes table (image, kind, x1, y1, x2, y2, score) in the photo's pixels, the
`boxes.csv` format the crop stage reads, so the trained pipeline and the local matcher
crop the same region.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from wildid.models.backbones import create_backbone


@dataclass(frozen=True)
class CamConfig:
    """size: longer side fed to the network; fraction: CAM level (of its peak) that bounds
    the region; margin: fraction of the box added on each side; top: how many predicted
    classes' maps are summed (weighted by probability), so an animal the network hesitates
    between two classes for still lights up; classes: restrict to these ImageNet classes
    (e.g. range(339, 356), the hoofed mammals) or None for all."""

    backbone: str = "efficientnet_lite0"
    size: int = 320
    fraction: float = 0.25
    margin: float = 0.05
    top: int = 5
    classes: tuple[int, ...] | None = None


class CamBoxer:
    """Holds the classifier; `box(image)` returns one animal box per photo."""

    def __init__(self, config: CamConfig = CamConfig()) -> None:
        self.config = config
        model, _ = create_backbone(config.backbone, "auto")
        self.model = model.eval()
        classifier = model.get_classifier()
        if not isinstance(classifier, torch.nn.Linear) or classifier.out_features < 2:
            raise ValueError(
                f"{config.backbone}: no ImageNet classifier in its weights; "
                "CAM boxes need one (efficientnet_lite0 ships with it)."
            )
        self.weight = classifier.weight.detach()
        self.bias = classifier.bias.detach()
        cfg = model.pretrained_cfg or {}
        self.mean = np.array(cfg.get("mean", (0.485, 0.456, 0.406)), dtype=np.float32)
        self.std = np.array(cfg.get("std", (0.229, 0.224, 0.225)), dtype=np.float32)

    @torch.inference_mode()
    def cam(self, image_bgr: np.ndarray) -> np.ndarray:
        """The class activation map at the network's resolution, scaled to peak 1."""
        c = self.config
        rgb = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2RGB)
        scale = c.size / max(rgb.shape[:2])
        rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        # A fixed input shape (photo at the top left of a zero canvas): a new shape per
        # photo makes the CPU backend re-plan its kernels every call, several times slower.
        canvas = np.zeros((c.size, c.size, 3), np.float32)
        h, w = rgb.shape[:2]
        canvas[:h, :w] = (rgb / 255.0 - self.mean) / self.std
        x = torch.from_numpy(canvas)
        features = self.model.forward_features(x.permute(2, 0, 1)[None])[0]  # C, s, s
        fh = max(1, round(features.shape[1] * h / c.size))
        fw = max(1, round(features.shape[2] * w / c.size))
        features = features[:, :fh, :fw]  # the cells that cover the photo
        logits = self.weight @ features.mean((1, 2)) + self.bias
        allowed = torch.arange(len(logits)) if c.classes is None else torch.tensor(c.classes)
        probs = logits[allowed].softmax(0)
        top = probs.topk(min(c.top, len(allowed)))
        weights = top.values / top.values.sum()
        cam = torch.einsum("k,kc,chw->hw", weights, self.weight[allowed[top.indices]], features)
        cam = cam.clamp(min=0).numpy()
        return cam / max(float(cam.max()), 1e-6)

    def box(self, image_bgr: np.ndarray) -> tuple[tuple[int, int, int, int], float]:
        """(x1, y1, x2, y2) of the largest region above `fraction` of the peak, and the
        fraction of the photo it covers (1.0: no animal found, the whole photo)."""
        height, width = image_bgr.shape[:2]
        cam = cv2.resize(self.cam(image_bgr), (width, height), interpolation=cv2.INTER_CUBIC)
        mask = (cam >= self.config.fraction).astype(np.uint8)
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask)
        if count <= 1:
            return (0, 0, width, height), 1.0
        largest = 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        x, y, w, h = (int(v) for v in stats[largest, :4])
        mx, my = w * self.config.margin, h * self.config.margin
        box = (
            max(0, int(x - mx)),
            max(0, int(y - my)),
            min(width, int(x + w + mx)),
            min(height, int(y + h + my)),
        )
        return box, (box[2] - box[0]) * (box[3] - box[1]) / float(width * height)


def cam_boxes(
    images: Sequence[str],
    paths: Sequence[str],
    kind: str = "fullbody",
    config: CamConfig = CamConfig(),
    progress: bool = True,
) -> pd.DataFrame:
    """A boxes table for every photo (image names from `images`, files from `paths`)."""
    boxer = CamBoxer(config)
    rows = []
    for image, path in tqdm(
        list(zip(images, paths, strict=True)), desc="cam boxes", disable=not progress, unit="img"
    ):
        photo = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if photo is None:
            raise OSError(f"{path}: cannot read image (missing or corrupt file).")
        (x1, y1, x2, y2), area = boxer.box(photo)
        rows.append((image, kind, x1, y1, x2, y2, area))
    return pd.DataFrame(rows, columns=["image", "kind", "x1", "y1", "x2", "y2", "area"])
