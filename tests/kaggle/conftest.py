"""One bundle per test session (no dependency wheels: no network), shared read-only."""

from __future__ import annotations

import pytest

from wildid.kaggle.bundle import Bundle, bundle


@pytest.fixture(scope="session")
def code_bundle(tmp_path_factory: pytest.TempPathFactory) -> Bundle:
    return bundle(tmp_path_factory.mktemp("bundle") / "out", user="alice", packages=())
