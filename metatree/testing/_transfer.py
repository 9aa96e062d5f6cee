"""Byte accounting of transfers: exact progress and digests of every put and get (issue 10).

Part of the conformance suite (mixed into `BackendConformance`): every backend moves bytes
only through `metatree._transfer`, so the progress told and the digest computed are the same
on all of them, for every kind of source, directories included.
"""

from __future__ import annotations

import hashlib
import io
from typing import IO, TYPE_CHECKING, Any, cast

import pytest
from fsspec.callbacks import Callback

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from metatree._storage import Storage
    from metatree._tree import Metatree
    from metatree._types import Source

__all__ = ["TransferAccountingTests"]

_MIB = 2**20
_SIZES = [0, 10, 9 * _MIB]
"""Empty, one chunk, and over one 8 MiB chunk (S3 uploads in parts, local copies twice)."""


class _Recorder(Callback):  # type: ignore[misc]  # fsspec is untyped
    """A progress callback that keeps every size told and every update."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[tuple[int, int]] = []
        """Each ``set_size`` as (size, bytes updated before it)."""
        self.updates: list[int] = []

    def set_size(self, size: int) -> None:
        self.sizes.append((size, sum(self.updates)))
        super().set_size(size)

    def relative_update(self, inc: int = 1) -> None:
        self.updates.append(inc)
        super().relative_update(inc)

    def check(self, total: int, *, told_first: bool) -> None:
        """Assert the fsspec protocol was followed exactly for `total` bytes."""
        assert sum(self.updates) == total
        assert (self.size, self.value) == (total, total)
        assert all(inc > 0 for inc in self.updates)
        if told_first:
            assert self.sizes[0][1] == 0  # the size was known before the first byte


class _Unsized(io.RawIOBase):
    """A stream of unknown size that hands out short reads (as a socket or pipe would)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        n = len(self.data) if n < 0 else min(n, 3 * _MIB + 1)
        chunk, self.data = self.data[:n], self.data[n:]
        return chunk


def _payload(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + b"\x07" * (size % 256)


_SOURCES: dict[str, Callable[[bytes, Path], tuple[Source, bool]]] = {
    "bytes": lambda data, _: (data, True),
    "path": lambda data, tmp: (_write(tmp / "src.bin", data), True),
    "file-object": lambda data, _: (io.BytesIO(data), False),
    "unsized-stream": lambda data, _: (cast("IO[bytes]", _Unsized(data)), False),
}
"""What `put` accepts, each with whether its size is known before the first byte."""


def _write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


class TransferAccountingTests:
    """Progress is exact and digests are right for every put and get, on every backend."""

    @pytest.mark.parametrize("size", _SIZES, ids=["empty", "small", "over-a-chunk"])
    @pytest.mark.parametrize("kind", list(_SOURCES))
    def test_put_progress_is_exact(
        self, storage: Storage, tmp_path: Path, kind: str, size: int
    ) -> None:
        data = _payload(size)
        source, sized = _SOURCES[kind](data, tmp_path)
        progress = _Recorder()
        digest = storage.put(source, "f", progress, digest="sha256").digest
        assert storage.read_bytes("f") == data
        progress.check(size, told_first=sized)
        assert digest == hashlib.sha256(data).hexdigest()

    @pytest.mark.parametrize("size", _SIZES, ids=["empty", "small", "over-a-chunk"])
    def test_get_progress_and_digest_are_exact(
        self, storage: Storage, tmp_path: Path, size: int
    ) -> None:
        data = _payload(size)
        storage.put(data, "f")
        out = tmp_path / "downloads"
        out.mkdir()
        plain, hashed = _Recorder(), _Recorder()
        assert storage.get("f", str(out / "plain"), plain) == (size, None)
        digest = storage.get("f", str(out / "hashed"), hashed, digest="sha256").digest
        assert (out / "plain").read_bytes() == (out / "hashed").read_bytes() == data
        plain.check(size, told_first=False)
        hashed.check(size, told_first=False)
        assert digest == hashlib.sha256(data).hexdigest()

    def test_put_without_digest_returns_none(self, storage: Storage, tmp_path: Path) -> None:
        """The fast path (a kernel copy on local disk) still reports progress, no digest."""
        progress = _Recorder()
        assert storage.put(_write(tmp_path / "src.bin", b"abc"), "f", progress) == (3, None)
        progress.check(3, told_first=True)

    def test_directory_put_and_get_report_one_exact_total(
        self, tree: Metatree, tmp_path: Path
    ) -> None:
        files = {"a": _payload(9 * _MIB), "b/c": b"", "b/d": b"tiny"}
        src = tmp_path / "ckpt"
        for rel, data in files.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_bytes(data)
        total = sum(len(data) for data in files.values())
        up = _Recorder()
        tree.put("m/v1", src, recursive=True, callback=up)
        up.check(total, told_first=True)
        down = _Recorder()
        out = tmp_path / "downloads"
        out.mkdir()
        tree.get("m/v1/ckpt", out / "dl", recursive=True, callback=down)
        down.check(total, told_first=False)
        assert (out / "dl" / "a").read_bytes() == files["a"]

    def test_get_to_a_file_reports_exactly(self, tree: Metatree, tmp_path: Path) -> None:
        """The public API's get (through the database) reports what `Storage.get` does."""
        tree.put("m/v1", _payload(100_000), name="f")
        progress = _Recorder()
        out = tmp_path / "downloads"
        out.mkdir()
        tree.get("m/v1/f", out / "f", callback=progress)
        progress.check(100_000, told_first=False)

    def test_raising_callback_during_a_hashed_put_leaves_as_itself(self, storage: Storage) -> None:
        class Stop(Exception):
            pass

        class Raising(Callback):  # type: ignore[misc]
            def relative_update(self, inc: int = 1) -> Any:
                raise Stop

        with pytest.raises(Stop):
            storage.put(_payload(9 * _MIB), "f", Raising(), digest="sha256")
        assert storage.kind("f") is None
