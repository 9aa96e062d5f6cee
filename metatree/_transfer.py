"""Transfers: every byte of every put and get passes through here, and is counted once.

`Storage.put` and `Storage.get` make one `Transfer` per file. It owns what no backend may
forget: progress (the user's fsspec callback, whose exceptions leave as themselves) and
hashing (hashlib objects fed every byte, for ``digest=``). A backend sees only its two views:
an `Upload` it reads the source from, a `Download` it writes what it receives to. Protocols
(multipart uploads, pinned ranged reads, WebHDFS's CREATE) stay in the backends; the
accounting is here, so a new backend gets progress and digests right by construction.

Local file to local file, the bytes are copied inside the kernel (``copy_file_range``); with
a hash, each chunk is then read back from the destination (what was stored) into one reusable
buffer, which measured faster than writing the bytes from Python. Everywhere else they pass
through Python, with ``readinto`` into one reusable buffer where the stream is ours.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import os
import stat
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import IO, TYPE_CHECKING, Any, NamedTuple, Self, cast

from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from metatree._streams import BufferReader

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

    from metatree._types import Source
    from metatree.errors import StorageError

__all__ = [
    "COPY_CHUNK",
    "Download",
    "Moved",
    "Transfer",
    "TreeCallback",
    "Upload",
    "copy_file",
    "read_small",
    "run_bounded",
]

COPY_CHUNK = 8 * 2**20
"""Bytes per read of a copy: large enough for disk and network, small enough for memory."""


class Moved(NamedTuple):
    """What one transfer moved: its size in bytes and, when asked for, its hex digest."""

    size: int
    digest: str | None


class _SourceFailed(Exception):
    """Carries a failure to read the user's source past the transfer code.

    Deliberately not an `OSError`: urllib3 would take one raised while sending a request body
    for a connection failure (and retry, or report the destination).
    """

    def __init__(self, error: StorageError) -> None:
        super().__init__(str(error))
        self.error = error


class _CallbackFailed(Exception):
    """Carries an exception of the user's progress callback past transfer and HTTP code.

    Not an `OSError` nor a `RuntimeError`: those would be taken for a storage failure (and
    urllib3 would take an `OSError` raised while sending a body for a broken connection).
    """

    def __init__(self, original: Exception) -> None:
        super().__init__(str(original))
        self.original = original


def _source_error(name: str, doing: str, exc: BaseException) -> StorageError:
    from metatree.errors import StorageError

    error = StorageError(name, f"{doing} the source failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


class Transfer:
    """The bytes of one file in flight: progress and hashing, for a put or a get.

    Progress follows fsspec's protocol: ``set_size`` with the file's size when it is known
    at the start (else at the end), then ``relative_update`` per chunk; when the transfer
    completes, the size told and the sum of the updates are both the bytes moved (a source
    that grew or shrank meanwhile gets a second ``set_size``). An exception of the callback
    leaves the ``with`` block as itself: a progress bar that raises is the caller's bug, and
    reporting it as a storage failure sent users looking in the wrong place.

    `digest` names a hashlib algorithm (``"sha256"``) fed every byte; `hexdigest` gives it.
    """

    def __init__(self, callback: Callback = DEFAULT_CALLBACK, digest: str | None = None) -> None:
        self._callback = callback
        self._hashers = [] if digest is None else [hashlib.new(digest)]
        self._told: int | None = None
        self.moved = 0
        """Bytes moved so far."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, _CallbackFailed):
            raise exc.original from None

    def hexdigest(self) -> str | None:
        """Return the hex digest of the bytes moved, or None when none was asked for."""
        return self._hashers[0].hexdigest() if self._hashers else None

    def result(self) -> Moved:
        """Return the bytes moved and their digest."""
        return Moved(self.moved, self.hexdigest())

    @contextlib.contextmanager
    def source(self, source: Source) -> Iterator[Upload]:
        """Open what `put` accepts as the `Upload` a backend reads.

        A failure to open or read the source is the source's, not the destination's: it
        leaves the block as a `StorageError` naming the local file (or ``"<file object>"``),
        so the user is not sent looking for a storage failure. Backends clean up on the way
        out (they see a private exception, not an `OSError`, while it travels through HTTP
        client code).
        """
        local = isinstance(source, str | os.PathLike)
        own = True  # a stream we opened: its readinto works (a user's may not implement it)
        if isinstance(source, bytes | bytearray | memoryview):
            data = bytes(source)
            name, stream = "<bytes>", cast("IO[bytes]", io.BytesIO(data))
            size: int | None = len(data)
        elif isinstance(source, str | os.PathLike):
            name = os.fspath(source)
            try:
                stream = open(source, "rb")  # noqa: SIM115 - closed below
                info = os.fstat(stream.fileno())
            except OSError as exc:
                raise _source_error(name, "opening", exc) from exc
            size = info.st_size if stat.S_ISREG(info.st_mode) else None  # a FIFO says 0
        elif isinstance(source, BufferReader):  # metatree's own: readinto works, size known
            name, stream, size = "<value>", cast("IO[bytes]", source), source.size - source.tell()
        else:
            name, stream, size, own = "<file object>", source, None, False
        try:
            if size is not None:
                self.sized(size)
            yield Upload(self, stream, name, size, own=own, kernel=local)
        except _SourceFailed as exc:
            raise exc.error from exc.error.__cause__
        finally:
            if local:
                stream.close()

    def sink(self, out: IO[bytes], name: str) -> Download:
        """Return the `Download` a backend writes to: the local file `out`, named `name`."""
        return Download(self, out, name)

    def sized(self, size: int) -> None:
        """Tell the callback the file's size (known at the start)."""
        self._told = size
        self._report(self._callback.set_size, size)

    def finish(self) -> None:
        """Tell the final size if it differs from what was told (unsized, or it changed)."""
        if self._told != self.moved:
            self.sized(self.moved)

    def _account(self, chunk: bytes | memoryview) -> None:
        self._hash(chunk)
        self._advance(len(chunk))

    def _hash(self, chunk: bytes | memoryview) -> None:
        for hasher in self._hashers:
            hasher.update(chunk)

    def _copy_local(self, src: IO[bytes], dst: IO[bytes]) -> bool:
        """Copy inside the kernel (see `copy_file`); False if it cannot, nothing copied."""
        if self._hashers and not _readable(dst):
            return False
        return copy_file(src, dst, self._advance, self._hash if self._hashers else None)

    def _advance(self, n: int) -> None:
        self.moved += n
        self._report(self._callback.relative_update, n)

    @staticmethod
    def _report(method: Callable[[int], object], n: int) -> None:
        try:
            method(n)
        except Exception as exc:  # the user's own error, whatever it is
            raise _CallbackFailed(exc) from exc


class Upload:
    """The source of a put, as a backend reads it: every byte read is counted and hashed.

    `size` (also `len`, where requests reads a body's Content-Length) is None for a stream
    whose size is unknown. Reading the end tells the transfer it is complete.
    """

    def __init__(
        self,
        transfer: Transfer,
        stream: IO[bytes],
        name: str,
        size: int | None,
        *,
        own: bool,
        kernel: bool,
    ) -> None:
        self._transfer = transfer
        self._stream = stream
        self._name = name
        self._readinto = getattr(stream, "readinto", None) if own else None
        self._kernel = kernel  # our own descriptor of a local file (no Python-side buffer)
        self.size = size
        self.len = size

    def read(self, n: int = -1) -> bytes:
        """Read up to `n` bytes (all with -1); b"" at the end."""
        try:
            chunk = self._stream.read(n)
        except Exception as exc:  # any failure of the user's stream is the source's
            raise _SourceFailed(_source_error(self._name, "reading", exc)) from exc
        if chunk:
            self._transfer._account(chunk)
        elif n:
            self._transfer.finish()
        return chunk

    def read_full(self, n: int) -> bytes:
        """Read `n` bytes, fewer only at the end: a part of a multipart or block upload.

        `read` may return less than asked (a pipe, a socket), which would cut a part short.
        """
        parts: list[bytes] = []
        while n > 0 and (chunk := self.read(n)):
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def readinto(self, buffer: memoryview) -> int:
        """Read into `buffer`; 0 at the end. A user's stream is read (``read`` is all it owes)."""
        readinto = self._readinto
        if readinto is None:
            chunk = self.read(len(buffer))
            if len(chunk) > len(buffer):
                broken = ValueError(f"read({len(buffer)}) returned {len(chunk)} bytes")
                raise _SourceFailed(_source_error(self._name, "reading", broken))
            buffer[: len(chunk)] = chunk
            return len(chunk)
        try:
            n = int(readinto(buffer) or 0)
        except Exception as exc:  # any failure of the user's stream is the source's
            raise _SourceFailed(_source_error(self._name, "reading", exc)) from exc
        if n:
            self._transfer._account(buffer[:n])
        else:
            self._transfer.finish()
        return n

    def copy_to(self, out: IO[bytes]) -> None:
        """Copy the rest of the source into the file `out`, in bounded chunks.

        A local file copied to a local file runs inside the kernel (only our own descriptor:
        a user's file object may hold read-ahead in a Python buffer).
        """
        if self._kernel and self._transfer._copy_local(self._stream, out):
            self._transfer.finish()
            return
        if self._readinto is None:  # a user's stream makes a new bytes per read anyway
            while chunk := self.read(COPY_CHUNK):
                out.write(chunk)
            return
        _pump(self.readinto, out.write, self.size)


class Download:
    """The local file a get writes to: every byte written is counted and hashed.

    A failure to write it (a full disk) is a `StorageError` naming the local file, not the
    remote one.
    """

    def __init__(self, transfer: Transfer, out: IO[bytes], name: str) -> None:
        self._transfer = transfer
        self._out = out
        self._name = name

    def set_size(self, size: int) -> None:
        """Tell the file's size, when the backend learns it before the bytes."""
        self._transfer.sized(size)

    def write(self, chunk: bytes | memoryview) -> None:
        """Write a received chunk."""
        try:
            self._out.write(chunk)
        except OSError as exc:
            raise _local_error(self._name, exc) from exc
        self._transfer._account(chunk)

    def copy_from(self, src: IO[bytes]) -> None:
        """Copy the open local file `src` to its end, inside the kernel where it can."""
        size = None
        with contextlib.suppress(OSError, AttributeError, io.UnsupportedOperation):
            info = os.fstat(src.fileno())
            if stat.S_ISREG(info.st_mode):
                size = info.st_size
                self.set_size(size)
        try:
            copied = self._transfer._copy_local(src, self._out)
        except OSError as exc:
            if exc.errno in _LOCAL_FULL:  # the kernel copy mixes both ends' errors
                raise _local_error(self._name, exc) from exc
            raise
        if copied:
            return
        _pump(cast("io.BufferedIOBase", src).readinto, self.write, size)

    def finish(self) -> None:
        """Flush the local file and tell the final size: the download is complete."""
        try:
            self._out.flush()
        except OSError as exc:
            raise _local_error(self._name, exc) from exc
        self._transfer.finish()


_SMALL_CHUNK = 64 * 2**10
"""The smallest buffer of a copy whose size is known."""


def _fitted(size: int) -> int:
    """Return the buffer length for a file of `size` bytes: it and the byte showing its end.

    Allocating and zeroing `COPY_CHUNK` cost 0.2-0.5 ms for each small file of a bulk load;
    a size that turns out wrong (the file grew) only costs more rounds.
    """
    return min(COPY_CHUNK, max(_SMALL_CHUNK, size + 1))


def _pump(
    readinto: Callable[[memoryview], int | None],
    write: Callable[[memoryview], Any],
    size: int | None = None,
) -> None:
    """Move bytes through one reusable buffer until `readinto` gives 0.

    The buffer fits a copy of known `size` (`_fitted`).
    """
    buffer = memoryview(bytearray(COPY_CHUNK if size is None else _fitted(size)))
    while n := readinto(buffer):
        write(buffer[:n])


class TreeCallback(Callback):  # type: ignore[misc]  # fsspec is untyped
    """The user's callback over the files of a directory put or get, as one transfer.

    Each file's size is told added to the bytes of the files before it, so the total grows
    as files start (a download learns sizes one file at a time) and ends as the sum of the
    updates. The tree's code calls `next_file` after each file.
    """

    def __init__(self, callback: Callback) -> None:
        super().__init__()
        self._user = callback
        self._before = 0

    def set_size(self, size: int) -> None:
        """Tell the user the bytes of the finished files plus this one's size."""
        self.size = self._before + size
        self._user.set_size(self.size)

    def relative_update(self, inc: int = 1) -> None:
        """Pass the update on."""
        self.value += inc
        self._user.relative_update(inc)

    def next_file(self) -> None:
        """Start counting a new file."""
        self._before = self.value


class _Halted(Exception):
    """Raised by `_Halt` in a transfer that another one's failure made pointless."""


class _Halt(Callback):  # type: ignore[misc]  # fsspec is untyped
    """A progress callback that stops its transfer at the next chunk once `halt` is set."""

    def __init__(self, halt: threading.Event) -> None:
        super().__init__()
        self._halt = halt

    def relative_update(self, inc: int = 1) -> None:
        """Stop here if the batch is halted (the transfer removes its partial file)."""
        if self._halt.is_set():
            raise _Halted

    def set_size(self, size: int) -> None:
        """Nothing to show: `run_bounded` runs without a user's progress."""


def run_bounded(jobs: list[Callable[[Callback], object]], width: int) -> None:
    """Run transfers in a pool of `width` threads; the first failure stops the rest and is raised.

    Each job is given the progress callback to pass to its transfer: once a job failed, or
    the caller was interrupted (Ctrl-C), the others stop at their next chunk and the jobs
    not started never start. Nothing a call started is still running when it returns or
    raises: a recursive get must not go on writing into a directory it is removing.
    """
    halt = threading.Event()
    failures: list[BaseException] = []
    progress = _Halt(halt)

    def one(job: Callable[[Callback], object]) -> None:
        if halt.is_set():
            return
        try:
            job(progress)
        except _Halted:
            pass
        except BaseException as exc:  # noqa: BLE001 - the first one is raised below
            failures.append(exc)
            halt.set()

    pool = ThreadPoolExecutor(max(1, min(width, len(jobs))))
    try:
        list(pool.map(one, jobs))
    finally:
        halt.set()
        pool.shutdown(wait=True, cancel_futures=True)
    if failures:
        raise failures[0]


def copy_file(
    src: IO[bytes],
    dst: IO[bytes],
    advance: Callable[[int], object],
    seen: Callable[[memoryview], object] | None = None,
) -> bool:
    """Copy a local file into another inside the kernel (``copy_file_range``), in chunks.

    No byte passes through Python: a 1 GiB copy through a read loop ran at under half the
    speed of fsspec's own local copy (which uses the kernel's). Like a read loop, it copies
    until the end of the file, whatever size was seen first; `advance` gets each chunk's
    length. With `seen`, each chunk is read back from `dst` (opened for reading too) and
    given to it: the bytes a hash sees are those stored. Returns False, having copied
    nothing, for anything but a non-empty regular file (a pipe, procfs, a file object without
    a descriptor) or where the kernel or filesystem cannot: the caller then reads the bytes
    itself.
    """
    copy_range = getattr(os, "copy_file_range", None)  # Linux only: macOS, Windows read
    if copy_range is None:
        return False
    try:
        source, target = src.fileno(), dst.fileno()
    except (AttributeError, io.UnsupportedOperation):
        return False
    st = os.fstat(source)
    if not stat.S_ISREG(st.st_mode) or not st.st_size:
        return False
    dst.flush()
    start = os.lseek(target, 0, os.SEEK_CUR)
    # sized to the file (`_fitted`), and each round asks for no more than it holds: a file
    # that grew since the fstat is read back in more rounds, never past the buffer
    count = _fitted(st.st_size) if seen else COPY_CHUNK
    buffer = memoryview(bytearray(count if seen else 0))
    copied = 0
    try:
        while n := copy_range(source, target, count):
            if seen is not None:
                seen(_read_back(target, buffer[:n], start + copied))
            copied += n
            advance(n)
    except OSError as exc:
        if copied or exc.errno not in _NO_KERNEL_COPY:
            raise
        return False
    return True


SMALL_FILE = 2**20
"""Largest file `read_small` reads whole into memory."""


def read_small(source: Source) -> tuple[bytes, Moved] | None:
    """Return a small source's bytes and their size and sha256; None: not small, or not now.

    A put that knows its file's record before storing it writes the new node's
    metadata.json once, final, before the file (`metatree._core.put`), where it would
    otherwise write a marker first and the record after: the bytes stored are these, so
    the record is exact whatever happens to the local file afterwards. A local path is
    read through one descriptor, only if it is a regular file of at most `SMALL_FILE`
    bytes (read as it is now, as a copy would); anything else (missing, unreadable, a FIFO,
    large, a file object) is None, and the caller streams it as usual, which reports what
    is wrong.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    elif isinstance(source, str | os.PathLike):
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(source, flags)
        except (OSError, ValueError):
            return None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_size > SMALL_FILE:
                return None
            pieces, size = [], 0
            ask = max(info.st_size + 1, _SMALL_CHUNK)  # os.read allocates what it asks for
            while size <= SMALL_FILE and (piece := os.read(fd, min(ask, SMALL_FILE + 1 - size))):
                pieces.append(piece)
                size += len(piece)
        except OSError:
            return None
        finally:
            os.close(fd)
        if size > SMALL_FILE:  # it grew past the limit meanwhile
            return None
        data = b"".join(pieces)
    else:
        return None
    return data, Moved(len(data), hashlib.sha256(data).hexdigest())


def _read_back(fd: int, buffer: memoryview, offset: int) -> memoryview:
    """Fill `buffer` from `fd` at `offset` (a file we just wrote: short only at its end)."""
    got = 0
    while got < len(buffer) and (n := os.preadv(fd, [buffer[got:]], offset + got)):
        got += n
    return buffer[:got]


def _readable(out: IO[bytes]) -> bool:
    """Whether the descriptor of `out` can be read back (a kernel copy's hash needs it)."""
    try:
        import fcntl  # POSIX only, so not at import: elsewhere there is no kernel copy anyway

        flags = fcntl.fcntl(out.fileno(), fcntl.F_GETFL)
    except (ImportError, AttributeError, OSError, ValueError):
        return False
    return flags & os.O_ACCMODE == os.O_RDWR


_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}

_LOCAL_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}


def _local_error(name: str, exc: OSError) -> StorageError:
    from metatree.errors import StorageError

    return StorageError(name, f"writing the download failed: {type(exc).__name__}: {exc}")
