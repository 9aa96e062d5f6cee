"""`ContentLeaseStore`: compare-and-swap by content under a process-wide mutex.

Exact for fsspec's memory filesystem (its store is process-global, so the mutex covers every
writer). For other filesystems without a registered strategy it is the fallback, atomic only
among threads of one process; `metatree._locking._manager` warns when it is used there.
"""

from __future__ import annotations

import os
import threading

from metatree._locking._info import MAX_BODY, directory_error
from metatree._locking._lease import LeaseStore, Version
from metatree._storage import translate_errors
from metatree.errors import NotFoundError

__all__ = ["ContentLeaseStore"]

_MUTEX = threading.Lock()


def _after_fork_in_child() -> None:
    global _MUTEX
    _MUTEX = threading.Lock()


os.register_at_fork(after_in_child=_after_fork_in_child)


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
