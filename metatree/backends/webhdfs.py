"""WebHDFS: `WebHDFSBackend` calling the REST operations itself, and `WebHDFSLeaseStore`.

What fsspec's client gets wrong for us, and what this adapter does instead:

* It writes every file as an empty CREATE followed by APPENDs, so readers can see a file
  empty or half written. We CREATE a temporary file with the whole body in one request and
  RENAME it into place with ``renameoptions=OVERWRITE`` (HDFS ``rename2``: atomic replace).
* ``mv()`` and ``rm()`` drop the ``{"boolean": false}`` reply that means "did nothing"; we
  read it (a plain RENAME onto an existing file returns false: that is how exclusive create
  loses).
* ``exists()`` swallows every error, connection failures included; we map errors ourselves
  from the ``RemoteException`` JSON body.
* ``open("xb")`` does not give an exclusive create.
* Its requests have no timeout: a server that never answers hung a writer forever, whatever
  its ``lock_timeout``. Every request here has a connect and a read timeout (`timeout`).
* Its reads are ranged requests that may each see a newer file. `iter_chunks` streams one
  OPEN and compares the file status (id, length, modification time) taken after the first
  chunk with the one at the end: a replacement raises `Changed` (see
  docs/hardening-transfers.md for the window that remains on a real cluster).
* HDFS has no conditional write: `write_if` re-reads the file immediately before its RENAME
  (one round trip of window, measured in docs/hardening-transfers.md).

The DB lock's lease uses RENAME as the atomic primitive (HDFS has no conditional write):

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
import itertools
import os
import posixpath
import tempfile
import time
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import quote

import requests

from metatree._locking import LeaseStore
from metatree._locking._info import MAX_BODY, directory_error
from metatree._names import reserved_name
from metatree.backends.base import MISSING, Backend, Capabilities, Changed, translate_errors

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from fsspec.spec import AbstractFileSystem

    from metatree._transfer import Download, Upload
    from metatree._types import Version

__all__ = ["WebHDFSBackend", "WebHDFSLeaseStore"]

_ERRORS: dict[str, type[OSError]] = {
    "FileNotFoundException": FileNotFoundError,
    "FileAlreadyExistsException": FileExistsError,
    "AccessControlException": PermissionError,
    "SecurityException": PermissionError,
    "ParentNotDirectoryException": NotADirectoryError,  # a file where a directory is needed
}


_ATTEMPTS = 3
_BACKOFF = 0.05
_DISCARD_POLLS = 5  # about 0.75 s in all: see `WebHDFSBackend._discard_aborted`
_IDEMPOTENT = frozenset({"OPEN", "GETFILESTATUS", "LISTSTATUS", "DELETE"})


class _ServerError(OSError):
    """An HTTP 5xx answer: the server failed, the request may be retried if idempotent."""


class WebHDFSLeaseStore(LeaseStore):
    """The lease on WebHDFS; the version is the body itself."""

    atomic_replace = False

    @property
    def _rest(self) -> WebHDFSBackend:
        return cast("WebHDFSBackend", self.storage.backend)

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

    def _not_a_directory(self, exc: OSError) -> None:
        """Turn a failure caused by a ``.lock`` directory into an error that says so."""
        try:
            kind = self._rest._request("GETFILESTATUS", "GET", self._path).json()
        except OSError:
            return  # the original failure stands
        if kind.get("FileStatus", {}).get("type") == "DIRECTORY":
            raise directory_error(self.storage.url_of(self.rel)) from exc

    def create(self, body: bytes) -> Version | None:
        """CREATE a temp file, then ``rename2`` (no overwrite): an existing lock = lost."""

        def publish(tmp: str) -> bool:
            try:
                return self._rest._rename_new(tmp, self._path)
            except OSError as exc:
                self._not_a_directory(exc)
                raise

        with translate_errors(self.storage.url_of(self.rel)):
            won = self._rest._via_temp(self._path, body, publish)
        return body if won else None

    def read(self) -> tuple[bytes, Version] | None:
        """OPEN the lock object (a bounded prefix)."""
        with translate_errors(self.storage.url_of(self.rel)):
            body = self._read_path(self._path)
        return None if body is None else (body, body)

    def _take(self, version: Version) -> str | None:
        """Move the lock to a tomb if it is `version`; return the tomb, None if it was not."""
        tomb = posixpath.join(posixpath.dirname(self._path), reserved_name("tomb"))
        if not self._rest._rename_new(self._path, tomb):
            return None  # gone, or another breaker moved it first
        if self._read_path(tomb) == version:
            return tomb
        if not self._rest._rename_new(tomb, self._path):
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


class WebHDFSBackend(Backend):
    """WebHDFS: CREATE of a temp file + RENAME, whose ``false`` reply means we lost."""

    capabilities = Capabilities(
        atomic_exclusive_create=True,
        exclusive_names=True,
        real_directories=True,
        conditional_write=True,
    )
    lease_store = WebHDFSLeaseStore
    write_concurrency: ClassVar[int] = 8
    """Uploads in flight: WebHDFS has no async API, so a thread pool (`Backend.put_many`)."""
    timeout: ClassVar[float] = 30.0
    """Seconds to wait for a connection, and for each read of a reply (requests' timeout)."""

    def __init__(self, fs: AbstractFileSystem) -> None:
        super().__init__(fs)
        self._pid = os.getpid()
        self._child_sessions: dict[int, requests.Session] = {}

    # -- REST plumbing ------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return str(self.fs._apply_proxy(self.fs.url + quote(path, safe="/=")))

    def _request(
        self,
        op: str,
        method: str,
        path: str,
        *,
        data: Any = None,
        redirect: bool = True,
        stream: bool = False,
        **params: Any,
    ) -> requests.Response:
        args = {**params, **self.fs.pars, "op": op}
        # Reads and DELETE are idempotent: a 5xx or a dropped connection is retried. Writes
        # are not retried here: a RENAME whose reply was lost may have happened.
        attempts = _ATTEMPTS if op in _IDEMPOTENT else 1
        for attempt in range(1, attempts + 1):
            try:
                response = self._send(
                    method,
                    self._url(path),
                    params=args,
                    data=data,
                    allow_redirects=redirect,
                    stream=stream,
                )
            except requests.ConnectionError:
                if attempt == attempts:
                    raise
            else:
                if response.status_code < 500 or attempt == attempts:
                    self._check(response, f"{op} {path}")
                    return response
                response.close()
            time.sleep(_BACKOFF * 2 ** (attempt - 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _session(self) -> requests.Session:
        """Return the HTTP session of this process.

        A child forked from a process that used the tree inherits fsspec's session with its
        pooled connections: two processes reading replies off one socket take each other's
        answers (a lease proof read from another process's reply proves nothing). A child
        gets a fresh session with the same settings.
        """
        session: requests.Session = self.fs.session
        if self._pid == os.getpid():
            return session
        own = self._child_sessions.get(os.getpid())
        if own is None:
            own = requests.Session()
            own.auth, own.verify, own.cert = session.auth, session.verify, session.cert
            own.headers.update(session.headers)
            own.proxies.update(session.proxies)
            self._child_sessions = {os.getpid(): own}
        return own

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """One HTTP request with a bounded wait; a timeout becomes a `TimeoutError` (OSError)."""
        try:
            response: requests.Response = self._session().request(
                method, url, timeout=self.timeout, **kwargs
            )
        except requests.ConnectTimeout:
            raise  # a ConnectionError: retried like one where the operation is idempotent
        except requests.Timeout as exc:
            what = f"{method} {url.split('?', 1)[0]}"
            raise TimeoutError(f"{what}: no answer within {self.timeout:g}s ({exc})") from None
        return response

    def _follow(self, response: requests.Response, method: str, **kwargs: Any) -> requests.Response:
        """Send the second step of CREATE/OPEN to the data node the name node chose."""
        redirect = response.headers.get("Location")
        if not redirect:
            response.close()
            raise _ServerError(f"{method}: the name node's answer has no Location to follow")
        location = self.fs._apply_proxy(redirect)
        response.close()
        second = self._send(method, location, **kwargs)
        self._check(second, f"{method} {location}")
        return second

    @staticmethod
    def _check(response: requests.Response, what: str) -> None:
        if response.status_code < 400:
            return
        try:
            remote = response.json()["RemoteException"]
            exception, message = remote["exception"], remote["message"]
        except (ValueError, KeyError, TypeError):
            exception, message = "HTTP", response.text[:200]
        response.close()
        error = _ERRORS.get(exception, _ServerError if response.status_code >= 500 else OSError)
        raise error(f"{what}: HTTP {response.status_code} {exception}: {message}")

    def _create(self, path: str, body: Any, *, overwrite: bool) -> None:
        """CREATE in two steps; a bytes body to a temp path (overwrite) is safe to retry."""
        attempts = _ATTEMPTS if overwrite and isinstance(body, bytes) else 1
        for attempt in range(1, attempts + 1):
            try:
                first = self._request(
                    "CREATE", "PUT", path, redirect=False, overwrite=str(overwrite).lower()
                )
                headers = {"content-type": "application/octet-stream"}
                self._follow(first, "PUT", data=body, headers=headers).close()
            except NotADirectoryError as exc:
                # creating below a file: for a writer, the file's name is taken
                raise FileExistsError(str(exc)) from None
            except (requests.ConnectionError, _ServerError):
                if attempt == attempts:
                    raise
                time.sleep(_BACKOFF * 2 ** (attempt - 1))
            else:
                return

    def _rename(self, src: str, dst: str) -> bool:
        """``rename2`` with OVERWRITE (atomic replace of a file); True: it is done."""
        self._request("RENAME", "PUT", src, destination=dst, renameoptions="OVERWRITE").close()
        return True

    def _temp_beside(self, path: str) -> str:
        return posixpath.join(posixpath.dirname(path), reserved_name("tmp"))

    def _via_temp(self, path: str, data: bytes, publish: Callable[[str], bool]) -> bool:
        """CREATE a temp file beside `path` holding `data`, then `publish` it (a RENAME).

        The body is complete before it gets its name (CREATE alone would show it empty
        first). The temp file is deleted unless `publish` returns True, on any failure too.
        """
        tmp = self._temp_beside(path)
        published = False
        try:
            self._create(tmp, data, overwrite=True)
            published = publish(tmp)
        finally:
            if not published:
                with contextlib.suppress(OSError):
                    self._delete(tmp, recursive=False)
        return published

    def _delete(self, path: str, *, recursive: bool) -> None:
        reply = self._request("DELETE", "DELETE", path, recursive=str(recursive).lower())
        if not reply.json().get("boolean"):
            raise FileNotFoundError(f"DELETE {path}: nothing there")

    # -- primitives ---------------------------------------------------------------------
    def read(self, path: str) -> bytes:
        """OPEN, following the redirect to the data node."""
        return bytes(self._request("OPEN", "GET", path).content)

    def _status(self, path: str) -> tuple[object, ...]:
        """Return the file's id (new on each replacement), length and modification time."""
        status = self._request("GETFILESTATUS", "GET", path).json()["FileStatus"]
        return status.get("fileId"), status["length"], status["modificationTime"]

    def iter_chunks(self, path: str, chunk_size: int) -> Iterator[bytes]:
        """Stream one OPEN; for more than one chunk, check the file status did not change.

        A file of one chunk is one request. Otherwise the status is taken once the second
        chunk has arrived and again at the end: a difference, or a length other than what was
        read, raises `Changed` after the last chunk (the stream ends with an error rather than
        quietly mixing versions).
        """
        return self._pinned(path, chunk_size, None)

    def _pinned(
        self, path: str, chunk_size: int, sized: Callable[[int], object] | None
    ) -> Iterator[bytes]:
        with self._request("OPEN", "GET", path, stream=True) as response:
            length = response.headers.get("Content-Length")
            if sized is not None and length is not None:
                sized(int(length))
            chunks = iter(response.iter_content(chunk_size))
            first = next(chunks, b"")
            second = next(chunks, b"")
            if not second:
                if first:
                    yield first
                return
            pinned = self._status_or_none(path)
            seen = 0
            for chunk in itertools.chain((first, second), chunks):
                seen += len(chunk)
                yield chunk
        if pinned is None or self._status_or_none(path) != pinned or seen != pinned[1]:
            raise Changed(f"{path} was replaced or removed while it was read")

    def _status_or_none(self, path: str) -> tuple[object, ...] | None:
        try:
            return self._status(path)
        except FileNotFoundError:
            return None

    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        """CREATE a temp file with the whole body, then RENAME with OVERWRITE (rename2)."""
        self._via_temp(path, data, lambda tmp: self._rename(tmp, path))

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """CREATE a complete temp file, then ``rename2`` without overwrite: an existing = lost.

        HDFS renames atomically in the name node and refuses an existing destination, and the
        body is complete before the file appears (CREATE alone shows it empty first). A plain
        RENAME onto a directory would move the file *into* it and answer true.
        """

        def publish(tmp: str) -> bool:
            try:
                return self._rename_new(tmp, path)
            except OSError:
                # HDFS refuses a file over a directory with a bare IOException
                if self.kind(path) == "directory":
                    return False
                raise

        return self._via_temp(path, data, publish)

    def put(self, source: Upload, path: str, *, durable: bool = True) -> None:
        """Stream into a temp file in one CREATE, then RENAME with OVERWRITE.

        requests reads the body from `source` (its ``len`` is the Content-Length: never
        chunked encoding); an unsized stream is spooled to disk first, never to memory.
        """
        with contextlib.ExitStack() as stack:
            body: Any = source
            if source.size is None:
                spool = stack.enter_context(tempfile.TemporaryFile())
                source.copy_to(spool)
                spool.seek(0)
                body = spool  # requests takes its length from the descriptor
            tmp = self._temp_beside(path)
            try:
                self._create(tmp, body, overwrite=True)
                self._rename(tmp, path)
            except BaseException:
                self._discard_aborted(tmp)
                raise

    def _discard_aborted(self, tmp: str) -> None:
        """Delete the temp file of an upload cut off mid-body, also if it appears late.

        When the client drops the connection mid-body, the server may still be closing the
        file (HDFS keeps it under construction until its lease recovers it); a DELETE sent at
        once can find nothing and the file appear after. A few bounded polls catch that;
        what remains is a reserved, invisible temp name (`fsck` territory, never data).
        """
        for attempt in range(_DISCARD_POLLS):
            try:
                self._delete(tmp, recursive=False)
            except FileNotFoundError:
                time.sleep(_BACKOFF * (attempt + 1))
                continue
            except (OSError, requests.RequestException):
                return
            return

    def get(self, path: str, out: Download) -> None:
        """Download through `iter_chunks`: one streamed OPEN, checked against the status."""
        for chunk in self._pinned(path, 2**20, out.set_size):
            out.write(chunk)

    def read_versioned(self, path: str, limit: int | None = None) -> tuple[bytes, Version]:
        """One OPEN; the version is the content itself (as S3's ETag is a hash of it).

        Metadata files are small, so comparing bytes costs nothing, and a read stays one
        request (the file status would be a second one on every metadata read).
        """
        if limit is None:
            data = self.read(path)
        else:
            data = bytes(self._request("OPEN", "GET", path, offset=0, length=limit + 1).content)
        return data, data

    def write_if(self, path: str, data: bytes, version: Version, *, durable: bool = True) -> bool:
        """CREATE a temp file, re-read the file and compare, then RENAME with OVERWRITE.

        HDFS cannot make the RENAME conditional: a write landing between the re-read's answer
        and the RENAME is overwritten (the window is one request, measured in
        docs/hardening-transfers.md). A replacement by identical bytes passes, as with S3's
        ETag: the stale writer's result is then as valid as a fresh one. `MISSING` is
        `create_exclusive` (a plain RENAME, atomic in the name node).
        """
        if version is MISSING:
            return self.create_exclusive(path, data)

        def publish(tmp: str) -> bool:
            try:
                current: bytes | None = self.read(path)
            except FileNotFoundError:
                current = None
            return current == version and self._rename(tmp, path)

        return self._via_temp(path, data, publish)

    def rename(self, src: str, dst: str) -> None:
        """RENAME with ``renameoptions=OVERWRITE`` (HDFS ``rename2``: atomic replace)."""
        self._rename(src, dst)

    def tree_version(self, path: str) -> object:
        """Return the HDFS fileId and mtime: `replace_tree` renames a new directory in."""
        status = self._request("GETFILESTATUS", "GET", path).json()["FileStatus"]
        return status.get("fileId"), status.get("modificationTime")

    def kind(self, path: str) -> str | None:
        # docstring inherited
        try:
            status = self._request("GETFILESTATUS", "GET", path).json()["FileStatus"]
        except FileNotFoundError:
            return None
        return "directory" if status["type"] == "DIRECTORY" else "file"

    def listdir(self, path: str) -> dict[str, str]:
        # docstring inherited
        try:
            reply = self._request("LISTSTATUS", "GET", path).json()
        except FileNotFoundError:
            return {}
        statuses = reply["FileStatuses"]["FileStatus"]
        return {
            s["pathSuffix"]: "directory" if s["type"] == "DIRECTORY" else "file"
            for s in statuses
            if s["pathSuffix"]  # a file lists itself with an empty suffix
        }

    def remove_file(self, path: str) -> None:
        # docstring inherited
        self._delete(path, recursive=False)

    def remove_tree(self, path: str, trash: str | None) -> None:
        """RENAME the directory to `trash` (atomic in the name node), then DELETE it there.

        A crash in between leaves a reserved ``.metatree.trash.*`` name, never a half-deleted
        node under its own name.
        """
        if trash is not None:
            if not self._rename_new(path, trash):
                raise FileNotFoundError(f"RENAME {path}: nothing there")
            path = trash
        self._delete_tree(path)

    def _delete_tree(self, path: str) -> None:
        """DELETE recursively a directory that no name of the tree refers to any more."""
        self._delete(path, recursive=True)

    def replace_tree(self, src: str, dst: str, trash: str, old_kind: str | None) -> None:
        """RENAME the old `dst` to `trash`, `src` into place, then DELETE the trash.

        RENAME is not idempotent, so a failed or unanswered one is judged by what is there
        afterwards; whenever `src` did not make it into place, the old entry goes back.
        """
        if old_kind is not None and not self._renamed(dst, trash):
            raise FileNotFoundError(f"RENAME {dst}: nothing there")
        try:
            placed = self._renamed(src, dst)
        except BaseException:
            self._put_back(trash, dst, old_kind)
            raise
        if not placed:
            self._put_back(trash, dst, old_kind)
            raise FileExistsError(f"RENAME {src} -> {dst}: the destination appeared")
        if old_kind is not None:
            with contextlib.suppress(OSError, requests.RequestException):
                self._delete_tree(trash)  # a leftover trash is hidden; the swap is done

    def _renamed(self, src: str, dst: str) -> bool:
        """`_rename_new`, and when its answer is lost, whether it happened after all."""
        try:
            return self._rename_new(src, dst)
        except (OSError, requests.RequestException):
            if self.kind(src) is None and self.kind(dst) is not None:
                return True  # it happened: the reply was lost
            raise

    def _put_back(self, trash: str, dst: str, old_kind: str | None) -> None:
        if old_kind is not None:
            with contextlib.suppress(OSError, requests.RequestException):
                self._rename_new(trash, dst)

    def _rename_new(self, src: str, dst: str) -> bool:
        """rename2 without OVERWRITE: a plain RENAME onto a directory would move `src` into it."""
        try:
            self._request("RENAME", "PUT", src, destination=dst, renameoptions="NONE").close()
        except (FileNotFoundError, FileExistsError):
            return False
        return True

    def find(self, path: str) -> list[str]:
        # docstring inherited
        files: list[str] = []
        stack = [path.rstrip("/") or "/"]
        while stack:
            folder = stack.pop()
            for name, kind in sorted(self.listdir(folder).items()):
                full = posixpath.join(folder, name)
                (stack if kind == "directory" else files).append(full)
        return sorted(files)
