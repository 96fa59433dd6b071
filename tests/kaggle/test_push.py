"""`wildid kaggle push` against a fake `kaggle` executable on PATH: the calls, their order."""

from __future__ import annotations

import json
import os
import shutil
import stat
import sys

import pytest
from typer.testing import CliRunner

from wildid.cli import app
from wildid.kaggle import api
from wildid.kaggle.push import PushError, push

KEY = "s3cr3t-key-value"

FAKE = """\
#!{python}
import json, os, sys
state = os.environ["FAKE_KAGGLE_STATE"]
args = sys.argv[1:]
with open(os.path.join(state, "calls.jsonl"), "a") as log:
    log.write(json.dumps({{"args": args, "key": os.environ.get("KAGGLE_KEY")}}) + "\\n")
kind, verb = args[0], args[1]
if (kind, verb) == ("datasets", "status"):
    known = os.path.exists(os.path.join(state, "known-" + args[2].replace("/", "_")))
    print("ready" if known else "404 Not Found")
    sys.exit(0 if known else 1)
if (kind, verb) == ("datasets", "create"):
    ref = json.load(open(os.path.join(args[3], "dataset-metadata.json")))["id"]
    open(os.path.join(state, "known-" + ref.replace("/", "_")), "w").close()
if (kind, verb) == ("kernels", "status"):
    status = os.environ.get("FAKE_KERNEL_STATUS", "KernelWorkerStatus.COMPLETE")
    print(f'{{args[2]}} has status "{{status}}"')
    sys.exit(0)
print("ok", kind, verb)
"""


@pytest.fixture
def fake_kaggle(monkeypatch, tmp_path):
    """A `kaggle` on PATH that logs its calls; env credentials; the network check off."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    script = bin_dir / "kaggle"
    script.write_text(FAKE.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_KAGGLE_STATE", str(state))
    monkeypatch.setenv("KAGGLE_USERNAME", "alice")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    monkeypatch.setattr(api, "check_network", lambda *a, **k: None)

    def calls():
        path = state / "calls.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        return [json.loads(line) for line in lines]

    return calls


@pytest.fixture
def bundle_copy(code_bundle, tmp_path):
    out = tmp_path / "bundle"
    shutil.copytree(code_bundle.root, out)
    return out


def _verbs(calls):
    return [" ".join(c["args"][:3]) for c in calls]


def test_first_push_creates_then_pushes_kernels_in_order(fake_kaggle, bundle_copy) -> None:
    log = push(bundle_copy, "v1", poll_s=0)
    calls = fake_kaggle()
    assert _verbs(calls) == [
        "datasets status alice/wildid-code",
        "datasets create -p",
        "datasets status alice/wildid-code",  # ready?
        "kernels push -p",  # 01_data
        "kernels push -p",  # 02_crop
        "kernels status alice/wildid-02-crop",  # 03_train reads it: wait
        "kernels push -p",
        "kernels status alice/wildid-03-train",
        "kernels push -p",  # 04_embed
        "kernels status alice/wildid-04-embed",
        "kernels push -p",  # 05_retrieve
        "kernels push -p",  # 06_submit
    ]
    pushed = [c["args"][3] for c in calls if c["args"][:2] == ["kernels", "push"]]
    assert [os.path.basename(p) for p in pushed] == [
        "01_data",
        "02_crop",
        "03_train",
        "04_embed",
        "05_retrieve",
        "06_submit",
    ]
    assert all(c["key"] == KEY and KEY not in " ".join(c["args"]) for c in calls)
    assert log[0].startswith("dataset alice/wildid-code created")
    push(bundle_copy, "v2", wait=False)  # the dataset now exists: a new version
    again = _verbs(fake_kaggle()[len(calls) :])
    assert again[:2] == ["datasets status alice/wildid-code", "datasets version -p"]
    assert again[2:] == ["kernels push -p"] * 6


def test_failed_kernel_stops_the_push(fake_kaggle, bundle_copy, monkeypatch) -> None:
    monkeypatch.setenv("FAKE_KERNEL_STATUS", "KernelWorkerStatus.ERROR")
    with pytest.raises(PushError, match="wildid-02-crop.*ERROR"):
        push(bundle_copy, poll_s=0)
    assert _verbs(fake_kaggle()).count("kernels push -p") == 2


def test_invalid_metadata_uploads_nothing(fake_kaggle, bundle_copy) -> None:
    meta = bundle_copy / "kernels" / "04_embed" / "kernel-metadata.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "language": "julia"}))
    result = CliRunner().invoke(app, ["kaggle", "push", str(bundle_copy)])
    assert result.exit_code == 2 and "valid language" in result.output
    assert fake_kaggle() == []


def test_push_is_behind_the_preflight(fake_kaggle, bundle_copy, monkeypatch) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME")
    monkeypatch.delenv("KAGGLE_KEY")
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(bundle_copy))
    result = CliRunner().invoke(app, ["kaggle", "push", str(bundle_copy)])
    assert result.exit_code == 2 and "no Kaggle credentials" in result.output
    assert fake_kaggle() == []


def test_empty_folder_says_how_to_bundle(tmp_path) -> None:
    with pytest.raises(PushError, match="wildid kaggle bundle"):
        push(tmp_path)
