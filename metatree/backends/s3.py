"""S3 through s3fs: `S3Backend`, and the DB lock's `S3LeaseStore` on conditional requests.

The backend sends one request per read and write, and trusts no listing cache.

What s3fs gets wrong for us, and what this adapter does instead:

* Its blocking methods run through ``fsspec.asyn.sync``, which leaves the request running
  when the calling thread is interrupted (Ctrl-C during a commit landed the write after the
  lock was released). Every request here goes through `metatree.backends.aio.run`, which cancels and
  awaits it: we call s3fs's coroutines (``_call_s3``...), never its sync wrappers.
* ``cat_file(path)`` sends a HEAD before its GET; GetObject alone is one request, and returns
  the ETag with the body (`read_versioned`).
* Its buffered file uploads what it holds when its context exits, even on an error: a failed
  put replaced a file with the first part of the new one. `put` sends one PutObject only with
  the whole body, or a multipart upload that is aborted on any exception.
* Ranged reads (its files, ``get_file``'s resume) may each see a newer object: `iter_chunks`
  sends ``If-Match`` with the first response's ETag on every further range.
* A ranged GET of an empty object answers 416, which s3fs raises as a plain `OSError`.
* A failed ``If-None-Match: *`` surfaces as `FileExistsError` on moto but as a plain
  `OSError` naming ``PreconditionFailed`` on SeaweedFS and Ceph (and AWS may answer 409
  ``ConditionalRequestConflict`` to a racing writer): all of them mean "lost".
* The listing cache may hold other clients' stale state: every `kind` and `listdir`
  invalidates it first (the generic `Backend` does, for every filesystem).
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

from metatree._locking import LeaseStore
from metatree._locking._info import MAX_BODY
from metatree._transfer import COPY_CHUNK
from metatree.backends.aio import run, upload_each
from metatree.backends.base import (
    MISSING,
    Backend,
    Capabilities,
    Changed,
    translate_errors,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator
    from contextlib import AbstractContextManager

    from metatree._transfer import Download, Upload
    from metatree._types import Version

__all__ = ["S3Backend", "S3LeaseStore"]

_LOST_RACE = ("PreconditionFailed", "pre-conditions", "ConditionalRequestConflict")
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1 000 keys


POOL_CONNECTIONS: Final = 64
"""s3fs's connection pool when metatree opens the filesystem: above `S3Backend.read_concurrency`.

aiobotocore's default of 10 let a catalog keep only 10 of its 32 reads in flight (measured: 7.7
times faster than a walk with 10, 9.2 with 64, at 20 ms a request)."""


def with_pool(options: dict[str, Any]) -> dict[str, Any]:
    """Return s3fs storage `options` with `POOL_CONNECTIONS`, unless the caller chose a pool."""
    config = dict(options.get("config_kwargs") or {})
    if "max_pool_connections" in config:
        return options
    config["max_pool_connections"] = POOL_CONNECTIONS
    return {**options, "config_kwargs": config}


def _client_failures() -> tuple[type[Exception], ...]:
    """Return the HTTP client's own failures (a truncated body, no credentials), passed on raw.

    They are storage failures like any `OSError`; left raw, they escaped `translate_errors`.
    """
    import aiohttp
    import botocore.exceptions

    return (aiohttp.ClientError, botocore.exceptions.BotoCoreError)


def _as_os_error(exc: Exception) -> OSError:
    return OSError(f"{type(exc).__name__}: {exc}")


def _unsatisfiable(exc: OSError) -> bool:
    return "not satisfiable" in str(exc) or "InvalidRange" in str(exc)


def _lost_race(exc: OSError) -> bool:
    return any(marker in str(exc) for marker in _LOST_RACE)


_LOST = (*_LOST_RACE, "NoSuchKey", "does not exist")


def _lost(exc: OSError) -> bool:
    return isinstance(exc, FileNotFoundError | FileExistsError) or any(
        marker in str(exc) for marker in _LOST
    )


def _markers(path: str, keys: list[str]) -> set[str]:
    """Return the folder marker of `path` and of every folder of `keys` below it."""
    base = path.rstrip("/")
    markers = {f"{base}/"}
    for key in keys:
        parts = key[len(base) + 1 :].split("/")[:-1]
        markers.update(f"{base}/{'/'.join(parts[:depth])}/" for depth in range(1, len(parts) + 1))
    return markers


def _entries(reply: dict[str, Any], prefix: str, out: dict[str, str]) -> dict[str, str]:
    """Add one listing page's entries below `prefix` to `out` (a directory wins over a key)."""
    for entry in reply.get("CommonPrefixes", []):
        name = entry["Prefix"][len(prefix) :].rstrip("/")
        if name:
            out[name] = "directory"
    for entry in reply.get("Contents", []):
        name = entry["Key"][len(prefix) :]
        if name and "/" not in name:
            out.setdefault(name, "file")
    return out


CONTINUE_THRESHOLD: Final = 2 * 2**20
"""Bodies up to this size are sent without ``Expect: 100-continue`` (see `_no_small_continue`)."""

_TAUGHT: weakref.WeakSet[Any] = weakref.WeakSet()
"""The s3fs clients `_no_small_continue` is registered with (a client per session)."""


def _no_small_continue(params: dict[str, Any], **_: Any) -> None:
    """Drop botocore's ``Expect: 100-continue`` from requests with a small body.

    botocore asks for it on every upload, and aiohttp then waits for the server's "100
    Continue" before it sends the body: one more round trip for every PutObject (the lock,
    each metadata.json, each small file). It only pays for a large body the server would
    refuse; AWS's Go SDK sends it above 2 MiB only, and so does this.
    """
    headers = params.get("headers") or {}
    if headers.get("Expect") != "100-continue":
        return
    from botocore.utils import determine_content_length

    size = determine_content_length(params.get("body"))
    if size is not None and size <= CONTINUE_THRESHOLD:
        del headers["Expect"]


class S3LeaseStore(LeaseStore):
    """The DB lock's lease on S3, every write conditional on the lock object's ETag.

    Create is PutObject with ``If-None-Match: *``; replace is PutObject with ``If-Match:
    <etag>``; delete is DeleteObject with ``If-Match: <etag>`` (s3fs's ``rm_file`` drops
    ``IfMatch``). S3 lets exactly one conditional request win. Lease bodies are never empty
    and differ in every field that changes, so their ETags (MD5) differ too.
    """

    def _call(self, method: str, **kwargs: Any) -> Any:
        """Make one request on the lock object through the S3 backend's `_call`.

        Literal keys, and our runner: an interrupted call is cancelled and awaited, so no
        lease write outlives it (issue 19).
        """
        backend = cast("S3Backend", self.storage.backend)
        with translate_errors(self.storage.url_of(self.rel)):
            return backend._call(method, self.storage.abs(self.rel), **kwargs)

    def _put(self, body: bytes, **condition: str) -> Version | None:
        try:
            reply = self._call("put_object", Body=body, **condition)
        except OSError as exc:
            if _lost(exc):
                return None
            raise
        etag: str = reply["ETag"]
        return etag

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
                if not (_unsatisfiable(exc) or "416" in str(exc)):
                    raise
                reply = self._call("get_object")  # an empty object has no byte 0 to range
        except OSError as exc:
            if isinstance(exc, FileNotFoundError) or "NoSuchKey" in str(exc):
                return None
            raise
        return bytes(reply["Body"]), reply["ETag"]

    def replace(self, version: Version, body: bytes, *, owned: bool) -> Version | None:
        """PutObject with ``If-Match: <etag>``."""
        return self._put(body, IfMatch=str(version))

    def delete(self, version: Version, *, owned: bool) -> bool:
        """DeleteObject with ``If-Match: <etag>`` (always conditional, owned or not)."""
        try:
            self._call("delete_object", IfMatch=version)
        except OSError as exc:
            if _lost(exc):
                return False
            raise
        return True


class S3Backend(Backend):
    """s3fs, with ``If-None-Match: *`` as the atomic exclusive create and ``If-Match`` fences."""

    capabilities = Capabilities(
        atomic_exclusive_create=True,
        conditional_write=True,
        atomic_conditional_write=True,
        background_io=True,
    )
    lease_store = S3LeaseStore
    timeout: ClassVar[float] = 300.0
    """Seconds one request may take in all (botocore's own connect and read timeouts, 60 s
    each, apply per attempt; s3fs retries): then it is cancelled, and `TimeoutError` raised."""
    part_size: ClassVar[int] = 8 * 2**20
    """Multipart part size (S3's minimum is 5 MiB): bounds the memory a streamed upload holds."""

    # -- requests -----------------------------------------------------------------------
    async def _request(self, method: str, **kwargs: Any) -> Any:
        """One S3 request through s3fs's client, which first learns `_no_small_continue`."""
        await self.fs.set_session()
        client = await self.fs.get_s3(kwargs.get("Bucket"))
        if client not in _TAUGHT:
            client.meta.events.register_last(
                "before-call.s3", _no_small_continue, unique_id="metatree-no-small-continue"
            )
            _TAUGHT.add(client)
        return await self.fs._call_s3(method, **kwargs)

    def _run(self, coro: Coroutine[Any, Any, Any], *, timed: bool = True) -> Any:
        """Run one request on s3fs's loop (within `timeout`); the client's failures as `OSError`.

        ``timed=False`` for a batch whose requests time themselves (`read_many`).
        """
        try:
            return run(self.fs.loop, coro, self.timeout if timed else None)
        except _client_failures() as exc:
            raise _as_os_error(exc) from exc

    def _bucket_key(self, path: str) -> tuple[str, str]:
        """Split a path into bucket and key, literally.

        s3fs's ``split_path`` cuts a key at ``?versionId=``: a stored name holding that text
        (an index entry, a planted key) would make a request act on another object.
        """
        for protocol in ("s3://", "s3a://"):
            path = path.removeprefix(protocol)
        bucket, _, key = path.lstrip("/").partition("/")  # no rstrip: "a/b/" is a marker key
        return bucket, key

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        """One S3 request on `path`'s key; a GetObject's body is read inside the call."""
        bucket, key = self._bucket_key(path)

        async def call() -> dict[str, Any]:
            reply: dict[str, Any] = await self._request(method, Bucket=bucket, Key=key, **kwargs)
            if method == "get_object":
                body = reply["Body"]
                try:
                    reply["Body"] = await body.read()
                finally:
                    body.close()
            return reply

        try:
            reply: dict[str, Any] = self._run(call())
            return reply
        finally:
            if method in {"put_object", "delete_object", "complete_multipart_upload"}:
                self.fs.invalidate_cache(path)

    # -- reads --------------------------------------------------------------------------
    def read(self, path: str) -> bytes:
        """One GetObject (plain `cat_file` would HEAD first)."""
        return bytes(self._call("get_object", path)["Body"])

    def read_versioned(self, path: str, limit: int | None = None) -> tuple[bytes, Version]:
        """One GetObject: the body and its ETag come in the same reply (ranged with `limit`)."""
        if limit is None:
            reply = self._call("get_object", path)
        else:
            try:
                reply = self._call("get_object", path, Range=f"bytes=0-{limit}")
            except FileNotFoundError:
                raise
            except OSError as exc:
                if not _unsatisfiable(exc):
                    raise
                reply = self._call("get_object", path)  # an empty object: no range fits
        return bytes(reply["Body"]), reply["ETag"]

    read_concurrency: ClassVar[int] = 32

    def read_many(
        self, paths: list[str], limit: int | None, concurrency: int
    ) -> list[bytes | Exception]:
        """One GetObject per path, up to `concurrency` in flight on s3fs's event loop.

        Not s3fs's ``cat`` of a list: it expands the paths first (a LIST per prefix). The
        requests share s3fs's connection pool (`POOL_CONNECTIONS` when metatree opened the
        filesystem; aiobotocore's default of 10 for an ``fs=`` the caller made, unless its
        ``config_kwargs`` raise it): concurrency beyond it waits for a connection. Each GET
        gets `timeout` seconds of its own.
        """
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(path: str) -> bytes | Exception:
            bucket, key = self._bucket_key(path)
            async with gate:
                try:  # each request within the timeout of one, not the batch
                    return await asyncio.wait_for(get(bucket, key), self.timeout)
                except _client_failures() as exc:
                    return _as_os_error(exc)
                except Exception as exc:  # noqa: BLE001 - returned: the caller translates it
                    return exc

        async def get(bucket: str, key: str) -> bytes:
            ranged = {} if limit is None else {"Range": f"bytes=0-{limit}"}
            try:
                reply = await self._request("get_object", Bucket=bucket, Key=key, **ranged)
            except OSError as exc:
                if not ranged or isinstance(exc, FileNotFoundError) or not _unsatisfiable(exc):
                    raise
                reply = await self._request("get_object", Bucket=bucket, Key=key)
            body = reply["Body"]
            try:
                return bytes(await body.read())
            finally:
                body.close()

        async def every() -> list[bytes | Exception]:
            return list(await asyncio.gather(*(one(path) for path in paths)))

        return list(self._run(every(), timed=False)) if paths else []

    def iter_chunks(self, path: str, chunk_size: int) -> Iterator[bytes]:
        """Ranged GETs of `chunk_size`, every one after the first with ``If-Match`` its ETag.

        A replacement between two ranges answers 412 and raises `Changed`, never a stream
        that starts with the old bytes and ends with the new. No HEAD, bounded memory.
        """
        return self._pinned(path, chunk_size, None)

    def _pinned(
        self, path: str, chunk_size: int, sized: Callable[[int], object] | None
    ) -> Iterator[bytes]:
        try:
            first = self._call("get_object", path, Range=f"bytes=0-{chunk_size - 1}")
        except FileNotFoundError:
            raise
        except OSError as exc:
            if _unsatisfiable(exc):
                return  # an empty object
            raise
        etag = first["ETag"]
        total = int(str(first.get("ContentRange", "")).rpartition("/")[2] or len(first["Body"]))
        start = len(first["Body"])
        if sized is not None:
            sized(total)
        if first["Body"]:
            yield bytes(first["Body"])
        del first
        while start < total:
            end = min(start + chunk_size, total) - 1
            try:
                reply = self._call("get_object", path, Range=f"bytes={start}-{end}", IfMatch=etag)
            except FileNotFoundError:
                raise Changed(f"{path} was removed while it was read") from None
            except OSError as exc:
                if _lost_race(exc) or _unsatisfiable(exc):
                    raise Changed(f"{path} was replaced while it was read") from None
                raise
            chunk = bytes(reply["Body"])
            if not chunk:
                raise Changed(f"{path} ended early while it was read")
            yield chunk
            start += len(chunk)

    def get(self, path: str, out: Download) -> None:
        """Download with the pinned ranged GETs of `iter_chunks`."""
        for chunk in self._pinned(path, COPY_CHUNK, out.set_size):
            out.write(chunk)

    def kind(self, path: str) -> str | None:
        """HEAD of the key, then one LIST of ``path/`` (a key wins over a prefix, as in s3fs).

        Literal keys (`_bucket_key`), never s3fs's ``info``, which splits at ``?versionId=``.
        """
        if not self._bucket_key(path)[1]:
            return "directory"  # the bucket itself
        try:
            self._call("head_object", path)
        except FileNotFoundError:
            pass
        else:
            return "file"
        reply = next(self._list(path, MaxKeys=1)[1])
        return "directory" if reply.get("Contents") or reply.get("CommonPrefixes") else None

    def listdir(self, path: str) -> dict[str, str]:
        """ListObjectsV2 of ``path/`` with a delimiter: one request per 1 000 entries.

        s3fs's ``ls`` lists a missing prefix twice (the second time to tell "empty" from
        "absent"); a missing directory is simply empty here. Names are taken literally: a key
        whose remainder is empty (``path/`` itself, a folder marker) is not an entry.
        """
        prefix, pages = self._list(path, Delimiter="/")
        out: dict[str, str] = {}
        for reply in pages:
            _entries(reply, prefix, out)
        return out

    def listdir_first(self, path: str) -> tuple[dict[str, str], bool]:
        """One ListObjectsV2 page of ``path/`` (up to 1 000 entries), and whether it was all."""
        prefix, pages = self._list(path, Delimiter="/")
        reply = next(pages)
        return _entries(reply, prefix, {}), not reply.get("IsTruncated")

    def _list(self, path: str, **params: Any) -> tuple[str, Iterator[dict[str, Any]]]:
        """ListObjectsV2 of the key prefix ``path/``: the prefix, and the replies page by page.

        Literal keys (`_bucket_key`); each page is one request through our runner.
        """
        bucket, key = self._bucket_key(path)
        prefix = f"{key.rstrip('/')}/" if key else ""

        def pages() -> Iterator[dict[str, Any]]:
            extra: dict[str, str] = {}
            while True:
                listing = self._request(
                    "list_objects_v2", Bucket=bucket, Prefix=prefix, **params, **extra
                )
                reply: dict[str, Any] = self._run(listing)
                yield reply
                token = reply.get("NextContinuationToken")
                if not reply.get("IsTruncated") or not token:
                    return
                extra = {"ContinuationToken": token}

        return prefix, pages()

    # -- writes -------------------------------------------------------------------------
    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        """One PutObject: S3 shows the old or the new object, never a mix."""
        self._call("put_object", path, Body=data)

    def write_if(self, path: str, data: bytes, version: Version, *, durable: bool = True) -> bool:
        """PutObject with ``If-Match: <etag>``: S3 refuses it (412) once the object changed.

        `MISSING`: ``If-None-Match: *`` (`create_exclusive`).
        """
        if version is MISSING:
            return self.create_exclusive(path, data)
        try:
            self._call("put_object", path, Body=data, IfMatch=version)
        except FileNotFoundError:
            return False  # removed since it was read
        except OSError as exc:
            if _lost_race(exc):
                return False
            raise
        return True

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """PutObject with ``If-None-Match: *``: S3 lets exactly one such PUT succeed."""
        try:
            self._call("put_object", path, Body=data, IfNoneMatch="*")
        except FileExistsError:
            return False
        except OSError as exc:
            if _lost_race(exc):
                return False
            raise
        return True

    def rename(self, src: str, dst: str) -> None:
        """Server-side copy, then delete: readers of `dst` see the old or the new object."""
        self._copy(src, dst)
        self.remove_file(src)

    def _copy(self, src: str, dst: str) -> None:
        """CopyObject (multipart above 5 GB) through our runner: never lands after a raise."""
        self._run(self.fs._cp_file(src, dst))
        self.fs.invalidate_cache(dst)

    def remove_file(self, path: str) -> None:
        # docstring inherited
        self._call("delete_object", path)

    def put(self, source: Upload, path: str, *, durable: bool = True) -> None:
        """One PutObject with the whole body up to `part_size`, multipart above.

        The object appears only when the single PUT or ``CompleteMultipartUpload`` succeeds;
        on any exception (a failing source, a callback raising KeyboardInterrupt) the
        multipart upload is aborted, so the old object (or none) stays. Progress is reported
        as each part is read from `source`, before it is sent, so an exception from the
        callback still aborts.
        """
        data = source.read_full(self.part_size)
        if len(data) < self.part_size:
            self._call("put_object", path, Body=data)
            return
        upload = self._call("create_multipart_upload", path)["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            while data:
                number = len(parts) + 1
                reply = self._call(
                    "upload_part", path, Body=data, PartNumber=number, UploadId=upload
                )
                parts.append({"PartNumber": number, "ETag": reply["ETag"]})
                data = source.read_full(self.part_size)
            self._call(
                "complete_multipart_upload",
                path,
                UploadId=upload,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self._call("abort_multipart_upload", path, UploadId=upload)
            raise

    write_concurrency: ClassVar[int] = 32

    def put_many(
        self,
        items: list[tuple[Callable[[], AbstractContextManager[Upload]], str]],
        concurrency: int,
        *,
        durable: bool = True,
    ) -> list[Exception | None]:
        """Up to `concurrency` uploads in flight on s3fs's event loop, each as `put`.

        `metatree.backends.aio.upload_each`: the first failure stops the batch, uploads in
        flight finish, an interrupt cancels every request before this returns. Sources are
        read on the loop's thread, as s3fs's own ``put_file`` does.
        """

        async def put(upload: Upload, path: str) -> None:
            try:
                await self._aput(upload, path)
            except _client_failures() as exc:
                raise _as_os_error(exc) from exc
            finally:
                self.fs.invalidate_cache(path)

        return upload_each(self.fs.loop, items, concurrency, put)  # `put` translates failures

    async def _aput(self, source: Upload, path: str) -> None:
        """`put` as a coroutine, for `put_many` (each request within `timeout`).

        The same protocol as `put`, awaited instead of run: one PutObject up to `part_size`,
        else a multipart upload aborted on any exception, cancellation included.
        """
        bucket, key = self._bucket_key(path)

        async def call(method: str, **kwargs: Any) -> dict[str, Any]:
            request = self._request(method, Bucket=bucket, Key=key, **kwargs)
            reply: dict[str, Any] = await asyncio.wait_for(request, self.timeout)
            return reply

        data = source.read_full(self.part_size)
        if len(data) < self.part_size:
            await call("put_object", Body=data)
            return
        upload = (await call("create_multipart_upload"))["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            while data:
                number = len(parts) + 1
                reply = await call("upload_part", Body=data, PartNumber=number, UploadId=upload)
                parts.append({"PartNumber": number, "ETag": reply["ETag"]})
                data = source.read_full(self.part_size)
            await call(
                "complete_multipart_upload", UploadId=upload, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await call("abort_multipart_upload", UploadId=upload)
            raise

    def find(self, path: str) -> list[str]:
        """Every file below ``path/`` (an object named `path` is not below it; no markers)."""
        return [key for key in self._keys_below(path) if not key.endswith("/")]

    def _keys_below(self, path: str) -> list[str]:
        """Every key below ``path/``, folder markers (``a/b/``) included: ListObjectsV2 pages.

        s3fs's ``find`` leaves out keys ending in ``/`` (what consoles' "Create folder"
        writes), so a removal that deleted only what it found left the marker behind, and
        the removed directory kept showing in listings.
        """
        bucket = self._bucket_key(path)[0]
        _, pages = self._list(path)
        return [
            f"{bucket}/{entry['Key']}" for reply in pages for entry in reply.get("Contents", [])
        ]

    def remove_tree(self, path: str, trash: str | None) -> None:
        """Delete every key below ``path/``, its top ``metadata.json`` last, then the markers.

        After the keys, the folder markers of every level (``path/``, ``path/sub/``) are
        deleted too, deepest first: a marker key keeps an emptied directory visible, and
        SeaweedFS keeps emptied directories until their marker is deleted. Deleting a marker
        that does not exist is a no-op in S3.
        """
        keys = self._keys_below(path)
        if not keys:
            raise FileNotFoundError(path)
        top = f"{path.rstrip('/')}/metadata.json"
        files = [k for k in keys if k != top and not k.endswith("/")]
        self._delete_keys(files)
        if top in keys:
            self._delete_keys([top])
        self._delete_markers(_markers(path, keys))

    def _emptied(
        self, src: str, new: list[str], dst: str, old: list[str], written: set[str]
    ) -> list[str]:
        """Return the folder markers of `src`, and those of `dst`'s folders now gone.

        SeaweedFS keeps a directory for every prefix until its marker is deleted: without
        this, an emptied staging directory stayed listed, and a file put over a directory
        was listed as a directory. They go in the same DeleteObjects as the keys, after them
        and deepest first (a marker that does not exist is a no-op), so the request count of
        a replacement does not change.
        """
        gone = _markers(src, new) if new else set()
        if old:
            kept = _markers(dst, list(written)) if new else set()
            gone |= _markers(dst, old) - kept
        return sorted(gone, key=len, reverse=True)

    def _delete_markers(self, markers: set[str]) -> None:
        """Delete folder markers deepest first (a marker that does not exist is a no-op)."""
        if markers:
            self._delete_keys(sorted(markers, key=len, reverse=True))

    def _delete_keys(self, keys: list[str]) -> None:
        """DeleteObjects of exact keys, 1 000 per request; any per-key error is raised.

        s3fs's ``rm`` expands ``[]*?`` in the keys it is given (a root ``data[12]`` deleted
        ``data1`` and ``data2``), and its ``_bulk_delete`` drops the per-key errors.
        """
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            bucket = self._bucket_key(batch[0])[0]
            objects = [{"Key": self._bucket_key(key)[1]} for key in batch]
            reply = self._run(  # our runner: an interrupted delete never lands later
                self._request(
                    "delete_objects", Bucket=bucket, Delete={"Objects": objects, "Quiet": True}
                )
            )
            for key in batch:
                self.fs.invalidate_cache(key)
            errors = reply.get("Errors") or []
            if errors:
                first = errors[0]
                raise OSError(f"DeleteObjects {bucket}/{first.get('Key')}: {first.get('Code')}")
