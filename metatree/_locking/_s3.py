"""`S3LeaseStore`: conditional requests on the lock object's ETag.

Create is PutObject with ``If-None-Match: *``; replace is PutObject with ``If-Match: <etag>``;
delete is DeleteObject with ``If-Match: <etag>`` (s3fs's ``rm_file`` drops ``IfMatch``, so the
call is made with ``call_s3``). S3 lets exactly one conditional request win. Lease bodies are
never empty and differ in every field that changes, so their ETags (MD5) differ too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metatree._locking._info import MAX_BODY
from metatree._locking._lease import LeaseStore, Version
from metatree._storage import translate_errors

if TYPE_CHECKING:
    from metatree._backend_s3 import S3Backend

__all__ = ["S3LeaseStore"]

_LOST = (
    "PreconditionFailed",
    "pre-conditions",
    "ConditionalRequestConflict",
    "NoSuchKey",
    "does not exist",
)


def _lost(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError | FileExistsError) or any(
        marker in str(exc) for marker in _LOST
    )


class S3LeaseStore(LeaseStore):
    """The lease on S3, every write conditional on the ETag."""

    def _call(self, method: str, **kwargs: Any) -> Any:
        """Make one request on the lock object through the S3 backend's `_call`.

        Literal keys, and our runner: an interrupted call is cancelled and awaited, so no
        lease write outlives it (issue 19).
        """
        backend: S3Backend = self.storage._backend  # type: ignore[assignment]
        with translate_errors(self.storage.url_of(self.rel)):
            return backend._call(method, self.storage.abs(self.rel), **kwargs)

    def _put(self, body: bytes, **condition: str) -> Version | None:
        try:
            reply = self._call("put_object", Body=body, **condition)
        except OSError as exc:
            if _lost(exc):
                return None
            raise
        return reply["ETag"]

    def create(self, body: bytes) -> Version | None:
        """PutObject with ``If-None-Match: *``."""
        return self._put(body, IfNoneMatch="*")

    def read(self) -> tuple[bytes, Version] | None:
        """GetObject of a bounded prefix: the body and its ETag in one request.

        A planted huge body is never read whole (the range stops past `MAX_BODY`).
        """
        try:
            try:
                reply = self._call("get_object", Range=f"bytes=0-{MAX_BODY}")
            except OSError as exc:
                if not any(m in str(exc) for m in ("InvalidRange", "416", "not satisfiable")):
                    raise
                reply = self._call("get_object")  # an empty object has no byte 0 to range
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or "NoSuchKey" in str(exc):
                return None
            raise
        return bytes(reply["Body"]), reply["ETag"]

    def replace(self, version: Version, body: bytes, *, owned: bool) -> Version | None:
        """PutObject with ``If-Match: <etag>``."""
        return self._put(body, IfMatch=version)

    def delete(self, version: Version, *, owned: bool) -> bool:
        """DeleteObject with ``If-Match: <etag>`` (always conditional, owned or not)."""
        try:
            self._call("delete_object", IfMatch=version)
        except OSError as exc:
            if _lost(exc):
                return False
            raise
        return True
