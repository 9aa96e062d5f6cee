"""`BaseLock`: reentrancy, the wait loop with back-off, and the context manager protocol.

Strategies implement only `_try_acquire`, `_release` and `_describe_holder` (as filelock's
``BaseFileLock`` leaves ``_acquire``/``_release`` to its subclasses).
"""

from __future__ import annotations

import random
import threading
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Self

from metatree.errors import LockTimeout

if TYPE_CHECKING:
    from types import TracebackType

    from metatree._locking._info import LeaseInfo

__all__ = ["BaseLock", "NullLock"]


class BaseLock(ABC):
    """A reentrant, thread-safe lock whose waiting ends in `LockTimeout`.

    Parameters
    ----------
    name
        Shown in errors (the lock object's URL).
    timeout
        Seconds to wait before `LockTimeout`; negative waits forever.
    poll_interval
        First pause between attempts; it doubles up to `max_poll_interval`, with jitter so
        that waiters do not retry in lock-step.
    """

    def __init__(
        self,
        name: str,
        timeout: float = 60.0,
        poll_interval: float = 0.01,
        max_poll_interval: float = 1.0,
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.acquisitions = 0
        """How many times the lock was really taken (not counting reentrant entries)."""
        self._depth = 0
        self._owner_thread: int | None = None
        self._mutex = threading.RLock()  # threads of one process queue here, not on storage

    @property
    def is_locked(self) -> bool:
        """Whether this object holds the lock now."""
        return self._depth > 0

    @abstractmethod
    def _try_acquire(self) -> bool:
        """Make one attempt; return whether the lock is ours now."""

    @abstractmethod
    def _release(self) -> None:
        """Give the lock up."""

    @abstractmethod
    def _describe_holder(self) -> str:
        """Say who holds the lock, for `LockTimeout`."""

    def check(self) -> None:  # noqa: B027 - most strategies cannot lose a held lock
        """Raise `LockLostError` unless we hold the lock and may commit (before a commit)."""

    def status(self) -> LeaseInfo | None:
        """Return the lease as stored (who holds the lock), or None when the lock is free."""
        return None

    def break_(self, *, force: bool = False) -> bool:
        """Remove a dead holder's lock; a live one only with `force`. Return whether removed."""
        return False

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock, waiting up to `timeout` seconds (default: ``self.timeout``)."""
        timeout = self.timeout if timeout is None else timeout
        start = time.monotonic()
        if not self._mutex.acquire(timeout=-1 if timeout < 0 else timeout):
            raise LockTimeout(self.name, timeout, "another thread of this process")
        if self._depth:
            self._depth += 1
            return
        try:
            delay = self.poll_interval
            while not self._try_acquire():
                waited = time.monotonic() - start
                if 0 <= timeout <= waited:
                    raise LockTimeout(self.name, timeout, self._describe_holder())  # noqa: TRY301
                pause = min(delay, self.max_poll_interval) * (0.5 + random.random())
                if timeout >= 0:
                    pause = min(pause, max(timeout - waited, 0.0))
                time.sleep(pause)
                delay *= 2
        except BaseException:
            self._mutex.release()
            raise
        self._depth = 1
        self.acquisitions += 1

    def release(self) -> None:
        """Release one level; the lock is given up when the outermost holder leaves."""
        if not self._depth:
            raise RuntimeError(f"release of {self.name!r}, which is not held")
        self._depth -= 1
        try:
            if not self._depth:
                self._release()
        finally:
            self._mutex.release()

    def __enter__(self) -> Self:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class NullLock(BaseLock):
    """The lock of a database with ``locking_enabled=False``: always free, never stored."""

    def _try_acquire(self) -> bool:
        return True

    def _release(self) -> None:
        pass  # nothing was stored

    def _describe_holder(self) -> str:
        return "nobody"
