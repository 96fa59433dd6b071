"""The bundle: the code dataset (wildid's wheel + dependency wheels) and the kernel folders."""

from __future__ import annotations

import json
import zipfile

import pytest
from typer.testing import CliRunner

from wildid.cli import app
from wildid.kaggle import bundle as bundle_module
from wildid.kaggle.bundle import (
    BOX_DATASET,
    INSTALLER,
    BundleError,
    bundle,
    download_wheels,
    resolve_user,
)
from wildid.kaggle.metadata import NOTEBOOKS


def test_layout_and_metadata(code_bundle) -> None:
    assert [k.name for k in code_bundle.kernels] == list(NOTEBOOKS)
    meta = json.loads((code_bundle.dataset / "dataset-metadata.json").read_text())
    assert meta["id"] == "alice/wildid-code" and meta["licenses"] == [{"name": "other"}]
    (wheel,) = code_bundle.wheels
    assert wheel.parent == code_bundle.dataset and wheel.name.startswith("wildid-")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "wildid/kaggle/bundle.py" in names and not any("__pycache__" in n for n in names)
    for folder in code_bundle.kernels:
        kernel = json.loads((folder / "kernel-metadata.json").read_text())
        assert (folder / kernel["code_file"]).is_file()
        assert kernel["dataset_sources"] == ["alice/wildid-code", BOX_DATASET]
    assert (
        "python /kaggle/input/wildid-code/install.py"
        in (code_bundle.dataset / "README.md").read_text()
    )
    assert (code_bundle.dataset / "install.py").read_text() == INSTALLER.read_text()
    assert not list(code_bundle.root.glob("**/.*new-*"))  # no staging folder left behind


def test_user_from_env_then_kaggle_json_then_a_clear_error(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_USERNAME", "bob")
    assert resolve_user(None) == "bob" and resolve_user("carol") == "carol"
    monkeypatch.delenv("KAGGLE_USERNAME")
    with pytest.raises(BundleError, match="--user USER"):
        resolve_user(None)
    token = tmp_path / "kaggle.json"
    token.write_text(json.dumps({"username": "dave", "key": "k"}))
    token.chmod(0o600)
    assert resolve_user(None) == "dave"


def test_weights_datasets_are_attached_and_notebooks_must_exist(tmp_path, code_bundle) -> None:
    with pytest.raises(BundleError, match="notebooks not found"):
        bundle(tmp_path / "b", "alice", (), notebooks=tmp_path)
    notebooks = code_bundle.kernels[0].parents[1]
    source = tmp_path / "nb"
    source.mkdir()
    for folder in code_bundle.kernels:
        (source / f"{folder.name}.ipynb").write_bytes(
            (folder / f"{folder.name}.ipynb").read_bytes()
        )
    made = bundle(tmp_path / "b", "alice", (), source, ["wildid-imagenet-weights", "eve/runs"])
    kernel = json.loads((made.kernels[3] / "kernel-metadata.json").read_text())
    assert kernel["dataset_sources"] == [
        "alice/wildid-code",
        BOX_DATASET,
        "alice/wildid-imagenet-weights",
        "eve/runs",
    ]
    assert notebooks.is_dir()


def test_cli_bundle_needs_a_user(monkeypatch, tmp_path) -> None:
    monkeypatch.delenv("KAGGLE_USERNAME", raising=False)
    monkeypatch.delenv("KAGGLE_KEY", raising=False)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path))
    result = CliRunner().invoke(app, ["kaggle", "bundle", str(tmp_path / "out")])
    assert result.exit_code == 2 and "--user USER" in result.output


def test_a_package_not_installed_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(BundleError, match="not installed here"):
        download_wheels(["no-such-package-wildid"], tmp_path)


@pytest.mark.slow
def test_dependency_wheel_from_pypi_for_kaggles_python(tmp_path) -> None:
    """The one networked test: pip download of a small pure wheel at the installed version."""
    (wheel,) = download_wheels(["ultralytics-thop"], tmp_path)
    version = bundle_module.installed_version("ultralytics-thop")
    assert wheel.name.startswith(f"ultralytics_thop-{version}-") and wheel.suffix == ".whl"
