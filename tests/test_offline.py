"""Offline guarantee: importing wildid (and through it ultralytics, timm, albumentations)
and running `wildid --help` never touches the network.

Each check runs in a fresh interpreter, since this test session has long imported those
libraries, and with the offline switches removed from the environment, so the switches
that count are the ones `import wildid` sets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import wildid

SRC = str(Path(wildid.__file__).resolve().parents[1])

# Record every attempt to resolve a name or open a connection, and refuse it.
GUARD = """
import json, socket, sys
attempts = []

def refuse(name):
    def call(*args, **kwargs):
        attempts.append(f"{name}{args[:2]!r}")
        raise OSError(f"network disabled by the test: {name}")
    return call

socket.socket.connect = refuse("connect")
socket.socket.connect_ex = refuse("connect_ex")
socket.create_connection = refuse("create_connection")
socket.getaddrinfo = refuse("getaddrinfo")
"""


def _python(code: str, **env: str) -> dict:
    """Run `code` after GUARD in a clean interpreter; it prints one JSON line last."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in wildid.OFFLINE_DEFAULTS
        and k not in ("WILDID_ALLOW_DOWNLOAD", wildid.HUB_DEFAULT_MARK, "TRANSFORMERS_OFFLINE")
    }
    clean.update(PYTHONPATH=os.pathsep.join([SRC, clean.get("PYTHONPATH", "")]), **env)
    done = subprocess.run(
        [sys.executable, "-c", GUARD + textwrap.dedent(code)],
        env=clean,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cli_help_and_library_imports_do_not_touch_the_network() -> None:
    result = _python("""
        import wildid.cli
        from typer.testing import CliRunner
        help_ok = CliRunner().invoke(wildid.cli.app, ["--help"]).exit_code == 0
        import wildid.pipeline, wildid.models.backbones, wildid.data.transforms  # timm, A
        import albumentations, timm, ultralytics
        from ultralytics import YOLO
        quiet = list(attempts)
        try:  # the guard itself works: a direct connection is caught
            socket.create_connection(("example.org", 80), timeout=1)
        except OSError:
            pass
        print(json.dumps({"help_ok": help_ok, "attempts": quiet, "after": attempts}))
    """)
    assert result["help_ok"]
    assert result["attempts"] == [], f"network attempts while importing: {result['attempts']}"
    assert len(result["after"]) == 1  # the deliberate connection, recorded


def test_import_sets_offline_defaults_without_overriding_the_user() -> None:
    result = _python(
        """
        import os
        import wildid
        print(json.dumps({k: os.environ.get(k) for k in wildid.OFFLINE_DEFAULTS}))
    """,
        YOLO_OFFLINE="0",
    )
    assert result["YOLO_OFFLINE"] == "0"  # the user's own setting wins
    assert result["NO_ALBUMENTATIONS_UPDATE"] == "1"
    assert result["HF_HUB_OFFLINE"] == "1"
    assert all(value is not None for value in result.values())


def test_allow_download_lets_the_hub_online() -> None:
    result = _python(
        """
        import os
        import wildid
        print(json.dumps({"hub": os.environ["HF_HUB_OFFLINE"]}))
    """,
        WILDID_ALLOW_DOWNLOAD="1",
    )
    assert result["hub"] == "0"


def test_backbone_without_weights_on_a_closed_network_fails_fast() -> None:
    """The hub is tried only after one probe; refused, the WeightsError comes at once."""
    result = _python("""
        import time
        import wildid
        from wildid.models.backbones import WeightsError, create_backbone
        start = time.monotonic()
        try:
            create_backbone("resnet18", "auto", None)
            error = None
        except WeightsError as err:
            error = str(err)
        print(json.dumps({"error": error, "attempts": attempts,
                          "seconds": time.monotonic() - start}))
    """)
    assert result["error"] and "is not reachable" in result["error"]
    assert result["attempts"] == ["create_connection(('huggingface.co', 443),)"]
    assert result["seconds"] < 10


def test_users_own_hub_setting_is_not_taken_for_the_default() -> None:
    result = _python(
        """
        import os
        import wildid
        print(json.dumps({"user": wildid.hub_offline_by_user(),
                          "mark": os.environ.get(wildid.HUB_DEFAULT_MARK)}))
    """,
        HF_HUB_OFFLINE="1",
    )
    assert result == {"user": True, "mark": None}
    default = _python("""
        import wildid
        print(json.dumps({"user": wildid.hub_offline_by_user()}))
    """)
    assert default == {"user": False}  # wildid's own default leaves the probe to decide
