from __future__ import annotations

from collections.abc import Iterator

import fsspec
import pytest


@pytest.fixture(autouse=True)
def _fresh_fsspec_instances() -> Iterator[None]:
    """fsspec caches filesystem instances (and their listings) across tests: start clean."""
    fsspec.AbstractFileSystem.clear_instance_cache()
    yield
    fsspec.AbstractFileSystem.clear_instance_cache()
