"""`WebHDFSLeaseStore`: RENAME as the atomic primitive (HDFS has no conditional write).

* create: CREATE a temp file holding the whole body, then a plain RENAME onto the lock path;
  HDFS renames atomically in the name node and answers ``{"boolean": false}`` when the
  destination exists: that is losing.
* replace / delete of a lease we may not own (a take-over, `break_lock`): RENAME the lock to a
  unique tomb (one of several racing breakers wins it), read the tomb, and go on only if it is
  the lease we judged dead; otherwise RENAME it back.
* replace / delete of our own unexpired lease: nobody may touch it (the lease assumption), so
  RENAME with ``OVERWRITE`` (HDFS ``rename2``) and a plain DELETE suffice.

A tomb put back too late could let a waiter in beside the displaced holder; holders therefore
verify the stored lease before committing (`atomic_replace` is False).
"""

from __future__ import annotations

import contextlib
import posixpath
import uuid
from typing import TYPE_CHECKING

from metatree._locking._lease import LeaseStore, Version
from metatree._storage import translate_errors

if TYPE_CHECKING:
    from metatree._backend_webhdfs import WebHDFSBackend

__all__ = ["WebHDFSLeaseStore"]


class WebHDFSLeaseStore(LeaseStore):
    """The lease on WebHDFS; the version is the body itself."""

    atomic_replace = False

    @property
    def _rest(self) -> WebHDFSBackend:
        backend: WebHDFSBackend = self.storage._backend  # type: ignore[assignment]
        return backend

    @property
    def _path(self) -> str:
        return self.storage.abs(self.rel)

    def _read_path(self, path: str) -> bytes | None:
        try:
            return self._rest.read(path)
        except FileNotFoundError:
            return None

    def create(self, body: bytes) -> Version | None:
        """Temp CREATE + plain RENAME; ``false`` means the lock exists."""
        with translate_errors(self.storage.url_of(self.rel)):
            return body if self._rest.create_exclusive(self._path, body) else None

    def read(self) -> tuple[bytes, Version] | None:
        """OPEN the lock object."""
        with translate_errors(self.storage.url_of(self.rel)):
            body = self._read_path(self._path)
        return None if body is None else (body, body)

    def _take(self, version: Version) -> str | None:
        """Move the lock to a tomb if it is `version`; return the tomb, None if it was not."""
        tomb = posixpath.join(posixpath.dirname(self._path), f".metatree.tomb.{uuid.uuid4().hex}")
        if not self._rest._rename(self._path, tomb, overwrite=False):
            return None  # gone, or another breaker moved it first
        if self._read_path(tomb) == version:
            return tomb
        if not self._rest._rename(tomb, self._path, overwrite=False):
            # a waiter created a lease meanwhile; the displaced holder's `check` will fail
            with contextlib.suppress(OSError):
                self._rest._delete(tomb, recursive=False)
        return None

    def replace(self, version: Version, body: bytes, *, owned: bool) -> Version | None:
        """Own lease: write with RENAME OVERWRITE. Another's: tomb, then create."""
        with translate_errors(self.storage.url_of(self.rel)):
            if owned:
                self._rest.write_atomic(self._path, body)
                return body
            tomb = self._take(version)
            if tomb is None:
                return None
            self._rest._delete(tomb, recursive=False)
            return body if self._rest.create_exclusive(self._path, body) else None

    def delete(self, version: Version, *, owned: bool) -> bool:
        """Own lease: DELETE. Another's: move it to a tomb first, then delete the tomb."""
        with translate_errors(self.storage.url_of(self.rel)):
            if owned:
                try:
                    self._rest._delete(self._path, recursive=False)
                except FileNotFoundError:
                    return False
                return True
            tomb = self._take(version)
            if tomb is None:
                return False
            self._rest._delete(tomb, recursive=False)
            return True
