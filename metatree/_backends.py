"""Backend adapters: the one place that knows how each filesystem misbehaves.

`Backend` implements the `Storage` primitives with plain fsspec calls, which is right for
object stores whose single PUT is atomic (GCS, Azure, ...). Subclasses override what their
filesystem gets wrong or can do better; `backend_for` picks one by filesystem class through a
lazy registry (as fsspec's ``known_implementations``), never by comparing protocol strings.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import io
import os
import stat
import threading
import uuid
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, ClassVar, Final, TypeAlias, cast

from metatree._registry import ClassRegistry
from metatree.errors import PathError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from fsspec.callbacks import Callback
    from fsspec.spec import AbstractFileSystem

    from metatree.errors import StorageError

__all__ = [
    "MISSING",
    "Backend",
    "Capabilities",
    "Changed",
    "Source",
    "Version",
    "backend_for",
    "open_source",
    "register_backend",
]

Source: TypeAlias = "str | os.PathLike[str] | bytes | IO[bytes]"
Version: TypeAlias = "object | None"
"""Opaque version of a stored file (an ETag on S3); None where writes cannot be conditional."""
_COPY_CHUNK = 8 * 2**20
_METADATA = "metadata.json"  # the node index; deleted last by remove_tree


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a backend guarantees; tests that need a capability skip without it."""

    atomic_exclusive_create: bool = True
    """`create_exclusive` has exactly one winner under contention."""
    real_directories: bool = False
    """Directories exist on their own (local, HDFS) rather than as key prefixes (S3)."""
    same_host_liveness: bool = False
    """A lock holder's pid can be checked on this host (the filesystem is local)."""
    exclusive_names: bool = True
    """A name cannot be a file and a directory at once (object stores allow key + prefix)."""
    data_in_memory: bool = False
    """The filesystem keeps file contents in this process's memory (fsspec's memory://)."""
    conditional_write: bool = False
    """`write_if` compares the stored version before replacing (`read_versioned` gives one)."""
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


class _SourceFailed(Exception):
    """Carries a failure to read the user's source past the transfer code.

    Deliberately not an `OSError`: urllib3 would take one raised while sending a request body
    for a connection failure (and retry, or report the destination).
    """

    def __init__(self, error: StorageError) -> None:
        super().__init__(str(error))
        self.error = error


class _SourceReader:
    """A read-only view of the user's stream whose read errors name the source."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self.stream = stream
        self.name = name

    def read(self, n: int = -1) -> bytes:
        try:
            return self.stream.read(n)
        except Exception as exc:  # any failure of the user's stream is the source's
            raise _SourceFailed(_source_error(self.name, "reading", exc)) from exc

    def fileno(self) -> int:
        return self.stream.fileno()


def _source_error(name: str, doing: str, exc: BaseException) -> StorageError:
    from metatree.errors import StorageError

    error = StorageError(name, f"{doing} the source failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


@contextlib.contextmanager
def open_source(source: Source) -> Iterator[tuple[IO[bytes], int | None]]:
    """Open what `put` accepts as a binary stream, with its size when known.

    A failure to open or read the source is the source's, not the destination's: it leaves
    the block as a `StorageError` naming the local file (or ``"<file object>"``), so the user
    is not sent looking for a storage failure. Backends clean up on the way out (they see a
    private exception, not an `OSError`, while it travels through HTTP client code).
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        yield io.BytesIO(data), len(data)
        return
    if isinstance(source, str | os.PathLike):
        name = os.fspath(source)
        try:
            stream: IO[bytes] = open(source, "rb")  # noqa: SIM115 - closed below
            size: int | None = os.fstat(stream.fileno()).st_size
        except OSError as exc:
            raise _source_error(name, "opening", exc) from exc
    else:
        name, stream, size = "<file object>", source, None
    try:
        yield cast("IO[bytes]", _SourceReader(stream, name)), size
    except _SourceFailed as exc:
        raise exc.error from exc.error.__cause__
    finally:
        if isinstance(source, str | os.PathLike):
            stream.close()


def open_regular(path: str) -> IO[bytes]:
    """Open a local file for reading, refusing what is not a regular file.

    A FIFO planted where a file is expected would block the reader forever (while it holds
    the DB lock, every writer); a device could be read without end. ``O_NONBLOCK`` makes the
    open itself return at once; the type is then checked on the descriptor. A directory
    raises `IsADirectoryError`, as ``open`` would.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        _check_regular(os.fstat(fd).st_mode, path)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def _check_regular(mode: int, path: str) -> None:
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory", path)
    if not stat.S_ISREG(mode):
        raise OSError(
            errno.ESPIPE, "not a regular file (a FIFO, socket or device was planted)", path
        )


_RENAME_EXCHANGE: Final = 2


def _exchange(a: str, b: str) -> bool:
    """Swap two paths atomically with ``renameat2(RENAME_EXCHANGE)``; False where unsupported.

    Linux (glibc 2.28+, most local filesystems) only; elsewhere the caller renames twice and
    a crash between the two renames leaves the old entry under a reserved trash name.
    """
    renameat2 = _renameat2()
    if renameat2 is None:
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # this kernel or filesystem cannot exchange
    raise OSError(code, os.strerror(code), b)


@functools.cache
def _renameat2() -> Any:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    function.restype = ctypes.c_int
    return function


def copy_stream(src: IO[bytes], dst: IO[bytes], size: int | None, callback: Callback) -> None:
    """Copy in bounded chunks, reporting progress through the fsspec callback."""
    if size is not None:
        callback.set_size(size)
    while chunk := src.read(_COPY_CHUNK):
        dst.write(chunk)
        callback.relative_update(len(chunk))


def copy_file(src: IO[bytes], dst: IO[bytes], callback: Callback) -> None:
    """Copy a local file into another inside the kernel (``copy_file_range``), in chunks.

    No byte passes through Python: a 1 GiB copy through `copy_stream` ran at under half the
    speed of fsspec's own local copy (which uses the kernel's). Like a read loop, it copies
    until the end of the file, whatever size was seen first. Anything but a non-empty regular
    file (a pipe, procfs, a file object without a descriptor), or a kernel or filesystem that
    cannot, takes `copy_stream`.
    """
    try:
        st = os.fstat(src.fileno())
    except (AttributeError, io.UnsupportedOperation):
        copy_stream(src, dst, None, callback)
        return
    if not stat.S_ISREG(st.st_mode) or not st.st_size:
        copy_stream(src, dst, None, callback)
        return
    callback.set_size(st.st_size)
    dst.flush()
    copied = 0
    try:
        while n := os.copy_file_range(src.fileno(), dst.fileno(), _COPY_CHUNK):
            copied += n
            callback.relative_update(n)
    except OSError as exc:
        if copied or exc.errno not in _NO_KERNEL_COPY:
            raise
        copy_stream(src, dst, None, callback)


_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF}
_VERSION_KEYS = (
    *("size", "ETag", "etag", "VersionId", "generation", "md5Hash"),  # S3, GCS
    *("mtime", "LastModified", "last_modified", "created", "ino"),  # Azure, local, memory
)


def _fingerprint(info: dict[str, object]) -> tuple[object, ...]:
    """Return what identifies one version of a file in an fsspec ``info`` dict."""
    return tuple((key, info[key]) for key in _VERSION_KEYS if key in info)


def _temp_name(path: str) -> str:
    """Return a unique temp name beside `path` (the `.metatree.tmp.` prefix is reserved)."""
    parent = path.rstrip("/").rsplit("/", 1)[0] if "/" in path.rstrip("/") else ""
    name = f".metatree.tmp.{uuid.uuid4().hex}"
    return f"{parent}/{name}" if parent else name


class Backend:
    """Storage primitives on any fsspec filesystem (exact where a single PUT is atomic)."""

    capabilities: ClassVar[Capabilities] = Capabilities(
        atomic_exclusive_create=False, exclusive_names=False
    )

    def __init__(self, fs: AbstractFileSystem) -> None:
        self.fs = fs

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

    def put(self, source: Source, path: str, callback: Callback, *, durable: bool = True) -> None:
        """Stream `source` into a temp object beside `path`, then move it over `path`.

        fsspec's buffered files upload what they hold when their context exits, even on an
        error: streaming straight to `path` replaced a file with the first part of a failed
        upload. The temp object is removed on any failure (`durable` as in `write_atomic`).
        """
        tmp = _temp_name(path)
        try:
            with open_source(source) as (stream, size), self.fs.open(tmp, "wb") as out:
                copy_stream(stream, out, size, callback)
            self.rename(tmp, path)
        except BaseException:
            with contextlib.suppress(Exception):
                self.fs.rm_file(tmp)
            raise

    def sync(self, paths: list[str]) -> None:
        """Make files written with ``durable=False`` durable (nothing to do remotely)."""

    def get(self, path: str, out: IO[bytes], callback: Callback) -> None:
        """Download `path` into the open local file `out`, from one version of it.

        Goes through `iter_chunks`, whose reads are pinned to one version (fsspec's
        ``get_file`` resumes a broken download with a plain ranged GET of whatever is there).
        """
        for chunk in self.iter_chunks(path, _COPY_CHUNK):
            out.write(chunk)
            callback.relative_update(len(chunk))

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
        top = f"{path.rstrip('/')}/{_METADATA}"
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
        self._delete_keys([*stale, *(key for key, _ in pairs)])

    def find(self, path: str) -> list[str]:
        """List every file strictly below `path`, by exact prefix.

        fsspec's ``find`` walks with ``ls`` and does not expand globs, but only names below
        ``path/`` are kept, so that no implementation's matching can reach another tree.
        """
        self.fs.invalidate_cache(path)
        prefix = path.rstrip("/") + "/"
        return [p for p in self.fs.find(path) if p.startswith(prefix)]


class LocalBackend(Backend):
    """Local disk: temp file + fsync + `os.replace`, and `os.link` for exclusive create."""

    capabilities = Capabilities(real_directories=True, same_host_liveness=True)

    def _temp_beside(self, path: str) -> str:
        parent = os.path.dirname(path)
        try:
            os.makedirs(parent, exist_ok=True)
        except NotADirectoryError as exc:
            # a file where a directory is needed: for a writer, the file's name is taken
            raise FileExistsError(str(exc)) from None
        return os.path.join(parent, f".metatree.tmp.{uuid.uuid4().hex}")

    def _write_temp(
        self, path: str, source: Source, callback: Callback, *, durable: bool = True
    ) -> str:
        tmp = self._temp_beside(path)
        try:
            with open_source(source) as (stream, size), open(tmp, "xb") as out:
                if isinstance(source, str | os.PathLike):
                    copy_file(stream, out, callback)
                else:
                    copy_stream(stream, out, size, callback)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp

    def confine(self, root: str, path: str) -> None:
        """Refuse a path below `root` that passes through a symbolic link.

        metatree never stores a link, so one in the tree was planted; following it would read,
        write or delete outside the root (a node's directory linked to ``/etc``), or inside
        another node. Every component below the root is checked with ``lstat`` (the root
        itself may be a link: the user chose it). A component that does not exist ends the
        check: nothing below it exists either. Someone who can swap a directory for a link
        between this check and the use of the path can still win that race; see
        docs/hardening-storage.md.
        """
        current = root.rstrip("/") or "/"
        for part in path[len(current) :].strip("/").split("/"):
            current = f"{current.rstrip('/')}/{part}"
            try:
                mode = os.lstat(current).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return
            if stat.S_ISLNK(mode):
                raise PathError(current, _PLANTED_LINK)

    def tree_version(self, path: str) -> object:
        """Return the device and inode: `replace_tree` renames a new directory in."""
        st = os.lstat(path)
        return (st.st_dev, st.st_ino)

    def read(self, path: str) -> bytes:
        # docstring inherited
        with open_regular(path) as stream:
            return stream.read()

    def read_versioned(self, path: str, limit: int | None = None) -> tuple[bytes, Version]:
        # docstring inherited; the flock cannot expire, so no version is needed
        with open_regular(path) as stream:
            return stream.read(-1 if limit is None else limit + 1), None

    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        """Write a temp file beside `path`, fsync it, then `os.replace` (atomic on POSIX).

        With ``durable=False`` the fsync is left to a later `sync`: a transaction writes every
        file of its new nodes first and syncs them in one batch (fsyncs of data already
        written back cost a fraction of one each), before any index lists them.
        """
        from fsspec.callbacks import DEFAULT_CALLBACK

        os.replace(self._write_temp(path, data, DEFAULT_CALLBACK, durable=durable), path)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Hard-link a complete temp file to `path`: ``link(2)`` fails if `path` exists.

        Unlike ``O_EXCL`` followed by a write, the file is never visible empty or torn.
        """
        from fsspec.callbacks import DEFAULT_CALLBACK

        tmp = self._write_temp(path, data, DEFAULT_CALLBACK)
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def put(self, source: Source, path: str, callback: Callback, *, durable: bool = True) -> None:
        """Copy into a temp file and rename it, so a reader never sees a partial file."""
        os.replace(self._write_temp(path, source, callback, durable=durable), path)

    def sync(self, paths: list[str]) -> None:
        """Fsync each file (written with ``durable=False``); one removed since needs none."""
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed by a forced put later in the same transaction
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def iter_chunks(self, path: str, chunk_size: int) -> Iterator[bytes]:
        """Read through one descriptor: a replacement (`os.replace`) leaves us the old inode."""
        with open_regular(path) as stream:
            while chunk := stream.read(chunk_size):
                yield chunk

    def get(self, path: str, out: IO[bytes], callback: Callback) -> None:
        # docstring inherited; one descriptor, so one version (see `iter_chunks`)
        with open_regular(path) as src:
            copy_file(src, out, callback)

    def rename(self, src: str, dst: str) -> None:
        """`os.replace`: atomic on POSIX, readers see the old or the new `dst`."""
        os.replace(src, dst)

    def kind(self, path: str) -> str | None:
        # docstring inherited
        if os.path.isdir(path):
            return "directory"
        return "file" if os.path.lexists(path) else None

    def listdir(self, path: str) -> dict[str, str]:
        # docstring inherited
        try:
            with os.scandir(path) as entries:
                return {e.name: "directory" if e.is_dir() else "file" for e in entries}
        except (FileNotFoundError, NotADirectoryError):
            return {}

    def remove_file(self, path: str) -> None:
        # docstring inherited
        os.unlink(path)

    def remove_tree(self, path: str, trash: str | None) -> None:
        """Rename the directory to `trash` (atomic), then delete it there.

        A crash in the delete leaves a reserved ``.metatree.trash.*`` name that no read shows
        and no new node inherits, never a half-deleted node under its own name.
        """
        if trash is not None:
            os.rename(path, trash)
            path = trash
        self._delete_tree(path)

    def _delete_tree(self, path: str) -> None:
        """Delete what no name of the tree refers to any more: a directory, a file or a link.

        Iterative (a planted tree thousands of levels deep must not hit the recursion limit),
        and links are removed, never followed.
        """
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            os.unlink(path)
            return
        stack, folders = [path], []
        while stack:
            folder = stack.pop()
            folders.append(folder)
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    else:
                        os.unlink(entry.path)
        for folder in reversed(folders):
            os.rmdir(folder)

    def replace_tree(self, src: str, dst: str, trash: str, old_kind: str | None) -> None:
        """Rename the old `dst` to `trash`, `src` into place, then delete the trash.

        Each rename is atomic: readers see the old or the new directory, and a failure between
        the two renames puts the old one back.
        """
        if old_kind is not None and _exchange(src, dst):
            # one atomic swap (Linux renameat2 RENAME_EXCHANGE): no moment, crash included,
            # where `dst` is missing; the old entry is now at `src`, a reserved name
            with contextlib.suppress(OSError):
                self._delete_tree(src)
            return
        if old_kind is not None:
            os.rename(dst, trash)
        try:
            os.rename(src, dst)
        except BaseException:
            if old_kind is not None:
                os.rename(trash, dst)
            raise
        if old_kind is not None:
            with contextlib.suppress(OSError):  # a leftover trash is hidden; the swap is done
                self._delete_tree(trash)

    def find(self, path: str) -> list[str]:
        """List every file below `path`, without following symbolic links.

        metatree never stores a link, so one found in stored data was planted: following it
        would read (or download) what lies outside the root. It is refused, naming the link.
        """
        files: list[str] = []
        stack = [path]
        if os.path.islink(path):
            raise PathError(path, _PLANTED_LINK)
        while stack:
            folder = stack.pop()
            try:
                entries = list(os.scandir(folder))
            except (FileNotFoundError, NotADirectoryError):
                if folder == path:
                    return []
                raise
            for entry in entries:
                if entry.is_symlink():
                    raise PathError(entry.path, _PLANTED_LINK)
                (stack if entry.is_dir(follow_symlinks=False) else files).append(entry.path)
        return sorted(files)


_PLANTED_LINK = (
    "a symbolic link in stored data (metatree never stores one: it was planted, and "
    "following it would read outside the root); remove it"
)
_MEMORY_LOCK = threading.Lock()


class MemoryBackend(Backend):
    """fsspec's in-memory filesystem: one process-wide lock makes check-then-act atomic.

    Every write replaces the stored `MemoryFile` object (never its bytes in place) under
    `_MEMORY_LOCK`, so that object is a version: readers take a snapshot of one, and
    `write_if` compares identities under the same lock.
    """

    capabilities = Capabilities(data_in_memory=True, conditional_write=True)

    def _stored(self, path: str) -> io.BytesIO:
        """Return the stored file object (shared by every reader: never use its position)."""
        key = self.fs._strip_protocol(path)
        try:
            stored = self.fs.store[key]
        except KeyError:
            if key in self.fs.pseudo_dirs:
                raise IsADirectoryError(path) from None
            raise FileNotFoundError(path) from None
        if not isinstance(stored, io.BytesIO):  # pragma: no cover - fsspec's MemoryFile is
            raise TypeError(f"unexpected memory file {type(stored).__name__}")
        return stored

    def read(self, path: str) -> bytes:
        # docstring inherited
        return self._stored(path).getvalue()

    def iter_chunks(self, path: str, chunk_size: int) -> Iterator[bytes]:
        """Slice one snapshot: a replacement stores a new object and leaves ours whole."""
        data = memoryview(self._stored(path).getvalue())
        for start in range(0, len(data), chunk_size):
            yield bytes(data[start : start + chunk_size])

    def get(self, path: str, out: IO[bytes], callback: Callback) -> None:
        # docstring inherited
        data = self._stored(path).getvalue()
        copy_stream(io.BytesIO(data), out, len(data), callback)

    def read_versioned(self, path: str, limit: int | None = None) -> tuple[bytes, Version]:
        """Return the bytes and the stored object itself (its identity is the version)."""
        with _MEMORY_LOCK:
            stored = self._stored(path)
            data = stored.getvalue()
            return (data if limit is None else data[: limit + 1]), stored

    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        # docstring inherited; under the lock, so that `write_if`'s compare stays atomic
        with _MEMORY_LOCK:
            self.fs.pipe_file(path, data)

    def write_if(self, path: str, data: bytes, version: Version, *, durable: bool = True) -> bool:
        """Compare the stored object with `version` and replace it, under the process lock."""
        if version is MISSING:
            return self.create_exclusive(path, data)
        with _MEMORY_LOCK:
            try:
                current = self._stored(path)
            except FileNotFoundError:
                return False
            if current is not version:
                return False
            self.fs.pipe_file(path, data)
            return True

    def rename(self, src: str, dst: str) -> None:
        """Move the stored object to `dst` in one step under the lock."""
        with _MEMORY_LOCK:
            stored = self._stored(src)
            self.fs.pipe_file(dst, stored.getvalue())
            self.fs.rm_file(src)

    def put(self, source: Source, path: str, callback: Callback, *, durable: bool = True) -> None:
        """Collect the whole body first (it lives in memory anyway), then store it in one step.

        Streaming into a `MemoryFile` would commit it when its context exits, even on error.
        """
        buffer = io.BytesIO()
        with open_source(source) as (stream, size):
            copy_stream(stream, buffer, size, callback)
        with _MEMORY_LOCK:
            self.fs.pipe_file(path, buffer.getvalue())

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Check and create under a process-wide lock (the store is process-global too)."""
        with _MEMORY_LOCK:
            if self.fs.exists(path):
                return False
            self.fs.pipe_file(path, data)
            return True

    def listdir(self, path: str) -> dict[str, str]:
        # docstring inherited; MemoryFileSystem lists a file as itself, which is not a dir
        if self.fs.isfile(path):
            return {}
        return super().listdir(path)

    def remove_tree(self, path: str, trash: str | None) -> None:
        """Delete the keys (metadata.json last), then the directories `mkdir` may have made."""
        with contextlib.suppress(FileNotFoundError):  # an empty made directory has no key
            super().remove_tree(path, trash)
        pseudo: list[str] = getattr(self.fs, "pseudo_dirs", [])
        below = self.fs._strip_protocol(path)
        for folder in sorted((d for d in pseudo if d.startswith(below + "/")), reverse=True):
            with contextlib.suppress(OSError):
                self.fs.rmdir(folder)
        with contextlib.suppress(OSError):
            self.fs.rmdir(below)


_REGISTRY = ClassRegistry(
    "backend",
    {
        "fsspec.implementations.local.LocalFileSystem": "metatree._backends.LocalBackend",
        "fsspec.implementations.memory.MemoryFileSystem": "metatree._backends.MemoryBackend",
        "s3fs.core.S3FileSystem": "metatree._backend_s3.S3Backend",
        "fsspec.implementations.webhdfs.WebHDFS": "metatree._backend_webhdfs.WebHDFSBackend",
    },
)


def register_backend(fs_class: str, backend_class: str, *, clobber: bool = False) -> None:
    """Register a `Backend` subclass (dotted path) for a filesystem class (dotted path)."""
    _REGISTRY.register(fs_class, backend_class, clobber=clobber)


def backend_for(fs: AbstractFileSystem) -> Backend:
    """Return the backend registered for `fs`'s class, or the generic one."""
    cls = _REGISTRY.find(fs)
    backend: Backend = (cls or Backend)(fs)
    return backend
