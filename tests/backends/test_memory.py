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


class _Storage:
    """Where every test of this module stores: fsspec's memory filesystem."""

    @pytest.fixture
    def storage(self) -> Iterator[Storage]:
        root = f"memory://{uuid.uuid4().hex}/db"
        yield as_storage(root)
        with contextlib.suppress(FileNotFoundError):
            fsspec.filesystem("memory").rm(root.rsplit("/", 1)[0], recursive=True)


class TestMemory(_Storage, BackendConformance):
    """Every behaviour of the database on fsspec's memory filesystem."""


class TestBackend(_Storage, BackendTests):
    """The primitives on fsspec's memory filesystem (races run as threads in this process)."""
