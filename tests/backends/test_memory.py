from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING

import fsspec
import pytest

from metatree import Storage, as_storage
from metatree.testing import BackendTests
from metatree.testing.conformance import BackendConformance

if TYPE_CHECKING:
    from collections.abc import Iterator


class TestMemory(BackendConformance):
    @pytest.fixture
    def storage(self) -> Iterator[Storage]:
        root = f"memory://{uuid.uuid4().hex}/db"
        yield as_storage(root)
        with contextlib.suppress(FileNotFoundError):
            fsspec.filesystem("memory").rm(root.rsplit("/", 1)[0], recursive=True)


class TestBackend(BackendTests):
    """The primitives on fsspec's memory filesystem (races run as threads in this process)."""

    @pytest.fixture
    def storage(self) -> Iterator[Storage]:
        root = f"memory://{uuid.uuid4().hex}/db"
        yield as_storage(root)
        with contextlib.suppress(FileNotFoundError):
            fsspec.filesystem("memory").rm(root.rsplit("/", 1)[0], recursive=True)
