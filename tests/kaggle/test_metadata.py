"""Kernel and dataset metadata: the reads table, and the official kaggle package's checks."""

from __future__ import annotations

import json
import shutil

import pytest

from wildid.kaggle import metadata
from wildid.kaggle.metadata import MetadataError


def test_kernel_inputs_and_gpus_come_from_the_tables() -> None:
    train = metadata.kernel_metadata("alice", "03_train", "03_train.ipynb", ["alice/wildid-code"])
    assert train["id"] == "alice/wildid-03-train" and train["title"] == "wildid 03 train"
    assert train["kernel_sources"] == ["alice/wildid-02-crop"]
    assert train["enable_gpu"] and not train["enable_internet"] and train["is_private"]
    assert train["competition_sources"] == ["happy-whale-and-dolphin"]
    submit = metadata.kernel_metadata("alice", "06_submit", "06_submit.ipynb")
    assert submit["kernel_sources"] == ["alice/wildid-03-train", "alice/wildid-04-embed"]
    assert not submit["enable_gpu"]
    assert metadata.kernel_metadata("alice", "01_data", "x.ipynb")["kernel_sources"] == []


def test_generated_metadata_passes_the_official_checks(code_bundle) -> None:
    checks = metadata.validate([code_bundle.dataset, *code_bundle.kernels])
    assert {
        "KaggleApi.kernels_push",
        "KaggleApi.dataset_create_new",
        "KaggleApi.validate_dataset_string",
        "KaggleApi._validate_slug_syntax",
        "slugify(title) == slug",
    } <= set(checks)


def _edit(folder, filename, **changes):
    path = folder / filename
    data = {**json.loads(path.read_text()), **changes}
    path.write_text(json.dumps(data))


BAD_KERNELS = [
    ({"title": "abc"}, "Title must be at least five characters"),
    ({"id": "alice/abc"}, "Kernel slug must be at least five characters"),
    ({"language": "julia"}, "valid language"),
    ({"kernel_type": "app"}, "valid kernel type"),
    ({"code_file": "absent.ipynb"}, "Source file not found"),
    ({"dataset_sources": ["no-owner"]}, "Dataset must be specified"),
    ({"kernel_sources": ["alice/a/b/c"]}, "Kernel must be specified"),
    ({"title": "wildid three train"}, "resolves to the slug"),
    ({"id": "alice/Wildid--03"}, "Invalid slug"),
]
BAD_DATASETS = [
    ({"title": "short"}, "title must be between 6 and 50"),
    ({"id": "alice/abc"}, "slug must be between 6 and 50"),
    ({"licenses": [{"name": "other"}, {"name": "CC0-1.0"}]}, "exactly one license"),
    ({"id": "wildid-code"}, "Dataset must be specified"),
    ({"subtitle": "too short"}, "Subtitle length"),
]


def test_official_checks_reject_each_bad_file(code_bundle, tmp_path) -> None:
    """Each broken copy is refused for its own reason (one child runs all the checks)."""
    expected = {}
    for i, (changes, message) in enumerate(BAD_KERNELS):
        folder = tmp_path / f"kernel{i}"
        shutil.copytree(code_bundle.kernels[2], folder)
        _edit(folder, metadata.KERNEL_FILE, **changes)
        expected[str(folder.resolve())] = message
    for i, (changes, message) in enumerate(BAD_DATASETS):
        folder = tmp_path / f"dataset{i}"
        metadata.write_metadata(
            folder,
            metadata.DATASET_FILE,
            {**metadata.dataset_metadata("alice", "wildid-x", "wildid x y"), **changes},
        )
        expected[str(folder.resolve())] = message
    problems = metadata.official_checks(expected)["problems"]
    for folder, message in expected.items():
        assert any(message in p for p in problems.get(folder, [])), (folder, problems.get(folder))
    with pytest.raises(MetadataError, match="Kaggle would refuse"):
        metadata.validate([tmp_path / "kernel0", code_bundle.kernels[0]])


def test_checks_read_no_real_credentials(tmp_path, monkeypatch) -> None:
    """The child sees a blank home: a real kaggle.json (even a broken one) is not read."""
    home = tmp_path / "home"
    (home / ".kaggle").mkdir(parents=True)
    (home / ".kaggle" / "kaggle.json").write_text("{broken")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(home / ".kaggle"))
    folder = tmp_path / "d"
    metadata.write_metadata(
        folder, metadata.DATASET_FILE, metadata.dataset_metadata("alice", "wildid-x", "wildid x y")
    )
    assert metadata.validate([folder])


def test_folder_without_metadata_and_a_key_are_refused(tmp_path) -> None:
    with pytest.raises(MetadataError, match="neither"):
        metadata.validate([tmp_path])
    with pytest.raises(MetadataError, match="key"):
        metadata.write_metadata(tmp_path, metadata.DATASET_FILE, {"key": "s3cr3t"})
