"""Detector stage: a YOLO model finds each photo's full body and back fin.

`train` fits ultralytics YOLO on boxes.csv and reports mAP50 per class on held-out
individuals; `crop` runs it over every train and test photo and crops what it finds
(the whole photo stands in where it finds nothing). `crop.source: detector` in a config
makes `wildid run` use both.
"""

from wildid.crop.detector.crop import crop, detect_boxes
from wildid.crop.detector.train import CLASSES, Detector, train

__all__ = ["CLASSES", "Detector", "crop", "detect_boxes", "train"]
