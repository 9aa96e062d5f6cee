"""`WebHDFSLeaseStore`: RENAME as the atomic primitive (HDFS has no conditional write).

* create: CREATE a temp file holding the whole body, then RENAME with ``renameoptions=NONE``
  (HDFS ``rename2``), which fails with ``FileAlreadyExistsException`` when the lock exists.
  The plain RENAME is not used: onto an existing *directory* it moves the temp file into it
  and answers true, so a ``.lock`` directory would let every writer "win".
* replace / delete of a lease we may not own (a take-over, `break_lock`, and every release):
  RENAME the lock to a unique tomb (one of several racing breakers wins it), read the tomb, and
  go on only if it is the lease we judged; otherwise put it back (``rename2``, never over
  another lease).
* renewal of our own lease: read it, and rewrite it (RENAME ``OVERWRITE``) only if it is still
  ours. HDFS cannot make that atomic; a holder therefore verifies the stored lease before each
  commit (`atomic_replace` is False), and a release never deletes a lease it did not write.
"""

from __future__ import annotations

import contextlib
import posixpath
import uuid
from typing import TYPE_CHECKING

from metatree._locking._info import MAX_BODY, directory_error
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
        """OPEN a bounded prefix (a planted huge body is never read whole)."""
        try:
            reply = self._rest._request("OPEN", "GET", path, offset=0, length=MAX_BODY + 1)
        except FileNotFoundError:
            return None
        return bytes(reply.content)

    def _move(self, src: str, dst: str) -> bool:
        """``rename2`` without overwrite: False when `src` is gone or `dst` exists."""
        try:
            self._rest._request("RENAME", "PUT", src, destination=dst, renameoptions="NONE").close()
        except (FileExistsError, FileNotFoundError):
            return False
        return True

    def _not_a_directory(self, exc: OSError) -> None:
        """Turn a failure caused by a ``.lock`` directory into an error that says so."""
        with contextlib.suppress(OSError):
            kind = self._rest._request("GETFILESTATUS", "GET", self._path).json()
            if kind.get("FileStatus", {}).get("type") == "DIRECTORY":
                raise directory_error(self.storage.url_of(self.rel)) from exc

    def create(self, body: bytes) -> Version | None:
        """CREATE a temp file, then ``rename2`` (no overwrite): an existing lock = lost."""
        tmp = self._rest._temp_beside(self._path)
        won = False
        with translate_errors(self.storage.url_of(self.rel)):
            try:
                self._rest._create(tmp, body, overwrite=True)
                try:
                    won = self._move(tmp, self._path)
                except OSError as exc:
                    self._not_a_directory(exc)
                    raise
            finally:
                if not won:
                    with contextlib.suppress(OSError):
                        self._rest._delete(tmp, recursive=False)
        return body if won else None

    def read(self) -> tuple[bytes, Version] | None:
        """OPEN the lock object (a bounded prefix)."""
        with translate_errors(self.storage.url_of(self.rel)):
            body = self._read_path(self._path)
        return None if body is None else (body, body)

    def _take(self, version: Version) -> str | None:
        """Move the lock to a tomb if it is `version`; return the tomb, None if it was not."""
        tomb = posixpath.join(posixpath.dirname(self._path), f".metatree.tomb.{uuid.uuid4().hex}")
        if not self._move(self._path, tomb):
            return None  # gone, or another breaker moved it first
        if self._read_path(tomb) == version:
            return tomb
        if not self._move(tomb, self._path):
            # a waiter created a lease meanwhile; the displaced holder's `check` will fail
            with contextlib.suppress(OSError):
                self._rest._delete(tomb, recursive=True)
        return None

    def replace(self, version: Version, body: bytes, *, owned: bool) -> Version | None:
        """Renewal: read, compare, RENAME OVERWRITE. Take-over: tomb, then create."""
        with translate_errors(self.storage.url_of(self.rel)):
            if owned:
                if self._read_path(self._path) != version:
                    return None  # broken or taken over: never overwrite the next holder
                self._rest.write_atomic(self._path, body)
                return body
            tomb = self._take(version)
            if tomb is None:
                return None
            self._rest._delete(tomb, recursive=False)
        return self.create(body)

    def delete(self, version: Version, *, owned: bool) -> bool:
        """Move the lock to a tomb, check it is `version`, delete the tomb (owned or not)."""
        with translate_errors(self.storage.url_of(self.rel)):
            tomb = self._take(version)
            if tomb is None:
                return False
            # the lock object is gone from its name: that is the release. The tomb is a
            # reserved, unique name; failing to delete it (a lost reply) is no lost release
            with contextlib.suppress(OSError):
                self._rest._delete(tomb, recursive=False)
            return True
