"""Google Cloud Storage through gcsfs: `GCSBackend`, and the opt-in lock on generations.

Built only on metatree's public backend API (`metatree.backends` and
`metatree.backends.aio`): this module is also the proof that a backend can be added from
outside the core (docs/backends.md).

Every object on GCS has a *generation*, a number that changes with every write of it; a
request can be made conditional on it (``ifGenerationMatch=<g>``; ``0``: the object must not
exist), and GCS answers 412 when the condition does not hold. That is the version this
backend reads and writes: `read_versioned` returns it (the ``x-goog-generation`` header of
the same media GET), `write_if` uploads with ``ifGenerationMatch=<g>``, `create_exclusive`
with ``ifGenerationMatch=0``, and the later ranges of one read are pinned with
``generation=<g>``.

What gcsfs passes through, and what this adapter does instead:

* Its blocking methods run through ``fsspec.asyn.sync``, which leaves a request running when
  the calling thread is interrupted. Every request here is gcsfs's ``_call`` coroutine run
  through `metatree.backends.aio.run` (cancelled and awaited), never a sync wrapper.
* ``split_path`` of a version-aware filesystem cuts a name at ``#<digits>`` or
  ``?generation=<digits>``: a stored name holding that text would act on another object.
  Bucket and object name are split literally here (`_bucket_key`), and every name is sent
  percent-encoded whole (gcsfs's ``quote``).
* ``pipe_file`` passes ``ifGenerationMatch=0`` for ``mode="create"`` but has no way to send
  ``ifGenerationMatch=<g>``; ``rm_file`` and ``cat_file`` send no condition. The uploads,
  deletes and pinned reads are written here on ``_call``.
* Its buffered file uploads what it holds when its context exits, even on an error. `put`
  sends one multipart upload with the whole body up to `part_size`, else a resumable upload
  that is cancelled (``DELETE`` of the session URI) on any exception, so nothing lands.
* Its errors: 404 is `FileNotFoundError`, 412 is `FileExistsError` (for every request, also
  a replace: here it means "lost"), a message with "invalid" is `ValueError`, other statuses
  its own ``HttpError`` (not an `OSError`); aiohttp's failures are raw too. All of them reach
  metatree as `OSError`s (`_as_os_error`), so `translate_errors` types them.
* gcsfs retries failed requests (5xx, 408, 429, connection errors) up to six times: a
  conditional write whose answer was lost and that is retried answers 412 though it landed.
  GCS documents the same for its own clients. This backend reports "lost"; the lease then
  reads the lock object and adopts it when the stored body is the one it wrote, and an
  index piece is recognised by its random id (as on S3 and Azure, whose SDKs retry too).
* Its listing cache may hold other clients' stale state: listings here never use it.

What is proven where: the requests follow GCS's documentation of preconditions, which says
they are atomic; the test server (`metatree.testing.gcs_server`) enforces them under one lock
as documented, because gcp-storage-emulator ignores them. So the races of the test suites
prove this adapter sends the right conditions and reads 412 right; they cannot prove GCS
itself atomic. For that reason the registered `GCSBackend` takes no lock of its own (its DB
lock excludes only this process's threads, with a warning), and `GCSGenerationLockBackend`
is the opt-in that takes the lock on GCS's documented preconditions::

    register_backend("gcsfs.core.GCSFileSystem",
                     "metatree.backends.gcs.GCSGenerationLockBackend", clobber=True)
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import uuid
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import quote

from metatree.backends import (
    COPY_CHUNK,
    MAX_LEASE_BYTES,
    MISSING,
    Backend,
    Capabilities,
    Changed,
    LeaseStore,
    translate_errors,
)
from metatree.backends.aio import run, upload_each

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator
    from contextlib import AbstractContextManager

    from metatree.backends import Download, Upload, Version

__all__ = ["GCSBackend", "GCSGenerationLockBackend", "GCSLeaseStore"]


class GCSStatusError(OSError):
    """A GCS error status that gcsfs raised as something other than an `OSError`."""

    def __init__(self, status: int | None, message: str) -> None:
        super().__init__(f"GCS answered {status}: {message}")
        self.status = status


def _as_os_error(exc: BaseException) -> OSError:
    """Return gcsfs's or aiohttp's failure `exc` as an `OSError` (404/412 are already)."""
    if isinstance(exc, OSError):
        return exc
    status = getattr(exc, "code", None) or getattr(exc, "status", None)
    return GCSStatusError(
        status if isinstance(status, int) else None, f"{type(exc).__name__}: {exc}"
    )


def _client_failures() -> tuple[type[BaseException], ...]:
    """Return what gcsfs and its client raise that is not an `OSError`."""
    import aiohttp
    from gcsfs.retry import HttpError

    return (HttpError, ValueError, aiohttp.ClientError)


def _unsatisfiable(exc: OSError) -> bool:
    return isinstance(exc, GCSStatusError) and exc.status == 416


def _generation(headers: Any) -> str:
    """Return the ``x-goog-generation`` of a media GET's reply."""
    value = headers.get("x-goog-generation")
    if not value:
        raise OSError("GCS sent no x-goog-generation header with the object")
    return str(value)


def _total(headers: Any, body: bytes) -> int:
    """Return the object's size from a (ranged) media GET's reply."""
    content_range = str(headers.get("Content-Range") or "")
    total = content_range.rpartition("/")[2]
    return int(total) if total.isdigit() else len(body)


class GCSLeaseStore(LeaseStore):
    """The DB lock's lease on GCS, every write conditional on the lock object's generation.

    Create is an upload with ``ifGenerationMatch=0``; replace is an upload with
    ``ifGenerationMatch=<generation>``; delete is a DELETE with the same condition. GCS
    documents that exactly one conditional request on a generation wins (412 for the rest).
    """

    def _backend(self) -> GCSBackend:
        return cast("GCSBackend", self.storage.backend)

    def _upload(self, body: bytes, generation: str) -> Version | None:
        path = self.storage.abs(self.rel)
        with translate_errors(self.storage.url_of(self.rel)):
            try:
                return self._backend()._upload(path, body, ifGenerationMatch=generation)
            except (FileExistsError, FileNotFoundError):
                return None

    def create(self, body: bytes) -> Version | None:
        """Upload with ``ifGenerationMatch=0``."""
        return self._upload(body, "0")

    def read(self) -> tuple[bytes, Version] | None:
        """One media GET of at most ``MAX_LEASE_BYTES + 1`` bytes, and its generation."""
        with translate_errors(self.storage.url_of(self.rel)):
            try:
                return self._backend().read_versioned(self.storage.abs(self.rel), MAX_LEASE_BYTES)
            except FileNotFoundError:
                return None

    def replace(self, version: Version, body: bytes, *, owned: bool) -> Version | None:
        """Upload with ``ifGenerationMatch=<generation>``."""
        return self._upload(body, str(version))

    def delete(self, version: Version, *, owned: bool) -> bool:
        """DELETE with ``ifGenerationMatch=<generation>`` (always conditional)."""
        backend = self._backend()
        bucket, key = backend._bucket_key(self.storage.abs(self.rel))
        with translate_errors(self.storage.url_of(self.rel)):
            try:
                backend._call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=str(version))
            except (FileExistsError, FileNotFoundError):
                return False
        return True


class GCSBackend(Backend):
    """gcsfs, with generation preconditions as the exclusive create and the version fences.

    The capabilities are what these requests do on GCS, which documents its preconditions as
    atomic; the test server enforces them as documented (see the module docstring). The DB
    lock is the opt-in `GCSGenerationLockBackend`: this class has no `lease_store`.
    """

    capabilities = Capabilities(
        atomic_exclusive_create=True,
        conditional_write=True,
        atomic_conditional_write=True,
        background_io=True,
    )
    lease_store: ClassVar[type[LeaseStore] | None] = None
    timeout: ClassVar[float] = 300.0
    """Seconds one request may take in all (gcsfs's retries included); then it is cancelled."""
    part_size: ClassVar[int] = 8 * 2**20
    """Bytes of a single upload, and of each chunk of a resumable one (a multiple of 256 KiB,
    as GCS requires): bounds the memory a streamed upload holds."""
    read_concurrency: ClassVar[int] = 32
    write_concurrency: ClassVar[int] = 16

    # -- requests -----------------------------------------------------------------------
    def _bucket_key(self, path: str) -> tuple[str, str]:
        """Split a path into bucket and object name, literally (no ``#``/``?`` parsing)."""
        for protocol in ("gs://", "gcs://"):
            path = path.removeprefix(protocol)
        bucket, _, key = path.lstrip("/").partition("/")
        return bucket, key

    async def _acall(self, method: str, template: str, *args: str, **kwargs: Any) -> Any:
        """One request through gcsfs's ``_call``; its failures raised as `OSError`s."""
        try:
            return await self.fs._call(method, template, *args, **kwargs)
        except _client_failures() as exc:
            raise _as_os_error(exc) from exc

    def _run(self, coro: Coroutine[Any, Any, Any], *, timed: bool = True) -> Any:
        """Run on gcsfs's loop through the cancelling runner (within `timeout`)."""
        return run(self.fs.loop, coro, self.timeout if timed else None)

    def _call(self, method: str, template: str, *args: str, **kwargs: Any) -> Any:
        """One request, run through the cancelling runner."""
        return self._run(self._acall(method, template, *args, **kwargs))

    def _upload_url(self, bucket: str) -> str:
        return f"{self.fs._location}/upload/storage/v1/b/{quote(bucket, safe='')}/o"

    async def _aupload(self, path: str, data: bytes, **condition: str) -> str:
        """One multipart upload (metadata and body in one request); return the generation."""
        bucket, key = self._bucket_key(path)
        boundary = f"metatree-{uuid.uuid4().hex}"  # never inside a body by chance
        head = (
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
            f"{json.dumps({'name': key})}\r\n--{boundary}\r\n"
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        try:
            reply = await self._acall(
                "POST",
                self._upload_url(bucket),
                uploadType="multipart",
                headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
                data=io.BytesIO(head + data + f"\r\n--{boundary}--".encode()),  # see `_achunk`
                json_out=True,
                **condition,
            )
        finally:
            self.fs.invalidate_cache(path)
        return str(reply["generation"])

    def _upload(self, path: str, data: bytes, **condition: str) -> str:
        return cast("str", self._run(self._aupload(path, data, **condition)))

    async def _amedia(self, path: str, **kwargs: Any) -> tuple[Any, bytes]:
        bucket, key = self._bucket_key(path)
        headers, body = await self._acall("GET", "b/{}/o/{}", bucket, key, alt="media", **kwargs)
        return headers, bytes(body)

    def _media(self, path: str, **kwargs: Any) -> tuple[Any, bytes]:
        return cast("tuple[Any, bytes]", self._run(self._amedia(path, **kwargs)))

    # -- reads --------------------------------------------------------------------------
    def read(self, path: str) -> bytes:
        """One media GET (gcsfs's ``cat_file`` may fetch metadata first)."""
        return self._media(path)[1]

    async def _aread_versioned(self, path: str, limit: int | None) -> tuple[bytes, str]:
        if limit is not None:
            try:
                headers, body = await self._amedia(path, headers={"Range": f"bytes=0-{limit}"})
            except OSError as exc:
                if not _unsatisfiable(exc):
                    raise
            else:
                return body, _generation(headers)
        headers, body = await self._amedia(path)  # whole, or empty: no range fits
        return body, _generation(headers)

    def read_versioned(self, path: str, limit: int | None = None) -> tuple[bytes, Version]:
        """One media GET: the body and its generation (``x-goog-generation``) together."""
        return cast("tuple[bytes, Version]", self._run(self._aread_versioned(path, limit)))

    def read_many(
        self, paths: list[str], limit: int | None, concurrency: int
    ) -> list[bytes | Exception]:
        """One media GET per path, up to `concurrency` in flight on gcsfs's event loop.

        Each GET gets `timeout` seconds of its own; a failure is returned in its place.
        """
        gate = asyncio.Semaphore(max(1, concurrency))

        async def one(path: str) -> bytes | Exception:
            async with gate:
                try:
                    read = self._aread_versioned(path, limit)
                    return (await asyncio.wait_for(read, self.timeout))[0]
                except Exception as exc:  # noqa: BLE001 - returned: the caller translates it
                    return exc

        async def every() -> list[bytes | Exception]:
            return list(await asyncio.gather(*(one(path) for path in paths)))

        return list(self._run(every(), timed=False)) if paths else []

    def iter_chunks(self, path: str, chunk_size: int) -> Iterator[bytes]:
        """Ranged media GETs, every one after the first pinned to the first's generation.

        A later range asks for ``generation=<g>`` with ``ifGenerationMatch=<g>``: once the
        object was replaced or removed GCS answers 404 or 412, and this raises `Changed`.
        """
        return self._pinned(path, chunk_size, None)

    def _pinned(
        self, path: str, chunk_size: int, sized: Callable[[int], object] | None
    ) -> Iterator[bytes]:
        try:
            headers, body = self._media(path, headers={"Range": f"bytes=0-{chunk_size - 1}"})
        except FileNotFoundError:
            raise
        except OSError as exc:
            if not _unsatisfiable(exc):
                raise
            headers, body = self._media(path)  # an empty object: no range fits
        generation = _generation(headers)
        total = _total(headers, body)
        start = len(body)
        if sized is not None:
            sized(total)
        if body:
            yield body
        del body
        while start < total:
            end = min(start + chunk_size, total) - 1
            try:
                _, chunk = self._media(
                    path,
                    headers={"Range": f"bytes={start}-{end}"},
                    generation=generation,
                    ifGenerationMatch=generation,
                )
            except (FileNotFoundError, FileExistsError):
                raise Changed(f"{path} was replaced or removed while it was read") from None
            except OSError as exc:
                if _unsatisfiable(exc):
                    raise Changed(f"{path} was replaced while it was read") from None
                raise
            if not chunk:
                raise Changed(f"{path} ended early while it was read")
            yield chunk
            start += len(chunk)

    def get(self, path: str, out: Download) -> None:
        """Download with the pinned ranged GETs of `iter_chunks`."""
        for chunk in self._pinned(path, COPY_CHUNK, out.set_size):
            out.write(chunk)

    # -- listing ------------------------------------------------------------------------
    def _list(self, path: str, **params: str) -> tuple[str, Iterator[dict[str, Any]]]:
        """objects.list of the name prefix ``path/``: the prefix, and the replies page by page.

        Literal names; each page is one request through our runner; no listing cache.
        """
        bucket, key = self._bucket_key(path)
        prefix = f"{key.rstrip('/')}/" if key else ""

        def pages() -> Iterator[dict[str, Any]]:
            token: dict[str, str] = {}
            while True:
                reply: dict[str, Any] = self._call(
                    "GET", "b/{}/o", bucket, prefix=prefix, json_out=True, **params, **token
                )
                yield reply
                if not reply.get("nextPageToken"):
                    return
                token = {"pageToken": reply["nextPageToken"]}

        return prefix, pages()

    @staticmethod
    def _entries(reply: dict[str, Any], prefix: str, out: dict[str, str]) -> dict[str, str]:
        """Add one page's entries below `prefix` to `out` (a directory wins over a name)."""
        for entry in reply.get("prefixes") or []:
            name = entry[len(prefix) :].rstrip("/")
            if name:
                out[name] = "directory"
        for item in reply.get("items") or []:
            name = item["name"][len(prefix) :]
            if name and "/" not in name:
                out.setdefault(name, "file")
        return out

    def kind(self, path: str) -> str | None:
        """Send the object's metadata GET, then one listing of ``path/`` (a file wins)."""
        bucket, key = self._bucket_key(path)
        if not key:
            return "directory"  # the bucket itself
        try:
            self._call("GET", "b/{}/o/{}", bucket, key, json_out=True)
        except FileNotFoundError:
            pass
        else:
            return "file"
        reply = next(self._list(path, maxResults="1")[1])
        return "directory" if reply.get("items") or reply.get("prefixes") else None

    def listdir(self, path: str) -> dict[str, str]:
        """objects.list of ``path/`` with the delimiter ``/``: one request per page."""
        prefix, pages = self._list(path, delimiter="/")
        out: dict[str, str] = {}
        for reply in pages:
            self._entries(reply, prefix, out)
        return out

    def listdir_first(self, path: str) -> tuple[dict[str, str], bool]:
        """One page of ``path/`` (up to 1 000 entries), and whether it was all."""
        prefix, pages = self._list(path, delimiter="/")
        reply = next(pages)
        return self._entries(reply, prefix, {}), not reply.get("nextPageToken")

    def _names_below(self, path: str) -> list[str]:
        """Every object below ``path/``, folder markers (``a/b/``) included."""
        bucket = self._bucket_key(path)[0]
        _, pages = self._list(path)
        return [f"{bucket}/{item['name']}" for reply in pages for item in reply.get("items") or []]

    def find(self, path: str) -> list[str]:
        """Every file below ``path/`` (not `path` itself, no folder markers)."""
        return [name for name in self._names_below(path) if not name.endswith("/")]

    # -- writes -------------------------------------------------------------------------
    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        """One multipart upload: GCS shows the old or the new object, never a mix."""
        self._upload(path, data)

    def write_if(self, path: str, data: bytes, version: Version, *, durable: bool = True) -> bool:
        """Upload with ``ifGenerationMatch=<generation>``; 412 (or 404): not written.

        `MISSING`: ``ifGenerationMatch=0`` (`create_exclusive`).
        """
        if version is MISSING:
            return self.create_exclusive(path, data)
        try:
            self._upload(path, data, ifGenerationMatch=str(version))
        except (FileExistsError, FileNotFoundError):
            return False
        return True

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Upload with ``ifGenerationMatch=0``: GCS lets exactly one such upload succeed."""
        try:
            self._upload(path, data, ifGenerationMatch="0")
        except FileExistsError:
            return False
        return True

    def rename(self, src: str, dst: str) -> None:
        """Server-side rewrite, then delete: readers of `dst` see the old or the new object."""
        self._copy(src, dst)
        self.remove_file(src)

    async def _acopy(self, src: str, dst: str) -> None:
        b1, k1 = self._bucket_key(src)
        b2, k2 = self._bucket_key(dst)
        token: dict[str, str] = {}
        try:
            while True:  # a large object takes several rewrite calls
                reply = await self._acall(
                    "POST",
                    "b/{}/o/{}/rewriteTo/b/{}/o/{}",
                    b1,
                    k1,
                    b2,
                    k2,
                    headers={"Content-Type": "application/json"},
                    json_out=True,
                    **token,
                )
                if reply.get("done") is True:
                    return
                token = {"rewriteToken": reply["rewriteToken"]}
        finally:
            self.fs.invalidate_cache(dst)

    def _copy(self, src: str, dst: str) -> None:
        """objects.rewrite through our runner: never lands after a raise."""
        self._run(self._acopy(src, dst))

    def remove_file(self, path: str) -> None:
        # docstring inherited
        bucket, key = self._bucket_key(path)
        try:
            self._call("DELETE", "b/{}/o/{}", bucket, key)
        finally:
            self.fs.invalidate_cache(path)

    def _delete_keys(self, keys: list[str]) -> None:
        """DELETE each exact name (one request each); an absent one is no error."""
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                self.remove_file(key)

    def remove_tree(self, path: str, trash: str | None) -> None:
        """Delete every object below ``path/``, its top ``metadata.json`` last, then markers."""
        names = self._names_below(path)
        if not names:
            raise FileNotFoundError(path)
        top = f"{path.rstrip('/')}/metadata.json"
        self._delete_keys([n for n in names if n != top and not n.endswith("/")])
        if top in names:
            self._delete_keys([top])
        self._delete_keys(sorted((n for n in names if n.endswith("/")), key=len, reverse=True))

    def put(self, source: Upload, path: str, *, durable: bool = True) -> None:
        """One multipart upload up to `part_size`, a resumable upload above.

        The object appears only when the single upload or the resumable upload's last chunk
        succeeds; on any exception (a failing source, a callback raising KeyboardInterrupt)
        the resumable session is cancelled, so the old object (or none) stays.
        """
        data = source.read_full(self.part_size)
        if len(data) < self.part_size:
            self._run(self._aupload(path, data))
            return
        bucket, key = self._bucket_key(path)
        headers, _ = self._run(self._ainitiate(bucket, key))
        session = str(headers["Location"])
        try:
            offset = 0
            while True:
                following = source.read_full(self.part_size)
                end = offset + len(data)
                total = str(end) if not following else "*"
                self._run(self._achunk(session, data, offset, total))
                if not following:
                    break
                offset, data = end, following
        except BaseException:
            with contextlib.suppress(Exception):
                self._run(self._acall("DELETE", session))
            raise
        finally:
            self.fs.invalidate_cache(path)

    async def _ainitiate(self, bucket: str, key: str) -> Any:
        """Start a resumable upload; its session URI is the reply's ``Location``."""
        return await self._acall(
            "POST",
            self._upload_url(bucket),
            uploadType="resumable",
            json={"name": key},
            headers={"X-Upload-Content-Type": "application/octet-stream"},
        )

    async def _achunk(self, session: str, data: bytes, offset: int, total: str) -> None:
        """Send one chunk of a resumable upload; refuse a short acceptance."""
        last = offset + len(data) - 1
        headers, _ = await self._acall(
            "PUT",
            session,
            headers={"Content-Range": f"bytes {offset}-{last}/{total}"},
            data=io.BytesIO(data),  # aiohttp warns of raw bytes; gcsfs rewinds it to retry
        )
        if total == "*":
            stored = str(headers.get("Range") or "").rpartition("-")[2]
            if stored != str(last):
                raise OSError(f"GCS stored {stored or 'nothing'} of bytes {offset}-{last}")

    def put_many(
        self,
        items: list[tuple[Callable[[], AbstractContextManager[Upload]], str]],
        concurrency: int,
        *,
        durable: bool = True,
    ) -> list[Exception | None]:
        """Up to `concurrency` uploads in flight on gcsfs's event loop, each as `put`.

        `metatree.backends.aio.upload_each`, as S3's and Azure's: the first failure stops
        the batch, uploads in flight finish, an interrupt cancels every request before this
        returns. Sources are read on the loop's thread, as gcsfs's own ``put_file`` does.
        """
        return upload_each(self.fs.loop, items, concurrency, self._aput)

    async def _aput(self, source: Upload, path: str) -> None:
        """`put` as a coroutine, for `put_many`: each request within `timeout`.

        The same protocol as `put`, awaited instead of run: one multipart upload up to
        `part_size`, else a resumable upload cancelled on any exception, cancellation included.
        """

        async def timed(coro: Coroutine[Any, Any, Any]) -> Any:
            return await asyncio.wait_for(coro, self.timeout)

        data = source.read_full(self.part_size)
        if len(data) < self.part_size:
            await timed(self._aupload(path, data))
            return
        bucket, key = self._bucket_key(path)
        headers, _ = await timed(self._ainitiate(bucket, key))
        session = str(headers["Location"])
        try:
            offset = 0
            while True:
                following = source.read_full(self.part_size)
                end = offset + len(data)
                await timed(self._achunk(session, data, offset, str(end) if not following else "*"))
                if not following:
                    break
                offset, data = end, following
        except BaseException:
            with contextlib.suppress(Exception):
                await asyncio.shield(timed(self._acall("DELETE", session)))
            raise
        finally:
            self.fs.invalidate_cache(path)


class GCSGenerationLockBackend(GCSBackend):
    """`GCSBackend` with the DB lock on GCS's documented generation preconditions (opt-in).

    The lease is `GCSLeaseStore`. Its tests run on the test server's precondition layer,
    which enforces what GCS documents; no installable emulator proves GCS's own preconditions
    atomic, so register this class explicitly to rely on them.
    """

    lease_store = GCSLeaseStore
