"""The backend API: `Backend`, the storage primitives every filesystem provides.

`Backend` implements them with plain fsspec calls, which is right for object stores whose
single PUT is atomic; a filesystem that gets something wrong, or can do better, has a subclass
in its own module of this package (`local`, `memory`, `s3`, `webhdfs`, `generic`) holding its
adapter and its DB-lock strategy. `Capabilities` says what a backend guarantees;
docs/backends.md says how to add one. `translate_errors` maps their errors to ours.
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, ClassVar, Final

from metatree._locking import LeaseLock, LeaseStore
from metatree._names import METADATA_FILE, reserved_beside
from metatree._transfer import COPY_CHUNK
from metatree._types import Source, Version
from metatree.errors import (
    AlreadyExistsError,
    ConflictError,
    MetatreeError,
    NotFoundError,
    StorageError,
)
from metatree.warnings import MetatreeWarning

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from contextlib import AbstractContextManager

    from fsspec.spec import AbstractFileSystem

    from metatree._locking import BaseLock
    from metatree._storage import Storage
    from metatree._transfer import Download, Upload

__all__ = [
    "MISSING",
    "Backend",
    "Capabilities",
    "Changed",
    "Source",
    "Stopped",
    "Version",
    "translate_errors",
]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend guarantees; tests that need a capability skip without it.

    Every field defaults to False (nothing promised): a backend claims each guarantee it makes,
    so one added from outside cannot promise by omission what its store does not do.
    """

    atomic_exclusive_create: bool = False
    """`create_exclusive` has exactly one winner under contention."""
    real_directories: bool = False
    """Directories exist on their own (local, HDFS) rather than as key prefixes (S3)."""
    same_host_liveness: bool = False
    """A lock holder's pid can be checked on this host (the filesystem is local)."""
    exclusive_names: bool = False
    """A name cannot be a file and a directory at once (object stores allow key + prefix)."""
    data_in_memory: bool = False
    """The filesystem keeps file contents in this process's memory (fsspec's memory://)."""
    conditional_write: bool = False
    """`write_if` compares the stored version before replacing (`read_versioned` gives one)."""
    atomic_conditional_write: bool = False
    """`write_if` compares and replaces in one step: of racers replacing one version, exactly
    one wins. Without it (WebHDFS) a write may land between the compare and the replace."""
    background_io: bool = False
    """Requests run on fsspec's event-loop thread (async filesystems such as s3fs)."""


class _Missing:
    """The type of `MISSING`."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()
"""The version of a file that does not exist: ``write_if(path, data, MISSING)`` creates it
only if it is still absent (the backend's exclusive create: ``If-None-Match: *`` on S3)."""


class Changed(OSError):
    """The file changed (was replaced or removed) between two requests of one read.

    Storage turns it into `metatree.errors.ConflictError` naming the file's URL.
    """


class Stopped(Exception):
    """Not stored: another upload of the same `Backend.put_many` batch failed first."""


_VERSION_KEYS = (
    *("size", "ETag", "etag", "VersionId", "generation", "md5Hash"),  # S3, GCS
    *("mtime", "LastModified", "last_modified", "created", "ino"),  # Azure, local, memory
)


def _fingerprint(info: dict[str, object]) -> tuple[object, ...]:
    """Return what identifies one version of a file in an fsspec ``info`` dict."""
    return tuple((key, info[key]) for key in _VERSION_KEYS if key in info)


def _temp_name(path: str) -> str:
    """Return a unique temp name beside `path` (a reserved name: `reserved_name`)."""
    return reserved_beside(path.rstrip("/"), "tmp")


@contextlib.contextmanager
def translate_errors(path: str) -> Iterator[None]:
    """Turn a backend's errors into `metatree.errors` classes naming `path` (a URL).

    The one mapping of errors: `Storage` wraps every primitive in it, and a lease store wraps
    its requests in it. Backends raise the builtin `OSError` subclasses (and `Changed`);
    fsspec's WebHDFS raises `RuntimeError` for HTTP 500; requests' errors are `OSError`s.
    """
    try:
        yield
    except MetatreeError:
        raise
    except Changed as exc:
        raise ConflictError(path, f"it was replaced or removed while it was read ({exc})") from None
    except FileNotFoundError:
        raise NotFoundError(path) from None
    except FileExistsError:
        raise AlreadyExistsError(path, "something of that name is in the way") from None
    except IsADirectoryError:
        raise NotFoundError(path, "file (it is a directory)") from None
    except NotADirectoryError:
        raise NotFoundError(path, "directory (a file is in the way)") from None
    except (OSError, RuntimeError) as exc:
        # requests' errors are OSErrors; fsspec's WebHDFS raises RuntimeError for HTTP 500.
        raise StorageError(path, f"{type(exc).__name__}: {exc}") from exc


class Backend:
    """Storage primitives on any fsspec filesystem (exact where a single PUT is atomic)."""

    capabilities: ClassVar[Capabilities] = Capabilities()

    lease_store: ClassVar[type[LeaseStore] | None] = None
    """The DB lock's primitives on this backend, for the default `make_lock` (a lease)."""

    def __init__(self, fs: AbstractFileSystem) -> None:
        self.fs = fs

    def make_lock(
        self, storage: Storage, rel: str, *, ttl: float, timeout: float, **kwargs: Any
    ) -> BaseLock:
        """Return the DB lock stored at `rel`: a `LeaseLock` on `lease_store`.

        A backend whose filesystem has a better primitive (the kernel's flock on local disk)
        overrides this; one with atomic conditional writes only names its `lease_store`. One
        that names none gets the memory backend's lease, which excludes only the threads of
        this process: it works, and a `MetatreeWarning` says what it does not do.
        """
        store = self.lease_store
        if store is None:
            from metatree.backends.memory import ContentLeaseStore

            warnings.warn(
                f"no lock of its own for {type(self.fs).__name__} ({type(self).__name__}): the "
                "DB lock is exclusive only among the threads of this process (docs/backends.md: "
                "register a backend with a lease_store)",
                MetatreeWarning,
                stacklevel=5,
            )
            store = ContentLeaseStore
        return LeaseLock(store(storage, rel), ttl=ttl, timeout=timeout, **kwargs)

    def read(self, path: str) -> bytes:
        """Return a whole (small) file."""
        return bytes(self.fs.cat_file(path))

    def iter_chunks(self, path: str, chunk_size: int) -> Iterator[bytes]:
        """Yield the file in chunks of at most `chunk_size` bytes, all from one version.

        fsspec's buffered files read an object store by ranges, each of which may see a newer
        object. With no way to pin a version generically, the file's details (size, ETag,
        generation, mtime: whatever the filesystem reports) are compared before and after
        the read; a difference raises `Changed` instead of ending a stream of mixed bytes.
        """
        before = _fingerprint(self.fs.info(path))
        with self.fs.open(path, "rb") as stream:
            while chunk := stream.read(chunk_size):
                yield chunk
        self.fs.invalidate_cache(path)
        try:
            after = _fingerprint(self.fs.info(path))
        except FileNotFoundError:
            after = None
        if after != before:
            raise Changed(f"{path} was replaced while it was read")

    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        """Replace the file atomically; one PUT is atomic on object stores.

        ``durable=False`` lets a backend that flushes to disk skip the flush: the caller then
        calls `sync` on the path before anything refers to it. Remote stores ignore it (a
        completed request is durable).
        """
        self.fs.pipe_file(path, data)

    def confine(self, root: str, path: str) -> None:
        """Refuse `path` if it could lead outside `root` (local disk: through a planted link)."""

    def confine_many(self, root: str, paths: list[str]) -> list[Exception | None]:
        """`confine` each of `paths`; return, in order, what each raised (None: confined).

        For a batch of reads (`read_many`): one refused path must not hide the others. A
        backend can check what the paths share once (local disk: each directory once).
        """
        out: list[Exception | None] = []
        for path in paths:
            try:
                self.confine(root, path)
            except Exception as exc:  # noqa: BLE001 - returned: the caller translates it
                out.append(exc)
            else:
                out.append(None)
        return out

    def tree_version(self, path: str) -> object:
        """Identify the directory `path` itself, so a replacement (rename) shows; None: cannot.

        Object stores replace a directory key by key, so there is no one identity to compare.
        """
        return None

    def read_versioned(self, path: str, limit: int | None = None) -> tuple[bytes, Version]:
        """Return a whole file and its version; None: this backend has no conditional write.

        With `limit`, at most ``limit + 1`` bytes are read: enough for the caller to tell that
        the file is too large without reading a planted giant whole.
        """
        if limit is None:
            return self.read(path), None
        return bytes(self.fs.cat_file(path, start=0, end=limit + 1)), None

    read_concurrency: ClassVar[int] = 16
    """Reads `read_many` keeps in flight by default: remote stores answer many at once.

    1 where concurrency does not pay (local disk, memory: measured in benchmarks/catalog.py).
    """

    def read_many(
        self, paths: list[str], limit: int | None, concurrency: int
    ) -> list[bytes | Exception]:
        """Read many small files, up to `concurrency` at a time; each as `read_versioned`.

        Returns, in the order of `paths`, each file's bytes or the exception reading it raised
        (a missing file is its `FileNotFoundError`): one failed read must not hide the others.
        This default runs `read_versioned` in a thread pool (sequentially for 1); a backend
        with an async API overrides it (S3: one event loop, no threads).
        """

        def one(path: str) -> bytes | Exception:
            try:
                return self.read_versioned(path, limit)[0]
            except Exception as exc:  # noqa: BLE001 - returned: the caller translates it
                return exc

        if concurrency <= 1 or len(paths) <= 1:
            return [one(path) for path in paths]
        pool = ThreadPoolExecutor(min(concurrency, len(paths)))
        try:
            return list(pool.map(one, paths))
        finally:  # on an interrupt too: the reads not started yet are dropped, not waited for
            pool.shutdown(wait=True, cancel_futures=True)

    def write_if(self, path: str, data: bytes, version: Version, *, durable: bool = True) -> bool:
        """Replace the file only if it is still at `version`; return whether it was written.

        `MISSING` creates the file only if it is still absent (`create_exclusive`). Otherwise
        the generic backend cannot compare atomically: it writes unconditionally.
        """
        if version is MISSING:
            return self.create_exclusive(path, data)
        self.write_atomic(path, data, durable=durable)
        return True

    def rename(self, src: str, dst: str) -> None:
        """Move the file `src` over `dst`."""
        self.fs.mv(src, dst)

    def _copy(self, src: str, dst: str) -> None:
        """Copy one file on the server (S3 routes it through its cancelling runner)."""
        self.fs.cp_file(src, dst)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create unless present; fsspec's ``mode="create"`` is only as atomic as the backend."""
        try:
            self.fs.pipe_file(path, data, mode="create")
        except FileExistsError:
            return False
        return True

    def put(self, source: Upload, path: str, *, durable: bool = True) -> None:
        """Stream `source` into a temp object beside `path`, then move it over `path`.

        Bytes move only through `source` (`metatree._transfer.Upload`: progress and hashing
        are counted there). fsspec's buffered files upload what they hold when their context
        exits, even on an error: streaming straight to `path` replaced a file with the first
        part of a failed upload. The temp object is removed on any failure (`durable` as in
        `write_atomic`).
        """

        def write(tmp: str) -> None:
            with self._open_new(tmp) as out:
                source.copy_to(out)

        self._through_temp(path, write)

    write_concurrency: ClassVar[int] = 1
    """Uploads `put_many` keeps in flight by default: 1, one after another.

    A plug-in's `put` may not be safe in threads, so the default promises nothing more; a
    remote store that serves many at once says so (WebHDFS and generic filesystems: 8 in a
    thread pool; S3: 32 on s3fs's event loop). Local disk and memory stay at 1: their
    uploads are CPU and disk bound, and local disk batches its flushes instead.
    """

    def put_many(
        self,
        items: list[tuple[Callable[[], AbstractContextManager[Upload]], str]],
        concurrency: int,
        *,
        durable: bool = True,
    ) -> list[Exception | None]:
        """Upload many files, up to `concurrency` at a time; each as `put` (temp, then rename).

        `items` pairs an opener of each file's `Upload` (called when its turn comes) with its
        path. Returns, in order, None for each file stored or what stopped it. The first
        failure stops the batch: what has not started yet is not started (its entry is a
        `Stopped`), so a failed batch of 1 000 does not go on sending 999 files nobody will
        list. Nothing a batch started is still running when it returns or raises (an
        interrupt waits for the uploads in flight). This default runs `put` in a thread pool
        of `concurrency` (sequentially for 1); S3 overrides it with s3fs's event loop.
        """
        out: list[Exception | None] = [Stopped() for _ in items]
        stop = threading.Event()

        def one(index: int) -> None:
            if stop.is_set():
                return
            opener, path = items[index]
            try:
                with opener() as upload:
                    self.put(upload, path, durable=durable)
            except Exception as exc:  # noqa: BLE001 - returned: the caller translates it
                out[index] = exc
                stop.set()
            else:
                out[index] = None

        if concurrency <= 1 or len(items) <= 1:
            for index in range(len(items)):
                one(index)
            return out
        pool = ThreadPoolExecutor(min(concurrency, len(items)))
        try:
            list(pool.map(one, range(len(items))))
        finally:  # an interrupt: nothing new starts; the uploads in flight are waited for
            stop.set()
            pool.shutdown(wait=True, cancel_futures=True)
        return out

    def _open_new(self, path: str) -> IO[bytes]:
        """Open a new file for writing (the generic backend makes a missing parent first)."""
        out: IO[bytes] = self.fs.open(path, "wb")
        return out

    def _through_temp(self, path: str, write: Callable[[str], object]) -> None:
        """`write` a temp file beside `path`, then rename it over `path`; remove it on failure."""
        tmp = _temp_name(path)
        try:
            write(tmp)
            self.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(tmp)
            raise

    def sync(self, paths: list[str]) -> None:
        """Make files written with ``durable=False`` durable (nothing to do remotely)."""

    def get(self, path: str, out: Download) -> None:
        """Download `path` into `out` (`metatree._transfer.Download`), from one version of it.

        Goes through `iter_chunks`, whose reads are pinned to one version (fsspec's
        ``get_file`` resumes a broken download with a plain ranged GET of whatever is there).
        Bytes move only through `out`, which counts and hashes them.
        """
        for chunk in self.iter_chunks(path, COPY_CHUNK):
            out.write(chunk)

    def kind(self, path: str) -> str | None:
        """Return ``"file"``, ``"directory"`` or None, never from a listing cache."""
        self.fs.invalidate_cache(path)
        try:
            info = self.fs.info(path)
        except FileNotFoundError:
            return None
        return "directory" if info["type"] == "directory" else "file"

    def listdir(self, path: str) -> dict[str, str]:
        """Map entry names to ``"file"``/``"directory"``; a missing directory is empty."""
        self.fs.invalidate_cache(path)
        try:
            entries = self.fs.ls(path, detail=True)
        except FileNotFoundError:
            return {}
        out: dict[str, str] = {}
        base = path.rstrip("/")
        for entry in entries:
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if entry["name"].rstrip("/") == base:
                continue  # some filesystems list a file as its own only entry
            out[name] = "directory" if entry["type"] == "directory" else "file"
        return out

    def listdir_first(self, path: str) -> tuple[dict[str, str], bool]:
        """`listdir` in at most one request where it pages: the entries, and whether all came.

        This default lists whole (True): a backend whose listing pages (S3: 1 000 keys a
        request) returns its first page only.
        """
        return self.listdir(path), True

    def remove_file(self, path: str) -> None:
        """Remove one file (``rm_file`` is literal; ``rm`` would expand glob characters)."""
        self.fs.rm_file(path)

    def remove_tree(self, path: str, trash: str | None) -> None:
        """Remove a directory recursively, its top-level ``metadata.json`` last.

        Object stores cannot rename a directory, so a crash can stop this half way; the
        coordinator's orphan detection reads "an unlisted directory with metadata.json at its
        top is an orphan node", which stays true until the very last delete. `trash` (a
        reserved name beside `path`) is for backends that rename directories atomically.
        Every key is listed, then deleted by its exact name: fsspec's ``rm(recursive=True)``
        expands ``[]*?`` in `path` and would delete other trees.
        """
        keys = self.find(path)
        if not keys:
            raise FileNotFoundError(path)
        top = f"{path.rstrip('/')}/{METADATA_FILE}"
        self._delete_keys([k for k in keys if k != top])
        if top in keys:
            self._delete_keys([top])

    def _delete_keys(self, keys: list[str]) -> None:
        """Delete exact keys, one request each (S3 batches them)."""
        for key in keys:
            with contextlib.suppress(FileNotFoundError):
                self.fs.rm_file(key)

    def replace_tree(self, src: str, dst: str, trash: str, old_kind: str | None) -> None:
        """Put the complete file or directory `src` in place of `dst` (of kind `old_kind`).

        Object stores have no directory rename: every key of `src` is copied into place on the
        server, then the old keys that were not overwritten are deleted, then `src`. A reader
        may see a mix of old and new files during the copy (docs/hardening-storage.md); a
        failure leaves the old directory intact apart from already copied files, and `src`
        complete. `trash` is unused here (see `LocalBackend.replace_tree`).
        """
        below = src.rstrip("/") + "/"
        new = self.find(src)
        # a directory was staged, or a single file
        pairs = [(key, f"{dst}/{key.removeprefix(below)}") for key in new] if new else [(src, dst)]
        # a key and a prefix may share the name: keys below dst/ go, whatever `kind` said
        old = self.find(dst) if old_kind is not None else []
        for key, target in pairs:
            self._copy(key, target)
        written = {target for _, target in pairs}
        stale = [key for key in old if key not in written]
        if old_kind == "file" and new:
            stale.append(dst)
        emptied = self._emptied(src, new, dst, old, written)
        self._delete_keys([*stale, *(key for key, _ in pairs), *emptied])  # one batch on S3

    def _emptied(
        self, src: str, new: list[str], dst: str, old: list[str], written: set[str]
    ) -> list[str]:
        """Return what else `replace_tree` must delete, after the keys (S3: folder markers)."""
        return []

    def find(self, path: str) -> list[str]:
        """List every file strictly below `path`, by exact prefix.

        fsspec's ``find`` walks with ``ls`` and does not expand globs, but only names below
        ``path/`` are kept, so that no implementation's matching can reach another tree.
        """
        self.fs.invalidate_cache(path)
        prefix = path.rstrip("/") + "/"
        return [p for p in self.fs.find(path) if p.startswith(prefix)]
