from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import fsspec
import pytest

from metatree import Storage, as_storage
from metatree.testing.conformance import BackendConformance


class TestMemory(BackendConformance):
    @pytest.fixture
    def storage(self) -> Iterator[Storage]:
        root = f"memory://{uuid.uuid4().hex}/db"
        yield as_storage(root)
        with contextlib.suppress(FileNotFoundError):
            fsspec.filesystem("memory").rm(root.rsplit("/", 1)[0], recursive=True)
