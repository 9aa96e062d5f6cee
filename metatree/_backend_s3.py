"""S3 through s3fs: one request per read and write, and no trust in the listing cache.

What s3fs gets wrong for us, and what this adapter does instead:

* ``cat_file(path)`` sends a HEAD before its GET; a ranged GET alone is one request.
* A ranged GET of an empty object answers 416, which s3fs raises as a plain `OSError`.
* A failed ``If-None-Match: *`` surfaces as `FileExistsError` on moto but as a plain
  `OSError` naming ``PreconditionFailed`` on SeaweedFS and Ceph (and AWS may answer 409
  ``ConditionalRequestConflict`` to a racing writer): all of them mean "lost".
* The listing cache may hold other clients' stale state: every `kind` and `listdir`
  invalidates it first (the generic `Backend` does, for every filesystem).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metatree._backends import Backend, Capabilities, copy_stream, open_source

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fsspec.callbacks import Callback

    from metatree._backends import Source

__all__ = ["S3Backend"]

_WHOLE = 2**62  # a Range end past any object: S3 answers with the whole object
_LOST_RACE = ("PreconditionFailed", "pre-conditions", "ConditionalRequestConflict")
_PART_SIZE = 8 * 2**20  # multipart part size: bounds the memory a streamed upload holds
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1 000 keys


def _unsatisfiable(exc: OSError) -> bool:
    return "not satisfiable" in str(exc) or "InvalidRange" in str(exc)


class S3Backend(Backend):
    """s3fs, with ``If-None-Match: *`` as the atomic exclusive create."""

    capabilities = Capabilities(exclusive_names=False)

    def read(self, path: str) -> bytes:
        """One ranged GET (plain `cat_file` would HEAD first)."""
        try:
            return bytes(self.fs.cat_file(path, start=0, end=_WHOLE))
        except FileNotFoundError:
            raise
        except OSError as exc:
            if _unsatisfiable(exc):
                return b""
            raise

    def iter_chunks(self, path: str, chunk_size: int) -> Iterator[bytes]:
        """Ranged GETs of `chunk_size` until a short one: no HEAD, bounded memory."""
        start = 0
        while True:
            try:
                chunk = bytes(self.fs.cat_file(path, start=start, end=start + chunk_size))
            except FileNotFoundError:
                raise
            except OSError as exc:
                if _unsatisfiable(exc):
                    return  # empty object, or its size is an exact multiple of chunk_size
                raise
            if chunk:
                yield chunk
            if len(chunk) < chunk_size:
                return
            start += len(chunk)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """PutObject with ``If-None-Match: *``: S3 lets exactly one such PUT succeed."""
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        except OSError as exc:
            if any(marker in str(exc) for marker in _LOST_RACE):
                return False
            raise
        return True

    def put(self, source: Source, path: str, callback: Callback, *, durable: bool = True) -> None:
        """One PUT for small files, multipart in 8 MiB parts above (completed atomically)."""
        with (
            open_source(source) as (stream, size),
            self.fs.open(path, "wb", block_size=_PART_SIZE) as out,
        ):
            copy_stream(stream, out, size, callback)

    def find(self, path: str) -> list[str]:
        """Every key below ``path/`` in one listing (an object named `path` is not below it)."""
        prefix = path.rstrip("/") + "/"
        self.fs.invalidate_cache(path)
        return [k for k in self.fs.find(prefix) if k.startswith(prefix)]

    def _delete_keys(self, keys: list[str]) -> None:
        """DeleteObjects of exact keys, 1 000 per request; any per-key error is raised.

        s3fs's ``rm`` expands ``[]*?`` in the keys it is given (a root ``data[12]`` deleted
        ``data1`` and ``data2``), and its ``_bulk_delete`` drops the per-key errors.
        """
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            bucket = self.fs.split_path(batch[0])[0]
            objects = [{"Key": self.fs.split_path(key)[1]} for key in batch]
            reply = self.fs.call_s3(
                "delete_objects", Bucket=bucket, Delete={"Objects": objects, "Quiet": True}
            )
            for key in batch:
                self.fs.invalidate_cache(key)
            errors = reply.get("Errors") or []
            if errors:
                first = errors[0]
                raise OSError(f"DeleteObjects {bucket}/{first.get('Key')}: {first.get('Code')}")
