"""Local disk writes of small files go through the bare descriptor: whole, or not at all."""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

import pytest

from metatree._storage import as_storage
from metatree.errors import StorageError

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize("kind", ["bytes", "path", "metadata"])
def test_short_writes_are_completed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    """``write(2)`` may write less than it was given: the rest is written, not lost."""
    storage = as_storage(str(tmp_path / "db"))
    data = os.urandom(100_000)
    source = tmp_path / "src"
    source.write_bytes(data)
    real = os.write
    sizes: list[int] = []

    def short(fd: int, chunk: bytes | memoryview) -> int:
        sizes.append(len(chunk))
        return real(fd, memoryview(chunk)[:4099])

    monkeypatch.setattr(os, "write", short)
    if kind == "metadata":
        storage.write_atomic("m/metadata.json", data)
    else:
        moved = storage.put(data if kind == "bytes" else source, "m/f", digest="sha256")
        assert moved.size == len(data)
    monkeypatch.undo()
    assert storage.read_bytes("m/metadata.json" if kind == "metadata" else "m/f") == data
    assert len(sizes) > 1


@pytest.mark.parametrize("kind", ["put", "metadata"])
def test_a_failed_write_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    storage = as_storage(str(tmp_path / "db"))
    storage.write_atomic("m/metadata.json", b"{}")

    def full(fd: int, chunk: bytes | memoryview) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def write() -> None:
        if kind == "put":
            storage.put(b"data", "m/f")
        else:
            storage.write_atomic("m/metadata.json", b'{"a": 1}')

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(StorageError, match="No space"):
        write()
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path / "db" / "m")) == ["metadata.json"]
    assert storage.read_bytes("m/metadata.json") == b"{}"
