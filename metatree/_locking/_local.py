"""`LocalLock`: the DB lock on local disk, held with ``flock(2)``.

The kernel holds the lock for us: it is exclusive between processes (and between lock objects
of one process, since each opens its own file description), and it is released the moment its
holder dies, so a dead owner never blocks anyone. The lock is taken on the database's config
file ``<root>/.metatree``, opened read-only (no extra file for other clients to see); while it
is held, the lease body is also written to
``<root>/.lock`` so that `lock_status` can name the holder and metatreedb 0.2.3 clients (which
check that name) wait. A ``.lock`` left by a killed holder is stale by construction (its flock
is gone) and is overwritten; one we cannot parse was touched by metatreedb and is respected for
`foreign_ttl` seconds.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

from metatree._locking._base import BaseLock
from metatree._locking._info import LeaseInfo
from metatree._paths import CONFIG_FILE
from metatree.errors import LockError, LockLostError

if TYPE_CHECKING:
    from metatree._storage import Storage

__all__ = ["LocalLock"]


class LocalLock(BaseLock):
    """``flock`` on a guard file, plus a lease body at ``.lock`` for inspection."""

    def __init__(
        self, storage: Storage, rel: str, *, foreign_ttl: float = 120.0, **kwargs: Any
    ) -> None:
        kwargs.setdefault("poll_interval", 0.0005)
        kwargs.setdefault("max_poll_interval", 0.02)
        super().__init__(storage.url_of(rel), **kwargs)
        self.storage = storage
        self.path = storage.abs(rel)
        self.guard = storage.abs(CONFIG_FILE)
        self.foreign_ttl = foreign_ttl
        self.owner = uuid.uuid4().hex
        self._fd: int | None = None
        self._lease: LeaseInfo | None = None
        self._holder = "unknown"

    def _open_guard(self) -> int:
        return os.open(self.guard, os.O_RDONLY)

    def _try_acquire(self) -> bool:
        fd = self._open_guard()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self._holder = self._read_holder()
            return False
        previous = self._read()
        if previous is not None and previous[1] is None and not self._foreign_expired(previous):
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
            self._holder = LeaseInfo.foreign(previous[0]).describe()
            return False
        self._lease = LeaseInfo.new(self.owner, 0.0, previous[1] if previous else None)
        self._write(self._lease.to_bytes())
        self._fd = fd
        return True

    def _foreign_expired(self, previous: tuple[float, LeaseInfo | None]) -> bool:
        return time.time() - previous[0] > self.foreign_ttl

    def _read(self) -> tuple[float, LeaseInfo | None] | None:
        """Return the ``.lock`` body's mtime and lease (None for a foreign body), or None."""
        try:
            with open(self.path, "rb") as stream:
                mtime = os.fstat(stream.fileno()).st_mtime
                return mtime, LeaseInfo.parse(stream.read())
        except FileNotFoundError:
            return None

    def _read_holder(self) -> str:
        previous = self._read()
        if previous is None:
            return "a writer that is between two steps"
        return (previous[1] or LeaseInfo.foreign(previous[0])).describe()

    def _write(self, body: bytes) -> None:
        # no fsync: after a crash the flock is gone, and with it any meaning of the body
        tmp = os.path.join(os.path.dirname(self.path), f".metatree.tmp.{uuid.uuid4().hex}")
        with open(tmp, "wb") as stream:
            stream.write(body)
        os.replace(tmp, self.path)

    def _release(self) -> None:
        fd, self._fd, self._lease = self._fd, None, None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
        if fd is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _describe_holder(self) -> str:
        return self._holder

    def check(self) -> None:
        """Refuse only when not held: the kernel lock cannot expire."""
        if self._fd is None:
            raise LockLostError(self.name, "the lock is not held")

    def status(self) -> LeaseInfo | None:
        # docstring inherited
        previous = self._read()
        if previous is None:
            return None
        return previous[1] or LeaseInfo.foreign(previous[0])

    def break_(self, *, force: bool = False) -> bool:
        """Remove a stale or foreign ``.lock``; a live holder's kernel lock cannot be broken.

        `force` changes nothing here: no process can take another's ``flock``.
        """
        if self._read() is None:
            return False
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
            return True
        finally:
            os.close(fd)  # closing the descriptor releases the flock
