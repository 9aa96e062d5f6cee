"""Azure Blob Storage through adlfs: `AzureBackend`, and the DB lock's `AzureLeaseStore`.

Built on the public backend API only (`metatree.backends` and `metatree.backends.aio`), as a
backend from outside this package would be: the proof that one can be added from outside.

The backend sends one request per read and write, and trusts no listing cache. It calls the
Azure SDK's async clients that adlfs holds (``fs.service_client``) through our runner, never
adlfs's sync wrappers. What adlfs gets wrong for us, and what this adapter does instead:

* Its blocking methods run through ``fsspec.asyn.sync``, which leaves the request running when
  the calling thread is interrupted: every request here goes through `metatree.backends.aio.run`
  (cancelled and awaited), on adlfs's loop.
* ``split_path`` cuts a blob name at ``?versionid=`` (with ``version_aware``): a stored name
  holding that text would act on another blob. Names are split literally (`_container_blob`).
* ``pipe_file`` takes no ``If-Match``: `write_if` and the lease pass ``etag=`` with
  ``MatchConditions.IfNotModified`` (``If-Match``) to ``upload_blob`` and ``delete_blob``;
  ``overwrite=False`` is ``If-None-Match: *``, Azure's atomic create.
* ``cp_file`` starts a server-side copy and returns before it has finished (Azure copies
  asynchronously): `_copy` waits until the copy has succeeded, and aborts it on any failure.
* Its ranged reads (``open``, ``cat_file`` with ranges) may each see a newer blob:
  `iter_chunks` sends ``If-Match`` with the first response's ETag on every further range.
* Its file uploads stage blocks named by position, so two uploads of one name mix their blocks
  (Azure keeps one uncommitted block list per blob): `put` names its blocks by a random id.
  An upload that fails leaves only uncommitted blocks, which readers never see and Azure
  discards (there is no abort request for them).
* ``rm`` expands ``[]*?`` in the names it is given: removals here delete exact names.

Errors: 404 is `FileNotFoundError`, 409 ``BlobAlreadyExists`` `FileExistsError`, a failed
condition (412) "lost"; the SDK's other errors become `OSError`s naming the status and code.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import secrets
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

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
    from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine, Iterator
    from contextlib import AbstractContextManager

    from metatree.backends import Download, Upload, Version

__all__ = ["AzureBackend", "AzureLeaseStore", "azure_errors"]

T = TypeVar("T")

_PROTOCOLS = ("az://", "abfs://", "abfss://")
_BATCH = 256
"""A blob batch request deletes at most 256 blobs."""
_DELETE: Final = {"delete_snapshots": "include"}
"""Delete Blob's keywords: a blob's snapshots go with it (Azure refuses to delete a blob that
has any, 409 ``SnapshotsPresent``: a backup tool's snapshot of the lock blob failed every
release after its commit, and of a file every removal)."""
_COPY_POLL: Final = 0.05
"""Seconds between looks at a pending server-side copy."""


def _describe(exc: BaseException) -> str:
    """Name an SDK error by its status and code: its message carries the whole XML reply."""
    lines = str(exc).splitlines()
    first = getattr(exc, "reason", None) or (lines[0] if lines else "")
    status = getattr(exc, "status_code", None)
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)
    return " ".join(str(part) for part in (type(exc).__name__, status, code, first) if part)


class _Lost(FileExistsError):
    """A conditional request lost: the blob exists (create) or changed (``If-Match``).

    A `FileExistsError`, which `Storage` reads as "something of that name is in the way",
    should one ever escape the primitives that catch it.
    """


@contextlib.contextmanager
def azure_errors(path: str) -> Iterator[None]:
    """Turn the Azure SDK's errors into the builtin `OSError`s the backend API speaks.

    404 `FileNotFoundError`; a failed condition (412 ``ConditionNotMet``, 409
    ``BlobAlreadyExists``) `_Lost`; any other service or transport error an `OSError` naming
    status and code.
    """
    from azure.core.exceptions import (
        AzureError,
        ResourceExistsError,
        ResourceModifiedError,
        ResourceNotFoundError,
    )

    try:
        yield
    except ResourceNotFoundError as exc:
        raise FileNotFoundError(path) from exc
    except AzureError as exc:
        if _lost_condition(exc, ResourceModifiedError, ResourceExistsError):
            raise _Lost(f"{path}: {_describe(exc)}") from exc
        raise OSError(f"{path}: {_describe(exc)}") from exc


_LOST_CODES = frozenset({"ConditionNotMet", "BlobAlreadyExists"})


def _lost_condition(exc: BaseException, modified: type, exists: type) -> bool:
    """Whether `exc` says that our condition failed, and nothing else.

    Azure answers a failed ``If-Match`` with 412 ``ConditionNotMet`` and a failed
    ``If-None-Match: *`` with 409 ``BlobAlreadyExists``. Its other 409s and 412s (a blob
    lease held by another client: ``LeaseIdMissing``; ``ContainerBeingDeleted``) are
    failures of the store, not a lost race: read as one, a blob leased by someone else
    would have looked like a node written by another writer.
    """
    code = getattr(exc, "error_code", None)
    code = getattr(code, "value", code)  # the SDK's StorageErrorCode, or the header's text
    if code:
        return str(code) in _LOST_CODES
    return isinstance(exc, modified | exists)


class AzureLeaseStore(LeaseStore):
    """The DB lock's lease on Azure, every write conditional on the lock blob's ETag.

    Create is Put Blob with ``If-None-Match: *``; replace is Put Blob with ``If-Match:
    <etag>``; delete is Delete Blob with ``If-Match: <etag>``. Azure lets exactly one
    conditional request on a blob win (measured on Azurite: docs/backends.md). Every write
    gives the blob a new ETag, so a replaced lease never matches an old version.
    """

    def _backend(self) -> AzureBackend:
        backend = self.storage.backend
        if not isinstance(backend, AzureBackend):
            raise TypeError(f"AzureLeaseStore needs an AzureBackend, not {type(backend).__name__}")
        return backend

    def _write(self, body: bytes, **condition: Any) -> Version | None:
        backend = self._backend()
        path = self.storage.abs(self.rel)
        with translate_errors(self.storage.url_of(self.rel)):
            try:
                return backend._upload(path, body, **condition)
            except _Lost:
                return None

    def create(self, body: bytes) -> Version | None:
        """Put Blob with ``If-None-Match: *``."""
        return self._write(body, overwrite=False)

    def read(self) -> tuple[bytes, Version] | None:
        """One ranged Get Blob: at most `MAX_LEASE_BYTES` + 1 bytes, and the ETag."""
        backend = self._backend()
        with translate_errors(self.storage.url_of(self.rel)):
            try:
                return backend.read_versioned(self.storage.abs(self.rel), MAX_LEASE_BYTES)
            except FileNotFoundError:
                return None

    def replace(self, version: Version, body: bytes, *, owned: bool) -> Version | None:
        """Put Blob with ``If-Match: <etag>``."""
        return self._write(body, **_if_match(version))

    def delete(self, version: Version, *, owned: bool) -> bool:
        """Delete Blob with ``If-Match: <etag>`` (always conditional, owned or not)."""
        backend = self._backend()
        path = self.storage.abs(self.rel)
        with translate_errors(self.storage.url_of(self.rel)):
            try:
                backend._call(path, lambda blob: blob.delete_blob(**_DELETE, **_if_match(version)))
            except (_Lost, FileNotFoundError):
                return False
        return True


def _if_match(version: Version) -> dict[str, Any]:
    """Return the SDK's keywords for ``If-Match: <version>``."""
    from azure.core import MatchConditions

    return {"etag": str(version), "match_condition": MatchConditions.IfNotModified}


class AzureBackend(Backend):
    """adlfs, with ``If-None-Match: *`` as the atomic create and ``If-Match`` fences."""

    capabilities = Capabilities(
        atomic_exclusive_create=True,
        conditional_write=True,
        atomic_conditional_write=True,
        background_io=True,
    )
    lease_store = AzureLeaseStore
    timeout: ClassVar[float] = 300.0
    """Seconds one request may take in all (the SDK retries within it): then it is
    cancelled, and `TimeoutError` raised."""
    part_size: ClassVar[int] = 8 * 2**20
    """Up to this size a put is one Put Blob; above, blocks of this size (bounds memory)."""
    read_concurrency: ClassVar[int] = 32
    write_concurrency: ClassVar[int] = 32

    # -- requests -----------------------------------------------------------------------
    def _container_blob(self, path: str) -> tuple[str, str]:
        """Split a path into container and blob name, literally (see the module docstring)."""
        for protocol in _PROTOCOLS:
            path = path.removeprefix(protocol)
        container, _, blob = path.lstrip("/").partition("/")
        return container, blob

    def _blob_client(self, path: str) -> Any:
        container, blob = self._container_blob(path)
        return self.fs.service_client.get_blob_client(container, blob)

    def _container_client(self, path: str) -> Any:
        return self.fs.service_client.get_container_client(self._container_blob(path)[0])

    def _run(self, coro: Coroutine[Any, Any, Any], *, timed: bool = True) -> Any:
        """Run one request on adlfs's loop, within `timeout` (``timed=False``: a batch)."""
        return run(self.fs.loop, coro, self.timeout if timed else None)

    async def _within(self, request: Awaitable[T]) -> T:
        """Await one request within `timeout` (as `run` does for a single call)."""
        try:
            return await asyncio.wait_for(request, self.timeout)
        except TimeoutError:
            raise TimeoutError(f"no answer within {self.timeout:g}s") from None

    def _call(self, path: str, request: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
        """Send `request` (given the blob's client) for `path`, its errors as `OSError`s."""

        async def call() -> Any:
            with azure_errors(path):
                return await request(self._blob_client(path))

        return self._run(call())

    async def _aupload(self, path: str, data: bytes, **options: Any) -> Version:
        """One Put Blob of `data` (``overwrite``, ``etag``: its conditions); the new ETag."""
        overwrite = options.pop("overwrite", True)
        with azure_errors(path):
            reply = await self._blob_client(path).upload_blob(data, overwrite=overwrite, **options)
        etag: str = reply["etag"]
        return etag

    def _upload(self, path: str, data: bytes, **options: Any) -> Version:
        etag: Version = self._run(self._aupload(path, data, **options))
        return etag

    async def _adownload(
        self, path: str, offset: int | None = None, length: int | None = None, **options: Any
    ) -> tuple[bytes, str, int]:
        """One Get Blob (ranged with `offset`/`length`): the bytes, the ETag, the blob's size.

        A range from 0 on an empty blob is refused (416): it is read again whole.
        """
        from azure.core.exceptions import ResourceModifiedError

        blob = self._blob_client(path)
        with azure_errors(path):
            try:
                stream = await blob.download_blob(
                    offset=offset, length=length, max_concurrency=1, **options
                )
            except Exception as exc:
                if offset != 0 or getattr(exc, "status_code", None) != 416:
                    raise
                # an empty blob has no byte 0 to range
                stream = await blob.download_blob(max_concurrency=1, **options)
            try:
                data = await stream.readall()
            except ResourceModifiedError:
                # past its first 32 MiB the SDK reads on with If-Match on the first reply's
                # ETag: a replaced blob is a change during the read, not a lost write
                raise Changed(f"{path} was replaced while it was read") from None
        properties = stream.properties
        # a ranged reply's size is the range's: the blob's is after the "/" of Content-Range
        total = str(properties.content_range or "").rpartition("/")[2]
        return bytes(data), properties.etag, int(total) if total.isdigit() else len(data)

    # -- reads --------------------------------------------------------------------------
    def read(self, path: str) -> bytes:
        """One Get Blob (a blob over the SDK's 32 MiB first read: ranges pinned by ETag)."""
        data: bytes = self._run(self._adownload(path))[0]
        return data

    def read_versioned(self, path: str, limit: int | None = None) -> tuple[bytes, Version]:
        """One Get Blob: the body and its ETag in one reply (ranged with `limit`)."""
        length = None if limit is None else limit + 1
        data, etag, _ = self._run(self._adownload(path, 0 if length else None, length))
        return data, etag

    def read_many(
        self, paths: list[str], limit: int | None, concurrency: int
    ) -> list[bytes | Exception]:
        """One Get Blob per path, up to `concurrency` in flight on adlfs's event loop."""
        gate = asyncio.Semaphore(max(1, concurrency))
        length = None if limit is None else limit + 1

        async def one(path: str) -> bytes | Exception:
            async with gate:
                try:
                    read = self._adownload(path, 0 if length else None, length)
                    return (await self._within(read))[0]
                except Exception as exc:  # noqa: BLE001 - returned: the caller translates it
                    return exc

        async def every() -> list[bytes | Exception]:
            return list(await asyncio.gather(*(one(path) for path in paths)))

        if not paths:
            return []
        out: list[bytes | Exception] = self._run(every(), timed=False)
        return out

    def iter_chunks(self, path: str, chunk_size: int) -> Iterator[bytes]:
        """Ranged Get Blobs, every range after the first with ``If-Match`` on its ETag."""
        return self._pinned(path, chunk_size, None)

    def _pinned(
        self, path: str, chunk_size: int, sized: Callable[[int], object] | None
    ) -> Iterator[bytes]:
        first, etag, total = self._run(self._adownload(path, 0, chunk_size))
        if sized is not None:
            sized(total)
        start = len(first)
        if first:
            yield first
        del first
        while start < total:
            length = min(chunk_size, total - start)
            try:
                chunk = self._run(self._adownload(path, start, length, **_if_match(etag)))[0]
            except FileNotFoundError:
                raise Changed(f"{path} was removed while it was read") from None
            except _Lost:
                raise Changed(f"{path} was replaced while it was read") from None
            if not chunk:
                raise Changed(f"{path} ended early while it was read")
            yield chunk
            start += len(chunk)

    def get(self, path: str, out: Download) -> None:
        """Download with the pinned ranged reads of `iter_chunks`."""
        for chunk in self._pinned(path, COPY_CHUNK, out.set_size):
            out.write(chunk)

    def kind(self, path: str) -> str | None:
        """Get Blob Properties, then one listing of ``path/`` (a blob wins over a prefix)."""
        if not self._container_blob(path)[1]:
            return "directory"  # the container itself
        try:
            self._call(path, lambda blob: blob.get_blob_properties())
        except FileNotFoundError:
            pass
        else:
            return "file"
        entries, _ = self._list_page(path, delimiter=True, limit=1)
        return "directory" if entries else None

    def listdir(self, path: str) -> dict[str, str]:
        """List Blobs of ``path/`` with a delimiter: one request per 5 000 entries."""
        prefix = self._prefix(path)

        async def every() -> dict[str, str]:
            out: dict[str, str] = {}
            async for page in self._pages(path, prefix, delimiter=True):
                _entries(page, prefix, out)
            return out

        listing: dict[str, str] = self._run(every(), timed=False)
        return listing

    def listdir_first(self, path: str) -> tuple[dict[str, str], bool]:
        """One List Blobs page of ``path/`` (up to 5 000 entries), and whether it was all."""
        return self._list_page(path, delimiter=True, limit=None)

    def _prefix(self, path: str) -> str:
        blob = self._container_blob(path)[1]
        return f"{blob.rstrip('/')}/" if blob else ""

    def _list_page(
        self, path: str, *, delimiter: bool, limit: int | None
    ) -> tuple[dict[str, str], bool]:
        prefix = self._prefix(path)

        async def first() -> tuple[dict[str, str], bool]:
            pages = self._pages(path, prefix, delimiter=delimiter, limit=limit)
            try:
                async for page in pages:
                    return _entries(page, prefix, {}), not page.continuation_token
            finally:
                await pages.aclose()
            return {}, True

        result: tuple[dict[str, str], bool] = self._run(first())
        return result

    async def _pages(
        self, path: str, prefix: str, *, delimiter: bool, limit: int | None = None
    ) -> AsyncGenerator[_Page, None]:
        """Yield the List Blobs replies of `prefix`, page by page (a request each, errors ours)."""
        container = self._container_client(path)
        if delimiter:
            paged = container.walk_blobs(
                name_starts_with=prefix, delimiter="/", results_per_page=limit
            )
        else:
            paged = container.list_blobs(name_starts_with=prefix, results_per_page=limit)
        pages = paged.by_page()
        while True:
            try:
                with azure_errors(path):
                    try:  # each page within the timeout of one request, not the whole listing
                        page = await self._within(pages.__anext__())
                    except StopAsyncIteration:
                        return
                    items = [item async for item in page]  # the page's items: no request
            except FileNotFoundError:
                return  # no such container: nothing below `path`, as below a missing prefix
            yield _Page(items, pages.continuation_token)

    def find(self, path: str) -> list[str]:
        """Every blob below ``path/`` (one named `path` is not below it; no folder markers)."""
        return [key for key in self._blobs_below(path) if not key.endswith("/")]

    def _blobs_below(self, path: str) -> list[str]:
        """Every blob below ``path/``, folder markers (``a/b/``) included: List Blobs pages.

        A marker is what a console's "new folder" (or adlfs's ``pipe_file`` of ``a/b/``)
        stores; left behind, it keeps a removed directory listed.
        """
        container = self._container_blob(path)[0]
        prefix = self._prefix(path)

        async def every() -> list[str]:
            names: list[str] = []
            async for page in self._pages(path, prefix, delimiter=False):
                names.extend(f"{container}/{item.name}" for item in page.items)
            return names

        keys: list[str] = self._run(every(), timed=False)
        return keys

    # -- writes -------------------------------------------------------------------------
    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        """One Put Blob: Azure shows the old or the new blob, never a mix."""
        self._upload(path, data)

    def write_if(self, path: str, data: bytes, version: Version, *, durable: bool = True) -> bool:
        """Put Blob with ``If-Match: <etag>``: refused (412) once the blob changed.

        `MISSING`: ``If-None-Match: *`` (`create_exclusive`).
        """
        if version is MISSING:
            return self.create_exclusive(path, data)
        try:
            self._upload(path, data, **_if_match(version))
        except (_Lost, FileNotFoundError):
            return False
        return True

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Put Blob with ``If-None-Match: *``: Azure lets exactly one such put succeed."""
        try:
            self._upload(path, data, overwrite=False)
        except _Lost:
            return False
        return True

    def rename(self, src: str, dst: str) -> None:
        """Server-side copy, then delete: readers of `dst` see the old or the new blob."""
        self._copy(src, dst)
        self.remove_file(src)

    def _copy(self, src: str, dst: str) -> None:
        """Copy Blob, waited for until it has succeeded (Azure may answer "pending").

        A failed, aborted or interrupted copy is aborted on the server, so it never lands
        after this has raised.
        """
        source_url = self._blob_client(src).url

        async def copy() -> None:
            target = self._blob_client(dst)
            with azure_errors(src):
                started = target.start_copy_from_url(source_url)
                reply = await self._within(started)
            copy_id = reply.get("copy_id")
            status = reply.get("copy_status")
            try:
                while status == "pending":  # each look within the timeout of one request
                    await asyncio.sleep(_COPY_POLL)
                    with azure_errors(dst):
                        props = await self._within(target.get_blob_properties())
                    # another write replaced dst first: our copy is not what is there
                    status = props.copy.status if props.copy.id == copy_id else "overtaken"
            except BaseException:
                with contextlib.suppress(Exception):
                    await target.abort_copy(copy_id)
                raise
            if status != "success":
                raise OSError(f"copy of {src} to {dst} ended {status}")

        self._run(copy(), timed=False)  # a large copy may take longer than one request

    def remove_file(self, path: str) -> None:
        # docstring inherited
        self._call(path, lambda blob: blob.delete_blob(**_DELETE))

    def put(self, source: Upload, path: str, *, durable: bool = True) -> None:
        """One Put Blob with the whole body up to `part_size`, blocks above.

        The blob appears only when the single put or Put Block List succeeds. The blocks of
        a failed upload stay uncommitted: readers never see them, and Azure discards them.
        Their ids are random, so two uploads of one name never commit each other's blocks.
        `source` is read in the calling thread, between requests: a progress callback that
        raises (Ctrl-C in a progress bar) raises here, never on adlfs's event loop, whose
        thread it would end.
        """
        data = source.read_full(self.part_size)
        if len(data) < self.part_size:
            self._upload(path, data)
            return
        ids, blocks = _BlockIds(), list[Any]()
        while data:
            blocks.append(self._run(self._astage(path, ids, len(blocks), data)))
            data = source.read_full(self.part_size)
        self._run(self._acommit(path, blocks))

    async def _astage(self, path: str, ids: _BlockIds, number: int, data: bytes) -> Any:
        """Put Block `number`; return its `BlobBlock` for the block list.

        Azure wants every block id of a blob of one length, uncommitted blocks of another
        client's failed upload included (kept up to a week): refused (400
        ``InvalidBlobOrBlock``), the first block is sent again with ids of their length.
        """
        from azure.storage.blob import BlobBlock

        for attempt in range(2):
            block = ids.name(number)
            try:
                with azure_errors(path):  # a stream: aiohttp warns of a large bytes body
                    body = io.BytesIO(data)
                    staged = self._blob_client(path).stage_block(block, body, length=len(data))
                    await self._within(staged)
            except OSError as exc:
                if attempt or number or "InvalidBlobOrBlock" not in str(exc):
                    raise
                ids.width = await self._foreign_width(path)
            else:
                return BlobBlock(block_id=block)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _foreign_width(self, path: str) -> int:
        """Return the length of the ids of the blocks already staged for `path` by others."""
        with azure_errors(path):
            committed, uncommitted = await self._within(
                self._blob_client(path).get_block_list("all")
            )
        widths = {len(str(block.id).encode()) for block in uncommitted or committed}
        if len(widths) != 1:
            raise OSError(f"{path}: blocks staged by another client, of lengths {widths}")
        return widths.pop()

    async def _acommit(self, path: str, blocks: list[Any]) -> None:
        """Put Block List: the blob appears, made of `blocks`."""
        with azure_errors(path):
            committed = self._blob_client(path).commit_block_list(blocks)
            await self._within(committed)

    async def _aput(self, source: Upload, path: str) -> None:
        """`put` as a coroutine, for `put_many` (the source is read on the loop's thread)."""
        data = source.read_full(self.part_size)
        if len(data) < self.part_size:
            await self._within(self._aupload(path, data))
            return
        ids, blocks = _BlockIds(), list[Any]()
        while data:
            blocks.append(await self._astage(path, ids, len(blocks), data))
            data = source.read_full(self.part_size)
        await self._acommit(path, blocks)

    def put_many(
        self,
        items: list[tuple[Callable[[], AbstractContextManager[Upload]], str]],
        concurrency: int,
        *,
        durable: bool = True,
    ) -> list[Exception | None]:
        """Up to `concurrency` uploads in flight on adlfs's event loop, each as `put`.

        `metatree.backends.aio.upload_each`, as S3's: the first failure stops the batch,
        uploads in flight finish, an interrupt cancels every request before this returns.
        """
        return upload_each(self.fs.loop, items, concurrency, self._aput)

    def remove_tree(self, path: str, trash: str | None) -> None:
        """Delete every blob below ``path/``, its top ``metadata.json`` last, then markers.

        The folder markers listed below `path` go last, deepest first: a marker keeps an
        emptied directory listed.
        """
        keys = self._blobs_below(path)
        if not keys:
            raise FileNotFoundError(path)
        top = f"{path.rstrip('/')}/metadata.json"
        self._delete_keys([k for k in keys if k != top and not k.endswith("/")])
        if top in keys:
            self._delete_keys([top])
        self._delete_markers([k for k in keys if k.endswith("/")])

    def replace_tree(self, src: str, dst: str, trash: str, old_kind: str | None) -> None:
        """As `Backend.replace_tree`, then the folder markers it left without content.

        A marker planted below the old directory would list a directory the new entry does
        not have. Costs one listing more when the old entry was a directory. (The staged
        `src` is a reserved name of this writer's, where nobody plants.)
        """
        super().replace_tree(src, dst, trash, old_kind)
        if old_kind == "directory":
            left = self._blobs_below(dst)
            self._delete_markers(
                [m for m in left if m.endswith("/") and not _holds_content(m, left)]
            )

    def _delete_markers(self, markers: list[str]) -> None:
        """Delete folder markers deepest first, each level after the one below it."""
        by_depth: dict[int, list[str]] = {}
        for marker in markers:
            by_depth.setdefault(marker.count("/"), []).append(marker)
        for depth in sorted(by_depth, reverse=True):
            self._delete_keys(by_depth[depth])

    def _delete_keys(self, keys: list[str]) -> None:
        """Delete exact blob names, up to `read_concurrency` at once; a missing one is gone.

        One Delete Blob each (a blob batch request would need the account's batch endpoint,
        which Azurite answers but not every Azure-compatible store does).
        """
        gate = asyncio.Semaphore(self.read_concurrency)

        async def one(key: str) -> None:
            async with gate:
                with contextlib.suppress(FileNotFoundError), azure_errors(key):
                    deleted = self._blob_client(key).delete_blob(**_DELETE)
                    await self._within(deleted)

        async def every() -> None:
            results = await asyncio.gather(*(one(key) for key in keys), return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

        if keys:
            self._run(every(), timed=False)


class _BlockIds:
    """The block ids of one upload: a random prefix and the block's number, `width` long.

    40 characters unless another client's blocks of this blob set another length; below 8,
    the number alone in hex (up to 16 ** width blocks).
    """

    def __init__(self) -> None:
        self.upload = secrets.token_hex(32)
        self.width = 40

    def name(self, number: int) -> str:
        if self.width >= 8:
            return f"{self.upload[: self.width - 8]}{number:08d}"
        if number >= 16**self.width:
            raise OSError(f"more blocks than block ids of {self.width} characters can name")
        return f"{number:0{self.width}x}"


def _holds_content(marker: str, names: list[str]) -> bool:
    """Whether a blob other than a folder marker lies below the folder `marker`."""
    return any(n.startswith(marker) and not n.endswith("/") for n in names)


class _Page:
    """One List Blobs reply: its items and the token of the next page (None: the last)."""

    def __init__(self, items: list[Any], continuation_token: str | None) -> None:
        self.items = items
        self.continuation_token = continuation_token


def _entries(page: _Page, prefix: str, out: dict[str, str]) -> dict[str, str]:
    """Add one listing page's entries below `prefix` to `out` (a directory wins over a blob)."""
    from azure.storage.blob.aio import BlobPrefix

    for item in page.items:
        name = item.name[len(prefix) :]
        if isinstance(item, BlobPrefix):
            name = name.rstrip("/")
            if name:
                out[name] = "directory"
        elif name and "/" not in name:
            out.setdefault(name, "file")
    return out
