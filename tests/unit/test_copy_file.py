"""`copy_file`: local copies inside the kernel, with a fallback where the kernel cannot."""

from __future__ import annotations

import errno
import io
import os
from typing import TYPE_CHECKING, Any

import pytest
from fsspec.callbacks import Callback

from metatree._transfer import copy_file

if TYPE_CHECKING:
    from pathlib import Path


class Progress(Callback):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.updates: list[int] = []

    def relative_update(self, inc: int = 1) -> None:
        self.updates.append(inc)


def _copy(tmp_path: Path, data: bytes) -> tuple[bytes, Progress]:
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.write_bytes(data)
    progress = Progress()
    with open(src, "rb") as a, open(dst, "wb") as b:
        copy_file(a, b, progress)
    return dst.read_bytes(), progress


def test_copies_in_bounded_chunks_with_progress(tmp_path: Path) -> None:
    data = os.urandom(8 * 2**20 + 12345)
    copied, progress = _copy(tmp_path, data)
    assert copied == data
    assert sum(progress.updates) == len(data)
    assert len(progress.updates) == 2  # 8 MiB chunks
    assert progress.size == len(data)


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


def test_falls_back_for_streams_without_a_descriptor() -> None:
    out = io.BytesIO()
    copy_file(io.BytesIO(b"abc"), out, Progress())
    assert out.getvalue() == b"abc"


def test_a_pipe_is_read_to_its_end(tmp_path: Path) -> None:
    read_fd, write_fd = os.pipe()
    os.write(write_fd, b"from a pipe")
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe, open(tmp_path / "dst", "wb") as out:
        copy_file(pipe, out, Progress())  # fstat says size 0: a size-bound copy stores nothing
    assert (tmp_path / "dst").read_bytes() == b"from a pipe"


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
        copy_file(a, b, Progress())
    assert dst.read_bytes() == b"abcdef"


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
