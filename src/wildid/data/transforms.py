"""Image transforms (albumentations): letterbox to a square, never stretch.

Stretching a crop to a square changes a fin's shape, which is the very thing that tells
individuals apart, so every image is resized by its longer side and padded.
"""

from __future__ import annotations

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

MeanStd = tuple[tuple[float, ...], tuple[float, ...]]


def letterbox(size: int) -> list[A.BasicTransform]:
    return [
        A.LongestMaxSize(max_size=size, interpolation=cv2.INTER_AREA),
        A.PadIfNeeded(size, size, border_mode=cv2.BORDER_CONSTANT, fill=0),
    ]


def train_transform(size: int, mean_std: MeanStd) -> A.Compose:
    """Photometric and small geometric jitter: what changes between two photos of one animal."""
    mean, std = mean_std
    return A.Compose(
        [
            *letterbox(size),
            A.Affine(
                scale=(0.85, 1.15),
                translate_percent=(-0.06, 0.06),
                rotate=(-10, 10),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                p=0.8,
            ),
            A.RandomBrightnessContrast(0.25, 0.25, p=0.7),
            A.HueSaturationValue(8, 20, 10, p=0.4),
            A.OneOf([A.GaussianBlur(blur_limit=(3, 5)), A.MotionBlur(blur_limit=(3, 5))], p=0.2),
            A.GaussNoise(std_range=(0.02, 0.06), p=0.2),
            A.CoarseDropout(
                num_holes_range=(1, 2),
                hole_height_range=(0.1, 0.2),
                hole_width_range=(0.1, 0.2),
                fill=0,
                p=0.2,
            ),
            A.Normalize(mean=mean, std=std),
            ToTensorV2(),
        ]
    )


def eval_transform(size: int, mean_std: MeanStd) -> A.Compose:
    mean, std = mean_std
    return A.Compose([*letterbox(size), A.Normalize(mean=mean, std=std), ToTensorV2()])
