"""Helpers shared by the conformance suite and the project's tests."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from metatree.errors import NotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from metatree._storage import Storage

__all__ = ["snapshot", "unchanged"]


def snapshot(storage: Storage) -> dict[str, bytes]:
    """Every file below the root with its bytes: compare two to prove nothing was written."""
    files: dict[str, bytes] = {}
    for rel in sorted(storage.walk_files("")):
        with contextlib.suppress(NotFoundError):
            files[rel] = storage.read_bytes(rel)
    return files


@contextlib.contextmanager
def unchanged(storage: Storage) -> Iterator[None]:
    """Assert that the block leaves the storage byte-for-byte as it found it."""
    before = snapshot(storage)
    yield
    after = snapshot(storage)
    assert after == before, f"storage changed: {sorted(set(after) ^ set(before)) or 'contents'}"
