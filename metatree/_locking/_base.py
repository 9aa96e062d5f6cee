"""`BaseLock`: reentrancy, the wait loop with back-off, and the context manager protocol.

Strategies implement only `_try_acquire`, `_release` and `_describe_holder` (as filelock's
``BaseFileLock`` leaves ``_acquire``/``_release`` to its subclasses).

Held state never crosses a ``fork``: a child starts with the lock not held, fresh mutexes
(the parent's may be held by a thread that does not exist in the child) and, through
`_after_fork`, a new owner identity; the strategy drops what it inherited without releasing
it (the lock is still the parent's).
"""

from __future__ import annotations

import os
import random
import threading
import time
import weakref
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Self

from metatree._locking._fork import in_forked_child
from metatree.errors import LockTimeout

if TYPE_CHECKING:
    from types import TracebackType

    from metatree._locking._info import LeaseInfo

__all__ = ["BaseLock", "NullLock"]

_LOCKS: weakref.WeakSet[BaseLock] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for lock in list(_LOCKS):
        lock._after_fork()


in_forked_child(_after_fork_in_child)


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
        self._mutex = threading.RLock()  # threads of one process queue here, not on storage
        self._pid = os.getpid()
        _LOCKS.add(self)

    def _after_fork(self) -> None:
        """In a forked child: forget what the parent held (strategies extend this)."""
        self._depth = 0
        self._mutex = threading.RLock()
        self._pid = os.getpid()

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

    def _abandon(self) -> None:  # noqa: B027 - strategies that keep partial state override it
        """Undo a half-finished acquisition (an exception or Ctrl-C between two steps)."""

    def _timeout_advice(self) -> str:
        """Say what a caller can do about `LockTimeout` with this strategy."""
        return "retry later, or break the lock (break_lock) if its holder is known to be dead"

    def check(self) -> None:  # noqa: B027 - most strategies cannot lose a held lock
        """Raise `LockLostError` unless we hold the lock and may commit (before a commit)."""

    def confirm(self) -> None:
        """Like `check`, but ask the store (a request) where a held lock can be broken.

        For destructive cleanups after a failure: `check` trusts what the renewer last saw,
        and a lease broken with ``break_lock(force=True)`` goes unnoticed until it renews.
        """
        self.check()

    def status(self) -> LeaseInfo | None:
        """Return the lease as stored (who holds the lock), or None when the lock is free."""
        return None

    def break_(self, *, force: bool = False) -> bool:
        """Remove a dead holder's lock; a live one only with `force`. Return whether removed."""
        return False

    def acquire(self, timeout: float | None = None) -> None:
        """Take the lock, waiting up to `timeout` seconds (default: ``self.timeout``)."""
        if self._pid != os.getpid():  # forked without the at-fork hook (should not happen)
            self._after_fork()
        timeout = self.timeout if timeout is None else timeout
        start = time.monotonic()
        # past threading.TIMEOUT_MAX (~292 years) a wait is forever, and acquire() overflows
        forever = timeout < 0 or timeout > threading.TIMEOUT_MAX
        if not self._mutex.acquire(timeout=-1 if forever else timeout):
            raise LockTimeout(self.name, timeout, "another thread of this process", "retry later")
        if self._depth:
            self._depth += 1
            return
        try:
            delay = self.poll_interval
            while not self._try_acquire():
                waited = time.monotonic() - start
                if 0 <= timeout <= waited:
                    holder = self._describe_holder()
                    raise LockTimeout(self.name, timeout, holder, self._timeout_advice())  # noqa: TRY301
                pause = min(delay, self.max_poll_interval) * (0.5 + random.random())
                if timeout >= 0:
                    pause = min(pause, max(timeout - waited, 0.0))
                time.sleep(pause)
                delay *= 2
            self._depth = 1
            self.acquisitions += 1
        except BaseException:
            try:
                if not self._depth:
                    self._abandon()  # e.g. Ctrl-C right after the lock was taken
            finally:
                self._mutex.release()
            raise

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
