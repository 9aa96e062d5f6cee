"""The generic `Backend` (any fsspec filesystem without an adapter), driven on memory://.

The conformance suite runs the adapted backends; these check the generic code paths that
GCS, Azure and other filesystems take.
"""

from __future__ import annotations

import io
import uuid
from typing import IO, TYPE_CHECKING, cast

import fsspec
import pytest

from metatree._transfer import Transfer
from metatree.backends import Backend, Changed

if TYPE_CHECKING:
    from collections.abc import Iterator

    from metatree._types import Source


def _put(backend: Backend, source: Source, path: str) -> None:
    """Put as `Storage.put` does: the bytes move through a `Transfer`."""
    with Transfer() as transfer, transfer.source(source) as upload:
        backend.put(upload, path)


class _Failing(io.RawIOBase):
    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        raise OSError(5, "Input/output error (injected)")


@pytest.fixture
def backend() -> Backend:
    return Backend(fsspec.filesystem("memory"))


@pytest.fixture
def root(backend: Backend) -> Iterator[str]:
    path = f"/{uuid.uuid4().hex}"
    yield path
    backend.fs.rm(path, recursive=True)


def test_failed_put_keeps_the_old_file_and_no_temp(backend: Backend, root: str) -> None:
    backend.write_atomic(f"{root}/f", b"old")
    with pytest.raises(OSError, match="reading the source failed"):
        _put(backend, cast("IO[bytes]", _Failing()), f"{root}/f")
    assert backend.read(f"{root}/f") == b"old"
    assert backend.fs.ls(root, detail=False) == [f"{root}/f"]


def test_put_replaces(backend: Backend, root: str) -> None:
    backend.write_atomic(f"{root}/f", b"old")
    _put(backend, b"new", f"{root}/f")
    assert backend.read(f"{root}/f") == b"new"
    assert backend.fs.ls(root, detail=False) == [f"{root}/f"]


def test_read_of_a_replaced_file_raises(backend: Backend, root: str) -> None:
    backend.write_atomic(f"{root}/f", bytes(64))
    chunks = backend.iter_chunks(f"{root}/f", 4)
    next(chunks)
    _put(backend, b"\xff" * 64, f"{root}/f")
    with pytest.raises(Changed):
        b"".join(chunks)


def test_unchanged_read_is_whole(backend: Backend, root: str) -> None:
    backend.write_atomic(f"{root}/f", bytes(range(64)))
    assert b"".join(backend.iter_chunks(f"{root}/f", 4)) == bytes(range(64))
