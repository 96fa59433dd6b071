"""wildid: identify individual animals (whales, dolphins, any marked species) from photos.

Importing the package makes the third-party libraries it uses behave offline: they
otherwise reach for the network at import or start (update checks, analytics, hub
downloads) and hang or fail on a machine without it. Each switch is only a default,
so a user's own environment wins.
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
for _key, _value in OFFLINE_DEFAULTS.items():
    os.environ.setdefault(_key, _value)

__version__ = "0.1.0"
