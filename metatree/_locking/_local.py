"""`LocalLock`: the DB lock on local disk, held with ``flock(2)`` on the root directory.

The kernel holds the lock for us: it is exclusive between processes (and between lock objects
of one process, since each opens its own file description), and it is released the moment its
holder dies, so a dead owner never blocks anyone. The lock is taken on the database's root
*directory*, which nothing replaces: a file such as ``.metatree`` can be re-saved by an editor
or rsync (temp file + rename, a new inode), and a lock on the old inode would then exclude
nobody. A holder also checks before each commit that the root path still names the directory
it locked (a root moved or replaced while held fails with `LockLostError`), and a waiter that
raced such a replacement retries.

While the lock is held, the lease body is also written to ``<root>/.lock`` so that
`lock_status` can name the holder and metatreedb 0.2.3 clients (which check that name) wait. A
``.lock`` whose flock is free is stale by construction (its writer is gone) and is overwritten;
one we cannot parse was touched by metatreedb and is respected for `foreign_ttl` seconds from
its mtime. Every failure while taking the lock (the body cannot be written: disk full, EIO, a
``.lock`` directory; or Ctrl-C) closes the descriptor, which releases the flock, and surfaces as
`StorageError`.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from metatree._backends import open_regular
from metatree._locking._base import BaseLock
from metatree._locking._info import (
    MAX_BODY,
    CorruptLease,
    LeaseInfo,
    describe_foreign,
    directory_error,
)
from metatree._locking._observe import highest_token, note_token, unchanged_for
from metatree.errors import LockError, LockLostError, StorageError

if TYPE_CHECKING:
    from metatree._storage import Storage

__all__ = ["LocalLock"]

_NO_FLOCK = frozenset({errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
"""What ``flock`` answers where the filesystem cannot lock (NFS emulates it with byte-range
locks, which need a descriptor open for writing: EBADF on a directory)."""
_Seen = tuple[float, bytes]  # the .lock's mtime and (a bounded prefix of) its body


class LocalLock(BaseLock):
    """``flock`` on the root directory, plus a lease body at ``.lock`` for inspection."""

    def __init__(
        self, storage: Storage, rel: str, *, foreign_ttl: float = 30.0, **kwargs: Any
    ) -> None:
        kwargs.setdefault("poll_interval", 0.0005)
        kwargs.setdefault("max_poll_interval", 0.02)
        super().__init__(storage.url_of(rel), **kwargs)
        self.storage = storage
        self.path = storage.abs(rel)
        self.guard = os.path.dirname(self.path)
        self.foreign_ttl = foreign_ttl
        self.owner = uuid.uuid4().hex
        self._fd: int | None = None
        self._lease: LeaseInfo | None = None
        self._holder = "unknown"
        self._foreign = False

    def _after_fork(self) -> None:
        """Close the inherited descriptor without unlocking: the flock stays the parent's."""
        super()._after_fork()
        fd, self._fd, self._lease = self._fd, None, None
        self.owner = uuid.uuid4().hex
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    # -- errors -------------------------------------------------------------------------
    def _error(self, exc: OSError) -> StorageError:
        if isinstance(exc, IsADirectoryError) or os.path.isdir(self.path):
            return directory_error(self.name)
        if exc.errno in _NO_FLOCK:
            return StorageError(
                self.storage.url,
                f"this filesystem cannot flock the root directory ({exc.strerror}): a network "
                "filesystem? See docs/locking.md, 'Where flock does not hold'",
            )
        return StorageError(self.name, f"{type(exc).__name__}: {exc}")

    # -- acquire / release --------------------------------------------------------------
    def _open_guard(self) -> int:
        try:
            return os.open(self.guard, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise StorageError(self.storage.url, f"cannot open the root to lock it: {exc}") from exc

    def _still_named(self, fd: int) -> bool:
        """Whether the root path still names the directory locked through `fd`."""
        try:
            named, locked = os.stat(self.guard), os.fstat(fd)
        except OSError:
            return False
        return (named.st_dev, named.st_ino) == (locked.st_dev, locked.st_ino)

    def _try_acquire(self) -> bool:
        fd = self._open_guard()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._holder = self._read_holder()
                return False
            if not self._still_named(fd):
                return False  # the root was replaced between our open and our flock: retry
            previous = self._read()
            info = self._parse(previous)
            if previous is not None and info is None and not self._foreign_expired(previous):
                return False
            self._foreign = False
            lease = LeaseInfo.new(self.owner, 0.0, info, highest_token(self.name))
            self._write(lease.to_bytes())
            note_token(self.name, lease.token)
            self._lease = lease
            self._fd = fd  # from here on `_release` closes it
        except OSError as exc:
            raise self._error(exc) from exc
        else:
            return True
        finally:
            if self._fd != fd:
                os.close(fd)  # our only descriptor of it: closing releases the flock

    def _parse(self, previous: _Seen | None) -> LeaseInfo | None:
        if previous is None:
            return None
        try:
            info = LeaseInfo.load(previous[1])
        except CorruptLease:
            return None
        note_token(self.name, info.token)
        return info

    def _foreign_expired(self, previous: _Seen) -> bool:
        """Judge a ``.lock`` we cannot parse: respected for `foreign_ttl` after it was written.

        Its age is the larger of now - mtime and how long this process has seen it unchanged
        (an mtime in the future, planted or skewed, cannot hold the lock forever).
        """
        mtime, body = previous
        key = body + repr(mtime).encode()
        age = max(time.time() - mtime, unchanged_for(self.name, key, repeatable=True))
        self._foreign = True
        self._holder = (
            f"{describe_foreign(body)}, written {age:.1f}s ago; it is taken over after "
            f"{self.foreign_ttl:g}s"
        )
        return age > self.foreign_ttl

    def _read(self) -> _Seen | None:
        """Return the ``.lock``'s mtime and body (a bounded prefix), or None when absent."""
        try:
            with open_regular(self.path) as stream:  # a planted FIFO must not block us
                mtime = os.fstat(stream.fileno()).st_mtime
                return mtime, stream.read(MAX_BODY + 1)
        except FileNotFoundError:
            return None

    def _read_holder(self) -> str:
        previous = self._read()
        if previous is None:
            return "a writer that is between two steps"
        info = self._parse(previous)
        if info is None:
            self._foreign_expired(previous)
            return self._holder
        self._foreign = False
        return info.describe()

    def _write(self, body: bytes) -> None:
        # no fsync: after a crash the flock is gone, and with it any meaning of the body
        tmp = os.path.join(self.guard, f".metatree.tmp.{uuid.uuid4().hex}")
        try:
            with open(tmp, "xb") as stream:
                stream.write(body)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _release(self) -> None:
        self._lease = None
        try:
            # the body only names the holder for `lock_status`; a stale one is overwritten by
            # the next holder and reported dead meanwhile (its flock is gone), so failing to
            # delete it must not turn a committed operation into an error
            with contextlib.suppress(OSError):
                os.unlink(self.path)
        finally:
            fd, self._fd = self._fd, None
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                finally:
                    os.close(fd)

    def _abandon(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self._release()

    def _describe_holder(self) -> str:
        return self._holder

    def _timeout_advice(self) -> str:
        if self._foreign:
            return (
                "retry later; a .lock that metatree did not write is taken over "
                f"{self.foreign_ttl:g}s after it was written, or remove it with break_lock()"
            )
        return (
            "retry later; on local disk the lock is the kernel's flock, released the moment "
            "its holder exits, and no other process can break it (lock_status() names it)"
        )

    def check(self) -> None:
        """Refuse when not held, or when the root path no longer names the locked directory."""
        fd = self._fd
        if fd is None:
            raise LockLostError(self.name, "the lock is not held")
        if not self._still_named(fd):
            raise LockLostError(
                self.name, "the database root was moved or replaced while the lock was held"
            )

    # -- inspection ---------------------------------------------------------------------
    def _flock_free(self) -> bool:
        """Whether nobody holds the flock now (probed with a non-blocking try)."""
        fd = self._open_guard()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as exc:
            raise self._error(exc) from exc
        finally:
            os.close(fd)
        return True

    def status(self) -> LeaseInfo | None:
        """Return the holder named in ``.lock``; None when free, including when its writer died."""
        try:
            previous = self._read()
        except OSError as exc:
            raise self._error(exc) from exc
        if previous is None:
            return None
        info = self._parse(previous)
        if info is None:
            return LeaseInfo.foreign(previous[0])
        if self._fd is None and self._flock_free():
            return None  # the writer of this body is gone (the kernel released its flock)
        return info

    def break_(self, *, force: bool = False) -> bool:
        """Remove a stale or foreign ``.lock``; a live holder's kernel lock cannot be broken.

        `force` changes nothing here: no process can take another's ``flock``.
        """
        try:
            if self._read() is None:
                return False
        except OSError as exc:
            raise self._error(exc) from exc
        fd = self._open_guard()
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LockError(
                    f"{self.name} is held by a live process ({self._read_holder()}); on local "
                    "disk the kernel releases it when that process ends"
                ) from None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        except OSError as exc:
            raise self._error(exc) from exc
        else:
            return True
        finally:
            os.close(fd)  # closing the descriptor releases the flock
