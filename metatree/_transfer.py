"""Transfers: how the bytes of a put leave their source and reach the store.

`open_source` opens what `put` accepts with errors that name the source; `copy_stream` and
`copy_file` move the bytes in bounded chunks, reporting progress through fsspec callbacks.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import stat
from typing import IO, TYPE_CHECKING, cast

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fsspec.callbacks import Callback

    from metatree._types import Source
    from metatree.errors import StorageError

__all__ = ["COPY_CHUNK", "copy_file", "copy_stream", "open_source"]

COPY_CHUNK = 8 * 2**20
"""Bytes per read of a copy: large enough for disk and network, small enough for memory."""


class _SourceFailed(Exception):
    """Carries a failure to read the user's source past the transfer code.

    Deliberately not an `OSError`: urllib3 would take one raised while sending a request body
    for a connection failure (and retry, or report the destination).
    """

    def __init__(self, error: StorageError) -> None:
        super().__init__(str(error))
        self.error = error


class _SourceReader:
    """A read-only view of the user's stream whose read errors name the source."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self.stream = stream
        self.name = name

    def read(self, n: int = -1) -> bytes:
        try:
            return self.stream.read(n)
        except Exception as exc:  # any failure of the user's stream is the source's
            raise _SourceFailed(_source_error(self.name, "reading", exc)) from exc

    def fileno(self) -> int:
        return self.stream.fileno()


def _source_error(name: str, doing: str, exc: BaseException) -> StorageError:
    from metatree.errors import StorageError

    error = StorageError(name, f"{doing} the source failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def open_source(source: Source) -> Iterator[tuple[IO[bytes], int | None]]:
    """Open what `put` accepts as a binary stream, with its size when known.

    A failure to open or read the source is the source's, not the destination's: it leaves
    the block as a `StorageError` naming the local file (or ``"<file object>"``), so the user
    is not sent looking for a storage failure. Backends clean up on the way out (they see a
    private exception, not an `OSError`, while it travels through HTTP client code).
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        yield io.BytesIO(data), len(data)
        return
    if isinstance(source, str | os.PathLike):
        name = os.fspath(source)
        try:
            stream: IO[bytes] = open(source, "rb")  # noqa: SIM115 - closed below
            size: int | None = os.fstat(stream.fileno()).st_size
        except OSError as exc:
            raise _source_error(name, "opening", exc) from exc
    else:
        name, stream, size = "<file object>", source, None
    try:
        yield cast("IO[bytes]", _SourceReader(stream, name)), size
    except _SourceFailed as exc:
        raise exc.error from exc.error.__cause__
    finally:
        if isinstance(source, str | os.PathLike):
            stream.close()


def copy_stream(src: IO[bytes], dst: IO[bytes], size: int | None, callback: Callback) -> None:
    """Copy in bounded chunks, reporting progress through the fsspec callback."""
    if size is not None:
        callback.set_size(size)
    while chunk := src.read(COPY_CHUNK):
        dst.write(chunk)
        callback.relative_update(len(chunk))


def copy_file(src: IO[bytes], dst: IO[bytes], callback: Callback) -> None:
    """Copy a local file into another inside the kernel (``copy_file_range``), in chunks.

    No byte passes through Python: a 1 GiB copy through `copy_stream` ran at under half the
    speed of fsspec's own local copy (which uses the kernel's). Like a read loop, it copies
    until the end of the file, whatever size was seen first. Anything but a non-empty regular
    file (a pipe, procfs, a file object without a descriptor), or a kernel or filesystem that
    cannot, takes `copy_stream`.
    """
    try:
        st = os.fstat(src.fileno())
    except (AttributeError, io.UnsupportedOperation):
        copy_stream(src, dst, None, callback)
        return
    if not stat.S_ISREG(st.st_mode) or not st.st_size:
        copy_stream(src, dst, None, callback)
        return
    callback.set_size(st.st_size)
    dst.flush()
    copied = 0
    try:
        while n := os.copy_file_range(src.fileno(), dst.fileno(), COPY_CHUNK):
            copied += n
            callback.relative_update(n)
    except OSError as exc:
        if copied or exc.errno not in _NO_KERNEL_COPY:
            raise
        copy_stream(src, dst, None, callback)


_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}
