"""Storage: an fsspec filesystem plus the database root; every primitive's errors mapped here.

`Storage` offers the few primitives the database is built on (read, atomic write, exclusive
create, streamed put/get, listing, removal). Paths given to it are ``/``-joined and relative
to the root (``""`` is the root). What differs between backends (atomic replace, listing
caches, WebHDFS's CREATE+APPEND writes) lives in `metatree.backends`, picked by filesystem
class; this module stays backend-neutral and runs every primitive inside
`metatree.backends.translate_errors`, the one mapping of errors.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from typing import TYPE_CHECKING, Any

import fsspec
from fsspec.callbacks import DEFAULT_CALLBACK, Callback
from fsspec.implementations.local import LocalFileSystem

from metatree._localfiles import local_within, real_local
from metatree._names import reserved_beside
from metatree._paths import GLOB
from metatree._transfer import Moved, Transfer
from metatree.backends import Backend, backend_for, translate_errors
from metatree.backends.base import Stopped
from metatree.errors import (
    AlreadyExistsError,
    ConflictError,
    DatabaseError,
    MetatreeError,
    NotFoundError,
    PathError,
    StorageError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from contextlib import AbstractContextManager

    from fsspec.spec import AbstractFileSystem

    from metatree._transfer import Upload
    from metatree._types import Source, Version
    from metatree.backends import Capabilities

__all__ = ["Storage", "as_storage"]

CHUNK_SIZE = 8 * 2**20
"""Streaming chunk: one ranged GET per chunk on object stores, bounded memory everywhere."""


class Storage:
    """An fsspec filesystem rooted at `root` (a path in the filesystem's own form).

    Parameters
    ----------
    fs
        Any fsspec filesystem.
    root
        The database root inside `fs`, without protocol (``"/tmp/repo"``, ``"bucket/db"``).
    """

    def __init__(
        self, fs: AbstractFileSystem, root: str, backend: type[Backend] | None = None
    ) -> None:
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.backend: Backend = backend_for(fs) if backend is None else backend(fs)
        # fsspec's own local filesystem on POSIX names an absolute path "file://" + path
        # (`unstrip_protocol`, 5 us a call, several calls a put): said here once
        self._file_url = type(fs) is LocalFileSystem and os.sep == "/" and self.root.startswith("/")

    def __repr__(self) -> str:
        return f"Storage({self.url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Storage) and (self.fs, self.root) == (other.fs, other.root)

    def __hash__(self) -> int:
        return hash((type(self.fs), self.root))

    def __reduce__(self) -> tuple[type[Storage], tuple[AbstractFileSystem, str, type[Backend]]]:
        """Pickle the backend's class too: another process may not have registered it."""
        return type(self), (self.fs, self.root, type(self.backend))

    @property
    def capabilities(self) -> Capabilities:
        """What the backend can do atomically (see `metatree.backends.Capabilities`)."""
        return self.backend.capabilities

    @property
    def url(self) -> str:
        """The root as a URL (``file:///tmp/repo``, ``s3://bucket/db``, ...)."""
        return self.url_of("")

    def url_of(self, rel: str) -> str:
        """Return the URL of `rel`, for users (`Node.location`) and messages.

        Naming is not access: no confinement check here (`abs` makes it before any I/O), so
        a catalog of 100 000 nodes does not ``lstat`` every path to print it.
        """
        path = f"{self.root.rstrip('/')}/{rel}" if rel else self.root
        if self._file_url:
            return f"file://{path.rstrip('/') or '/'}"
        return str(self.fs.unstrip_protocol(path))

    def refuse_local(self, local: str | os.PathLike[str] | None, shown: str) -> None:
        """Refuse a local download target inside this database's root (local disk only).

        A file downloaded there would be a file metatree never stored: unrecorded in a node,
        or a stray at the root. Compared where the paths really are (links resolved, and in
        the letter case the disk compares), segment by segment.
        """
        if local is None or not isinstance(self.fs, LocalFileSystem):
            return
        if local_within(real_local(local), real_local(self.root)):
            raise PathError(shown, f"{os.fspath(local)!r} is inside the database's root")

    def abs(self, rel: str) -> str:
        """Return `rel` as a path of the filesystem."""
        if not rel:
            return self.root
        path = f"{self.root.rstrip('/')}/{rel}"
        self.backend.confine(self.root, path)
        return path

    # -- primitives ---------------------------------------------------------------------
    def read_bytes(self, rel: str) -> bytes:
        """Return the whole content of the file `rel` in one request where possible."""
        with translate_errors(self.url_of(rel)):
            return self.backend.read(self.abs(rel))

    def iter_bytes(self, rel: str, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        """Stream the file `rel`; the first chunk is fetched now, so a missing file raises here."""
        path = self.abs(rel)
        url = self.url_of(rel)
        with translate_errors(url):
            chunks = self.backend.iter_chunks(path, chunk_size)
            first = next(chunks, b"")
        return self._rest(first, chunks, url)

    @staticmethod
    def _rest(first: bytes, chunks: Iterator[bytes], url: str) -> Iterator[bytes]:
        if first:
            yield first
        del first  # do not hold the first chunk for the whole iteration
        with translate_errors(url):
            yield from chunks

    def read_versioned(self, rel: str, limit: int | None = None) -> tuple[bytes, Version]:
        """Return the whole file `rel` and an opaque version of it, in one request where possible.

        The version (an ETag on S3, ...) is what `write_atomic`'s `expect` compares with; it is
        None where the backend has no conditional write (the write is then unconditional).
        With `limit`, at most ``limit + 1`` bytes are read (more than `limit`: too large).
        """
        with translate_errors(self.url_of(rel)):
            return self.backend.read_versioned(self.abs(rel), limit)

    def read_many(
        self, rels: list[str], limit: int | None = None, concurrency: int | None = None
    ) -> list[bytes | MetatreeError]:
        """Read many small files concurrently (`Backend.read_many`); each a bytes or an error.

        In the order of `rels`. A file that cannot be read gives its metatree error (a
        missing one `NotFoundError`, one behind a planted link `PathError`) in its place; one
        failure never hides the others' results. `concurrency` defaults to the backend's
        `read_concurrency`. Confinement is checked once per directory of the batch.
        """
        width = self.backend.read_concurrency if concurrency is None else concurrency
        out: dict[int, bytes | MetatreeError] = {}
        todo: list[int] = []
        root = self.root.rstrip("/")
        refused = self.backend.confine_many(self.root, [f"{root}/{rel}" for rel in rels])
        for i, (rel, why) in enumerate(zip(rels, refused, strict=True)):
            if why is None:
                todo.append(i)
            else:
                out[i] = self._error(rel, why)
        paths = [f"{root}/{rels[i]}" for i in todo]
        with translate_errors(self.url):  # the batch itself failed (a timeout, a closed loop)
            answers = self.backend.read_many(paths, limit, width)
        for i, got in zip(todo, answers, strict=True):
            out[i] = self._error(rels[i], got) if isinstance(got, Exception) else got
        return [out[i] for i in range(len(rels))]

    def _error(self, rel: str, exc: Exception) -> MetatreeError:
        """Return `exc` as the metatree error naming `rel`; raise what is not a storage error."""
        try:
            with translate_errors(self.url_of(rel)):
                raise exc
        except MetatreeError as error:
            return error

    def write_atomic(
        self, rel: str, data: bytes, *, durable: bool = True, expect: Version = None
    ) -> None:
        """Replace `rel` with `data` so that readers see the old or the new bytes, never a mix.

        ``durable=False`` may defer flushing to disk until `sync` (see `Backend.write_atomic`).
        With `expect` (a version from `read_versioned`), the write happens only if the file is
        still at that version, else `ConflictError` and nothing is written: this fences a
        writer whose lease was lost after its read. ``expect=MISSING``
        (`metatree.backends.MISSING`) writes only if the file does not exist.
        """
        with translate_errors(self.url_of(rel)):
            if expect is None:
                self.backend.write_atomic(self.abs(rel), data, durable=durable)
            elif not self.backend.write_if(self.abs(rel), data, expect, durable=durable):
                raise ConflictError(self.url_of(rel), "it was rewritten since it was read")

    def tree_version(self, rel: str) -> object:
        """Return an identity of the directory `rel` that a replacement changes (or None)."""
        with translate_errors(self.url_of(rel)):
            return self.backend.tree_version(self.abs(rel))

    def rename(self, src: str, dst: str) -> None:
        """Move the file `src` over `dst` (replacing it); readers see the old or the new `dst`."""
        with translate_errors(self.url_of(src)):
            self.backend.rename(self.abs(src), self.abs(dst))

    def create_exclusive(self, rel: str, data: bytes) -> bool:
        """Create `rel` holding `data` unless it exists; return whether we created it.

        Uses the backend's atomic primitive: of many concurrent callers exactly one wins.
        """
        with translate_errors(self.url_of(rel)):
            return self.backend.create_exclusive(self.abs(rel), data)

    def put(
        self,
        source: Source,
        rel: str,
        callback: Callback = DEFAULT_CALLBACK,
        *,
        durable: bool = True,
        digest: str | None = None,
    ) -> Moved:
        """Stream `source` (local path, bytes or binary file object) into the file `rel`.

        Every byte passes through one `Transfer` (progress on `callback`; with `digest`, a
        hashlib algorithm such as ``"sha256"``, the bytes are hashed as they pass). Returns
        the size and digest of what was stored.
        """
        with (
            Transfer(callback, digest) as transfer,
            translate_errors(self.url_of(rel)),
            transfer.source(source) as upload,
        ):
            self.backend.put(upload, self.abs(rel), durable=durable)
        return transfer.result()

    def put_many(
        self,
        items: Sequence[tuple[Source, str]],
        *,
        durable: bool = True,
        digest: str | None = None,
        concurrency: int | None = None,
    ) -> list[Moved]:
        """Store many sources (bytes or local paths) at the files `rels`, concurrently.

        Up to `concurrency` at a time (the backend's `write_concurrency` when None; see
        `Backend.put_many`), each exactly as `put` stores it (no progress callback: the
        bytes of several files interleave). Returns each file's size and digest, in order.
        The first failure stops the batch and is raised as the metatree error naming its
        file (or its local source); files already stored stay, for the caller's rollback.
        """
        width = self.backend.write_concurrency if concurrency is None else concurrency
        moved: list[Moved | None] = [None] * len(items)

        def opener(index: int, source: Source) -> Callable[[], AbstractContextManager[Upload]]:
            @contextlib.contextmanager
            def open_source() -> Iterator[Upload]:
                with Transfer(DEFAULT_CALLBACK, digest) as transfer, transfer.source(source) as up:
                    yield up
                moved[index] = transfer.result()

            return open_source

        jobs = [(opener(i, source), self.abs(rel)) for i, (source, rel) in enumerate(items)]
        with translate_errors(self.url):  # the batch itself failed (a closed loop)
            answers = self.backend.put_many(jobs, width, durable=durable)
        for (_, rel), got in zip(items, answers, strict=True):
            if got is not None and not isinstance(got, Stopped):  # the first real cause
                with translate_errors(self.url_of(rel)):
                    raise got
        done = [m for m in moved if m is not None]
        if len(done) != len(items):  # a plug-in stopped without saying why
            raise StorageError(self.url, "a batch of uploads stopped without an error")
        return done

    def sync(self, rels: list[str]) -> None:
        """Make the files `rels`, written with ``durable=False``, durable."""
        if not rels:
            return
        root = self.root.rstrip("/")
        paths = [f"{root}/{rel}" for rel in rels]
        # confined together: a directory the files share is checked once (`confine_many`)
        for rel, why in zip(rels, self.backend.confine_many(self.root, paths), strict=True):
            if why is not None:
                raise self._error(rel, why)
        with translate_errors(self.url_of(rels[0])):
            self.backend.sync(paths)

    def get(
        self,
        rel: str,
        local_path: str,
        callback: Callback = DEFAULT_CALLBACK,
        *,
        digest: str | None = None,
        check: Callable[[Moved], object] | None = None,
        data: bytes | None = None,
    ) -> Moved:
        """Download the file `rel` to `local_path` (a partial download never shows there).

        The bytes go to a temp file created exclusively (``O_EXCL``, a fresh random name)
        beside `local_path`, moved to it on success and removed on failure. A fixed side name
        let a planted symlink redirect the download, and deleted a user's file of that name.
        The move never replaces something that appeared at `local_path` meanwhile
        (`AlreadyExistsError`). A failure to write the local file (a full disk) names it.
        Progress and `digest` as in `put`; `check` is given what was downloaded before the
        move, and an exception it raises (`IntegrityError`) leaves nothing at `local_path`.
        `data` is the whole file when it was read already (read ahead: no request).
        """
        fd, tmp = _exclusive_temp(local_path)
        try:
            with (
                open(fd, "wb") as raw,
                Transfer(callback, digest) as transfer,
                translate_errors(self.url_of(rel)),
            ):
                download = transfer.sink(raw, local_path)
                if data is None:
                    self.backend.get(self.abs(rel), download)
                else:
                    download.set_size(len(data))
                    download.write(data)
                download.finish()
            if check is not None:
                check(transfer.result())
            _move_new(tmp, local_path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return transfer.result()

    def kind(self, rel: str) -> str | None:
        """Return ``"file"``, ``"directory"`` or None when nothing is at `rel` (no cache)."""
        with translate_errors(self.url_of(rel)):
            return self.backend.kind(self.abs(rel))

    def listdir(self, rel: str) -> dict[str, str]:
        """Map each entry of the directory `rel` to its kind, bypassing listing caches."""
        with translate_errors(self.url_of(rel)):
            return self.backend.listdir(self.abs(rel))

    def list_first(self, rel: str) -> tuple[dict[str, str], bool]:
        """List the directory `rel` in at most one request: its entries and whether all came.

        For a listing read ahead (`metatree._core.resolve.Ahead`): a huge directory costs
        one request, and a partial answer is not used (the caller lists again if it needs to).
        """
        with translate_errors(self.url_of(rel)):
            return self.backend.listdir_first(self.abs(rel))

    def remove_file(self, rel: str) -> None:
        """Remove the file `rel`; a missing file is not an error (removal is idempotent)."""
        with translate_errors(self.url_of(rel)), contextlib.suppress(FileNotFoundError):
            self.backend.remove_file(self.abs(rel))

    def remove_tree(self, rel: str) -> None:
        """Remove the directory `rel` and everything below it, if it exists.

        Where directories rename atomically (local disk, WebHDFS) it is first renamed to a
        reserved trash name beside it; on object stores its top-level metadata.json goes last
        (see `Backend.remove_tree`). The root itself (``""``) is deleted in place.
        """
        trash = self.abs(reserved_beside(rel, "trash")) if rel else None
        with translate_errors(self.url_of(rel)), contextlib.suppress(FileNotFoundError):
            self.backend.remove_tree(self.abs(rel), trash)

    def replace_tree(self, src: str, dst: str, old_kind: str | None) -> None:
        """Put the complete (staged) file or directory `src` in place of `dst`.

        `old_kind` is what `dst` holds now (`kind`). Atomic where directories rename (the old
        one goes to a trash name first and is deleted last); a server-side copy on object
        stores (see `Backend.replace_tree`).
        """
        trash = self.abs(reserved_beside(dst, "trash"))
        with translate_errors(self.url_of(dst)):
            self.backend.replace_tree(self.abs(src), self.abs(dst), trash, old_kind)

    def walk_files(self, rel: str) -> Iterator[str]:
        """Yield the files below the directory `rel`, as paths relative to `rel`.

        Only names below ``rel/`` are yielded (listed by exact prefix, never by pattern).
        They are stored data: a caller mapping them to local paths checks every segment.
        """
        base = self.abs(rel).rstrip("/") + "/"
        with translate_errors(self.url_of(rel)):
            for path in self.backend.find(self.abs(rel)):
                if path.startswith(base) and len(path) > len(base):
                    yield path[len(base) :]


def _move_new(tmp: str, local_path: str) -> None:
    """Move the finished download to `local_path`, never over an existing name.

    ``link(2)`` fails if the name exists (a check then ``rename`` would race); filesystems
    without hard links get the check and the rename.
    """
    try:
        os.link(tmp, local_path, follow_symlinks=False)
    except FileExistsError:
        raise AlreadyExistsError(local_path, "get will not overwrite a local file") from None
    except OSError as exc:
        if exc.errno not in {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}:
            raise StorageError(local_path, f"local filesystem: {exc}") from None
        if os.path.lexists(local_path):
            raise AlreadyExistsError(local_path, "get will not overwrite a local file") from None
        with translate_errors(local_path):
            os.rename(tmp, local_path)
        return
    os.unlink(tmp)


def _exclusive_temp(local_path: str) -> tuple[int, str]:
    """Create a new, unique file beside `local_path`; return its descriptor and name.

    ``O_CREAT | O_EXCL`` fails on any existing name, a symlink included, so nothing planted
    can redirect the download; unlike ``mkstemp`` the mode follows the umask (0666 & ~umask),
    as a file the user downloads with ``open(..., "wb")`` would.
    """
    folder, base = os.path.split(os.path.abspath(local_path))
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):
        tmp = os.path.join(folder, f".{base}.{secrets.token_hex(8)}.metatree-partial")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
        except (FileNotFoundError, NotADirectoryError):
            raise NotFoundError(folder, "local directory to download into") from None
        except OSError as exc:
            reason = f"cannot create a temporary file beside it: {type(exc).__name__}: {exc}"
            raise StorageError(local_path, reason) from exc
    raise StorageError(local_path, "no free temporary name beside it")  # pragma: no cover


def as_storage(
    root: str | Storage, fs: AbstractFileSystem | None = None, **storage_options: Any
) -> Storage:
    """Turn the user's root (and optional filesystem) into a `Storage`; the only place that does.

    A plain path has ``~`` and ``$VAR`` expanded and is made absolute, as metatreedb did; a URL
    goes through `fsspec.url_to_fs` with `storage_options`. A root holding glob characters is
    refused: fsspec expands ``[]*?`` in many calls, and ``data[12]`` would reach ``data1`` and
    ``data2`` (metatree's own primitives are literal, but a user's or plug-in's fsspec call
    on the root might not be).
    """
    storage = root if isinstance(root, Storage) else _open_root(root, fs, storage_options)
    bad = GLOB.search(storage.root)
    if bad:
        raise DatabaseError(
            storage.url,
            f"the root contains {bad.group()!r}: fsspec expands glob characters ([]*?) in "
            "paths, so calls could reach other databases; use a root without them",
        )
    return storage


def _open_root(root: str, fs: AbstractFileSystem | None, options: dict[str, Any]) -> Storage:
    raw: object = root  # callers without type checking may pass anything
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    if not isinstance(raw, str) or not raw:
        raise StorageError(repr(root), "the root must be a non-empty path or URL")
    root = raw
    if "\x00" in root:
        raise DatabaseError(repr(root), "the root holds a NUL character")
    if fs is not None:
        return Storage(fs, fs._strip_protocol(root))
    if "://" not in root:
        path = os.path.abspath(os.path.expanduser(os.path.expandvars(root)))
        return Storage(fsspec.filesystem("file", **options), path)
    if root.startswith("file://"):
        path = os.path.abspath(os.path.expanduser(os.path.expandvars(root[len("file://") :])))
        return Storage(fsspec.filesystem("file", **options), path)
    for link in root.split("::"):  # a chained URL ("simplecache::s3://...") names several
        protocol = link.split("://", 1)[0]
        try:
            fsspec.get_filesystem_class(protocol)
        except (ValueError, ImportError) as exc:
            # fsspec raises a bare ValueError for an unknown protocol, ImportError for a known
            # one whose package is not installed
            raise DatabaseError(root, f"unsupported protocol {protocol!r}: {exc}") from None
    if root.split("://", 1)[0] in ("s3", "s3a"):  # not chained: the options are s3fs's
        from metatree.backends.s3 import with_pool

        options = with_pool(options)
    with translate_errors(root):
        filesystem, path = fsspec.url_to_fs(root, **options)
    return Storage(filesystem, path)
