"""wildid: identify individual animals (whales, dolphins, any marked species) from photos.

Importing the package makes the third-party libraries it uses behave offline: they
otherwise reach for the network at import or start (update checks, analytics, hub
downloads) and hang or fail on a machine without it. Each switch is only a default,
so a user's own environment wins.

The Hugging Face hub is offline by default too (`HF_HUB_OFFLINE=1`, read once when
huggingface_hub is imported): no library (timm, ultralytics) then blocks on the hub on a
closed network. The one place wildid downloads, `models.backbones.create_backbone` with
`pretrained="auto"`, probes the hub when it needs a download and lifts the switch for that
download only (`models.backbones.hub_online`). A user's own `HF_HUB_OFFLINE` (or
`TRANSFORMERS_OFFLINE`) is respected: set to 1, nothing is downloaded. `HUB_DEFAULT_MARK`
records, also for child processes, that the value in the environment is this default.
`WILDID_ALLOW_DOWNLOAD=1` (older switch) makes the default 0.
"""

import os
import tempfile

OFFLINE_DEFAULTS = {
    "YOLO_OFFLINE": "1",  # ultralytics: no settings sync, no update checks, no font downloads
    "NO_ALBUMENTATIONS_UPDATE": "1",  # albumentations: no version check at import
    "GRADIO_ANALYTICS_ENABLED": "False",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_OFFLINE": "0" if os.environ.get("WILDID_ALLOW_DOWNLOAD") else "1",
    "TQDM_MININTERVAL": "1",
    # ultralytics sets OMP_NUM_THREADS=1 at import when unset, for the whole process.
    "OMP_NUM_THREADS": str(os.cpu_count() or 1),
    # ultralytics keeps its settings (and the plotting font) here instead of ~/.config.
    "YOLO_CONFIG_DIR": os.path.join(tempfile.gettempdir(), "wildid-ultralytics"),
}
HUB_DEFAULT_MARK = "WILDID_HF_HUB_OFFLINE_DEFAULT"
if "HF_HUB_OFFLINE" not in os.environ:
    os.environ[HUB_DEFAULT_MARK] = OFFLINE_DEFAULTS["HF_HUB_OFFLINE"]
for _key, _value in OFFLINE_DEFAULTS.items():
    os.environ.setdefault(_key, _value)


def _true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_offline_by_user() -> bool:
    """Whether the user (not wildid's default) switched the Hugging Face hub off."""
    if _true(os.environ.get("TRANSFORMERS_OFFLINE")):
        return True
    value = os.environ.get("HF_HUB_OFFLINE")
    return _true(value) and os.environ.get(HUB_DEFAULT_MARK) != value


__version__ = "0.1.0"
