"""wildid.kaggle.api: commands refuse before doing anything when they cannot succeed; no network."""

from __future__ import annotations

import json
import subprocess

import pytest
from typer.testing import CliRunner

from wildid.cli import app
from wildid.evaluation.submission import write_submission
from wildid.kaggle import api as kaggle

KEY = "s3cr3t-key-value"
REAL_CHECK_NETWORK = kaggle.check_network  # before the fixture replaces it


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """No real CLI, credentials or network reach a test unless it puts them there."""
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    monkeypatch.setattr(kaggle.shutil, "which", lambda name: None)
    monkeypatch.setattr(kaggle, "check_network", lambda *a, **k: None)

    def no_subprocess(*args, **kwargs):
        raise AssertionError("subprocess.run must not be called")

    monkeypatch.setattr(kaggle.subprocess, "run", no_subprocess)


@pytest.fixture
def submission(tmp_path):
    rows = {f"img{i}.jpg": ["a", "b", "c", "d", "new_individual"] for i in range(3)}
    return write_submission(rows, tmp_path / "submission.csv")


def _token(tmp_path, mode=0o600):
    folder = tmp_path / "kaggle-config"
    folder.mkdir(exist_ok=True)
    path = folder / "kaggle.json"
    path.write_text(json.dumps({"username": "me", "key": KEY}))
    path.chmod(mode)
    return path


def _cli_present(monkeypatch):
    monkeypatch.setattr(kaggle.shutil, "which", lambda name: "/usr/bin/kaggle")


def test_no_cli_says_pip_install(submission):
    with pytest.raises(kaggle.KaggleError, match="pip install kaggle"):
        kaggle.submit(submission, "m")


def test_no_credentials(monkeypatch, submission):
    _cli_present(monkeypatch)
    with pytest.raises(kaggle.KaggleError, match="no Kaggle credentials"):
        kaggle.submit(submission, "m")


def test_world_readable_token_is_refused_with_the_chmod(monkeypatch, tmp_path, submission):
    _cli_present(monkeypatch)
    path = _token(tmp_path, 0o644)
    with pytest.raises(kaggle.KaggleError, match=f"chmod 600 {path}") as err:
        kaggle.submit(submission, "m")
    assert KEY not in str(err.value)


def test_malformed_token(monkeypatch, tmp_path, submission):
    _cli_present(monkeypatch)
    _token(tmp_path).write_text("{not json")
    with pytest.raises(kaggle.KaggleError, match="username"):
        kaggle.submit(submission, "m")


def test_no_network(monkeypatch, tmp_path, submission):
    _cli_present(monkeypatch)
    _token(tmp_path)

    def unreachable(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(kaggle.socket, "create_connection", unreachable)
    monkeypatch.setattr(kaggle, "check_network", REAL_CHECK_NETWORK)
    with pytest.raises(kaggle.KaggleError, match="cannot reach www.kaggle.com"):
        kaggle.submit(submission, "m")


def test_invalid_submission_is_refused_first(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("image,predictions\nimg0.jpg,a b\n")
    with pytest.raises(kaggle.KaggleError, match="not submitted.*exactly 5"):
        kaggle.submit(bad, "m")
    with pytest.raises(kaggle.KaggleError, match="file not found"):
        kaggle.submit(tmp_path / "absent.csv", "m")


def test_submit_runs_the_cli_with_env_credentials(monkeypatch, submission):
    _cli_present(monkeypatch)
    monkeypatch.setenv("KAGGLE_USERNAME", "me")
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    calls = []

    def fake_run(args, **kwargs):
        calls.append((args, kwargs))
        return subprocess.CompletedProcess(args, 0, stdout="Successfully submitted", stderr="")

    monkeypatch.setattr(kaggle.subprocess, "run", fake_run)
    assert kaggle.submit(submission, "first try") == "Successfully submitted"
    ((args, kwargs),) = calls
    assert args == [
        "/usr/bin/kaggle",
        "competitions",
        "submit",
        "-c",
        kaggle.COMPETITION,
        "-f",
        str(submission),
        "-m",
        "first try",
    ]
    assert kwargs["env"]["KAGGLE_KEY"] == KEY and KEY not in " ".join(args)


def test_cli_failure_message_hides_the_key(monkeypatch, tmp_path, submission):
    _cli_present(monkeypatch)
    _token(tmp_path)
    monkeypatch.setattr(
        kaggle.subprocess,
        "run",
        lambda args, **kw: subprocess.CompletedProcess(
            args, 1, stdout="", stderr=f"401 Unauthorized for key {KEY}"
        ),
    )
    with pytest.raises(kaggle.KaggleError, match="401") as err:
        kaggle.submit(submission, "m")
    assert KEY not in str(err.value)
    assert KEY not in repr(kaggle.load_credentials())


def test_push_kernel_and_dataset_need_metadata_then_preflight(monkeypatch, tmp_path):
    folder = tmp_path / "nb"
    folder.mkdir()
    with pytest.raises(kaggle.KaggleError, match="kernel-metadata.json"):
        kaggle.push_kernel(folder)
    (folder / "kernel-metadata.json").write_text("{}")
    with pytest.raises(kaggle.KaggleError, match="pip install kaggle"):
        kaggle.push_kernel(folder)
    with pytest.raises(kaggle.KaggleError, match="dataset-metadata.json"):
        kaggle.upload_dataset(folder)
    (folder / "dataset-metadata.json").write_text("{}")
    _cli_present(monkeypatch)
    _token(tmp_path)
    seen = []
    monkeypatch.setattr(
        kaggle.subprocess,
        "run",
        lambda args, **kw: (
            seen.append(args) or subprocess.CompletedProcess(args, 0, stdout="ok", stderr="")
        ),
    )
    assert kaggle.upload_dataset(folder, "v2") == "ok"
    assert kaggle.push_kernel(folder) == "ok"
    assert seen[0][1:3] == ["datasets", "version"] and seen[1][1:3] == ["kernels", "push"]


def test_wildid_submit_command_exits_2_with_the_message(submission):
    result = CliRunner().invoke(app, ["submit", str(submission), "-m", "x"])
    assert result.exit_code == 2
    assert "pip install kaggle" in result.output


def test_package_re_exports_the_api() -> None:
    import wildid.kaggle as package

    for name in set(package.__all__) - {"check_network"}:  # the fixture replaced that one
        assert getattr(package, name) is getattr(kaggle, name)
    assert package.check_network is REAL_CHECK_NETWORK
