"""fsspec's in-memory filesystem: `MemoryBackend` and its lock, `ContentLeaseStore`.

The store is process-global, so process-wide mutexes make check-then-act exact: the backend's
conditional writes compare stored objects, the lease store compares contents. The generic
backend borrows `ContentLeaseStore` as its fallback, where it is atomic only among the threads
of one process (`metatree.backends.generic` warns).
"""

from __future__ import annotations

import contextlib
import io
import threading
from typing import TYPE_CHECKING, ClassVar

from metatree._locking import LeaseStore
from metatree._locking._fork import in_forked_child
from metatree._locking._info import MAX_BODY, directory_error
from metatree._transfer import COPY_CHUNK
from metatree.backends.base import MISSING, Backend, Capabilities, translate_errors
from metatree.errors import NotFoundError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from metatree._transfer import Download, Upload
    from metatree._types import Version

__all__ = ["ContentLeaseStore", "MemoryBackend"]

_MUTEX = threading.Lock()


def _after_fork_in_child() -> None:
    global _MUTEX
    _MUTEX = threading.Lock()


in_forked_child(_after_fork_in_child)


class ContentLeaseStore(LeaseStore):
    """Check-then-write under a process-wide mutex; the version is the body itself."""

    def create(self, body: bytes) -> Version | None:
        """Create under the mutex (in-process atomic)."""
        with _MUTEX:
            return body if self.storage.create_exclusive(self.rel, body) else None

    def read(self) -> tuple[bytes, Version] | None:
        # docstring inherited
        path = self.storage.abs(self.rel)
        try:
            with translate_errors(self.storage.url_of(self.rel)):
                body = bytes(self.storage.fs.cat_file(path, start=0, end=MAX_BODY + 1))
        except NotFoundError:
            if self.storage.kind(self.rel) == "directory":
                raise directory_error(self.storage.url_of(self.rel)) from None
            return None
        return body, body  # a bounded prefix: a planted huge body is never read whole

    def replace(self, version: Version, body: bytes, *, owned: bool) -> Version | None:
        """Compare the body and write under the mutex."""
        with _MUTEX:
            current = self.read()
            if current is None or current[0] != version:
                return None
            self.storage.write_atomic(self.rel, body)
            return body

    def delete(self, version: Version, *, owned: bool) -> bool:
        """Compare the body and delete under the mutex."""
        with _MUTEX:
            current = self.read()
            if current is None or current[0] != version:
                return False
            self.storage.remove_file(self.rel)
            return True


_MEMORY_LOCK = threading.Lock()


class MemoryBackend(Backend):
    """fsspec's in-memory filesystem: one process-wide lock makes check-then-act atomic.

    Every write replaces the stored `MemoryFile` object (never its bytes in place) under
    `_MEMORY_LOCK`, so that object is a version: readers take a snapshot of one, and
    `write_if` compares identities under the same lock.
    """

    read_concurrency: ClassVar[int] = 1  # small reads in memory or the page cache: no gain
    write_concurrency: ClassVar[int] = 1  # a dict under one lock: threads only add switching

    capabilities = Capabilities(
        atomic_exclusive_create=True,
        exclusive_names=True,
        data_in_memory=True,
        conditional_write=True,
        atomic_conditional_write=True,
    )
    lease_store = ContentLeaseStore

    def _stored(self, path: str) -> io.BytesIO:
        """Return the stored file object (shared by every reader: never use its position)."""
        key = self.fs._strip_protocol(path)
        try:
            stored = self.fs.store[key]
        except KeyError:
            if key in self.fs.pseudo_dirs:
                raise IsADirectoryError(path) from None
            raise FileNotFoundError(path) from None
        if not isinstance(stored, io.BytesIO):  # pragma: no cover - fsspec's MemoryFile is
            raise TypeError(f"unexpected memory file {type(stored).__name__}")
        return stored

    def read(self, path: str) -> bytes:
        # docstring inherited
        return self._stored(path).getvalue()

    def iter_chunks(self, path: str, chunk_size: int) -> Iterator[bytes]:
        """Slice one snapshot: a replacement stores a new object and leaves ours whole."""
        data = memoryview(self._stored(path).getvalue())
        for start in range(0, len(data), chunk_size):
            yield bytes(data[start : start + chunk_size])

    def get(self, path: str, out: Download) -> None:
        """Write one snapshot out in bounded chunks (progress per chunk)."""
        data = memoryview(self._stored(path).getvalue())
        out.set_size(len(data))
        for start in range(0, len(data), COPY_CHUNK):
            out.write(data[start : start + COPY_CHUNK])

    def read_versioned(self, path: str, limit: int | None = None) -> tuple[bytes, Version]:
        """Return the bytes and the stored object itself (its identity is the version)."""
        with _MEMORY_LOCK:
            stored = self._stored(path)
            data = stored.getvalue()
            return (data if limit is None else data[: limit + 1]), stored

    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        # docstring inherited; under the lock, so that `write_if`'s compare stays atomic
        with _MEMORY_LOCK:
            self.fs.pipe_file(path, data)

    def write_if(self, path: str, data: bytes, version: Version, *, durable: bool = True) -> bool:
        """Compare the stored object with `version` and replace it, under the process lock."""
        if version is MISSING:
            return self.create_exclusive(path, data)
        with _MEMORY_LOCK:
            try:
                current = self._stored(path)
            except FileNotFoundError:
                return False
            if current is not version:
                return False
            self.fs.pipe_file(path, data)
            return True

    def rename(self, src: str, dst: str) -> None:
        """Move the stored object to `dst` in one step under the lock."""
        with _MEMORY_LOCK:
            stored = self._stored(src)
            self.fs.pipe_file(dst, stored.getvalue())
            self.fs.rm_file(src)

    def put(self, source: Upload, path: str, *, durable: bool = True) -> None:
        """Collect the whole body first (it lives in memory anyway), then store it in one step.

        Streaming into a `MemoryFile` would commit it when its context exits, even on error.
        """
        buffer = io.BytesIO()
        source.copy_to(buffer)
        with _MEMORY_LOCK:
            self.fs.pipe_file(path, buffer.getvalue())

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Check and create under a process-wide lock (the store is process-global too)."""
        with _MEMORY_LOCK:
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, data)
            return True

    def listdir(self, path: str) -> dict[str, str]:
        # docstring inherited; MemoryFileSystem lists a file as itself, which is not a dir
        if self.fs.isfile(path):
            return {}
        return super().listdir(path)

    def remove_tree(self, path: str, trash: str | None) -> None:
        """Delete the keys (metadata.json last), then the directories `mkdir` may have made."""
        pseudo: list[str] = getattr(self.fs, "pseudo_dirs", [])
        below = self.fs._strip_protocol(path)
        try:
            super().remove_tree(path, trash)
        except FileNotFoundError:  # an empty made directory has no key, and is still a tree
            if below not in pseudo:
                raise
        for folder in sorted((d for d in pseudo if d.startswith(below + "/")), reverse=True):
            with contextlib.suppress(OSError):
                self.fs.rmdir(folder)
        with contextlib.suppress(OSError):
            self.fs.rmdir(below)
