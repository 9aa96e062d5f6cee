"""`copy_file`: local copies inside the kernel, with a fallback where the kernel cannot."""

from __future__ import annotations

import errno
import hashlib
import io
import os
from typing import TYPE_CHECKING, Any

import pytest
from fsspec.callbacks import Callback

from metatree._transfer import Transfer, copy_file

if TYPE_CHECKING:
    from pathlib import Path


class Progress(Callback):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.updates: list[int] = []

    def relative_update(self, inc: int = 1) -> None:
        self.updates.append(inc)


def _copy(tmp_path: Path, data: bytes) -> tuple[bytes, Progress]:
    """Copy a local file to a local file as a local put does (`Upload.copy_to`)."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    progress = Progress()
    with Transfer(progress) as transfer, transfer.source(src) as upload, open(dst, "wb") as b:
        upload.copy_to(b)
    return dst.read_bytes(), progress


def test_copies_in_bounded_chunks_with_progress(tmp_path: Path) -> None:
    data = os.urandom(8 * 2**20 + 12345)
    copied, progress = _copy(tmp_path, data)
    assert copied == data
    assert sum(progress.updates) == len(data)
    assert len(progress.updates) == 2  # 8 MiB chunks
    assert progress.size == len(data)


def test_the_kernel_copies_when_no_hash_is_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = os.copy_file_range

    def spy(*args: Any) -> int:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(os, "copy_file_range", spy)
    assert _copy(tmp_path, b"abc")[0] == b"abc"
    assert calls


def _hashed_copy(tmp_path: Path, data: bytes, mode: str = "wb+") -> str | None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    with (
        Transfer(digest="sha256") as transfer,
        transfer.source(src) as upload,
        open(dst, mode) as out,
    ):
        upload.copy_to(out)
    assert dst.read_bytes() == data
    return transfer.hexdigest()


def test_a_hash_reads_back_what_the_kernel_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The digest is of the bytes stored: each chunk is read back from the destination."""
    reads: list[int] = []
    real = os.preadv

    def spy(fd: int, buffers: list[memoryview], offset: int) -> int:
        reads.append(offset)
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "preadv", spy)
    data = os.urandom(8 * 2**20 + 1)
    assert _hashed_copy(tmp_path, data) == hashlib.sha256(data).hexdigest()
    assert reads == [0, 8 * 2**20]


def test_a_small_file_is_read_back_in_small_rounds_even_when_it_grows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read-back buffer fits the file's size, not 8 MiB (zeroed for every small file of a
    bulk load), and no round copies more than it holds: a file that grew since its size was
    taken is still copied and hashed whole, in more rounds."""
    src = tmp_path / "src"
    head, tail = b"small" * 20, os.urandom(200_000)
    asked: list[int] = []
    real = os.copy_file_range

    def growing(source: int, target: int, count: int, *rest: Any) -> int:
        asked.append(count)
        if len(asked) == 1:  # after copy_file took the size
            with open(src, "ab") as more:
                more.write(tail)
        return real(source, target, count, *rest)

    monkeypatch.setattr(os, "copy_file_range", growing)
    src.write_bytes(head)
    dst = tmp_path / "dst"
    with (
        Transfer(digest="sha256") as transfer,
        transfer.source(src) as upload,
        open(dst, "wb+") as out,
    ):
        upload.copy_to(out)
    assert dst.read_bytes() == head + tail
    assert transfer.result() == (len(head + tail), hashlib.sha256(head + tail).hexdigest())
    assert set(asked) == {64 * 2**10}  # the smallest buffer, never 8 MiB
    assert len(asked) >= 5  # 4 rounds (or more, where the kernel copies less) and the end


@pytest.mark.parametrize("mode", ["wb", "wb+"], ids=["write-only", "readable"])
def test_a_hash_without_the_kernel_reads_through_python(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    """A destination that cannot be read back, or a kernel that cannot copy: readinto."""

    def refuse(*_: Any) -> int:
        raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))

    if mode == "wb+":
        monkeypatch.setattr(os, "copy_file_range", refuse)
    data = os.urandom(8 * 2**20 + 1)
    assert _hashed_copy(tmp_path, data, mode) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("code", [errno.EXDEV, errno.ENOSYS, errno.EINVAL])
def test_falls_back_when_the_kernel_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def refuse(*_: Any) -> int:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "copy_file_range", refuse)
    data = os.urandom(100_000)
    copied, progress = _copy(tmp_path, data)
    assert copied == data
    assert sum(progress.updates) == len(data)
    assert progress.size == len(data)


def test_streams_without_a_descriptor_are_not_for_the_kernel() -> None:
    assert not copy_file(io.BytesIO(b"abc"), io.BytesIO(), print)


def test_a_pipe_is_read_to_its_end(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"from a pipe")
    os.close(write_fd)
    progress = Progress()
    with (
        os.fdopen(read_fd, "rb") as pipe,
        Transfer(progress) as transfer,
        open(tmp_path / "dst", "wb") as out,
    ):
        transfer.sink(out, "dst").copy_from(pipe)  # fstat says size 0: not a size-bound copy
    assert (tmp_path / "dst").read_bytes() == b"from a pipe"
    assert sum(progress.updates) == len(b"from a pipe")


def test_a_real_error_is_raised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*_: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "copy_file_range", full)
    with pytest.raises(OSError, match="No space"):
        _copy(tmp_path, b"x" * 10)


def test_copies_to_the_end_of_the_file_whatever_size_was_seen(tmp_path: Path) -> None:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(b"abc")
    with open(src, "rb") as a, open(dst, "wb") as b:
        with open(src, "ab") as grow:
            grow.write(b"def")  # the file grows after it was opened
        progress = Progress()
        with Transfer(progress) as transfer:
            download = transfer.sink(b, "dst")
            download.copy_from(a)
            download.finish()
    assert dst.read_bytes() == b"abcdef"
    assert (progress.size, sum(progress.updates)) == (6, 6)  # the final size is told


def test_exchange_swaps_two_directories_atomically(tmp_path: Path) -> None:
    """The crash-safe swap of a forced directory replace on local disk (Linux renameat2)."""
    from metatree.backends.local import _exchange

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_bytes(b"from a")
    (b / "y").write_bytes(b"from b")
    if not _exchange(str(a), str(b)):
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available here")
    assert sorted(p.name for p in a.iterdir()) == ["y"]
    assert sorted(p.name for p in b.iterdir()) == ["x"]
