"""Local disk: `LocalBackend` (temp file + fsync + rename) and `LocalLock` (OS file lock).

The backend writes a temp file beside its target, fsyncs it and renames it over the target
(atomic on POSIX), creates exclusively with ``link(2)``, reads through one descriptor (one
version), refuses planted links and FIFOs, and swaps directories with ``renameat2``.

The DB lock, `LocalLock`, is the operating system's file lock, taken through filelock's
`filelock.lock_descriptor` (``flock(2)`` on Linux and macOS, ``LockFileEx`` on Windows) on the
reserved file ``<root>/.metatree.lock``. Nothing POSIX-only is needed to import this module:
``fcntl`` is filelock's business, ``renameat2`` is loaded through ctypes on first use.

The kernel holds the lock for us: it is exclusive between processes (and between lock objects
of one process, since each opens its own file description), and it is released the moment its
holder dies, so a dead owner never blocks anyone. A lock file can be unlinked or replaced
(rsync, a person, a root moved and replaced), and a lock on the old inode would then exclude
nobody; so the lock counts only while ``.metatree.lock`` still names the inode it was taken on.
A waiter checks that right after taking it (else it retries), a holder before each commit
(else `LockLostError`). The holder unlinks the file *before* unlocking it on release, so the
file exists only while the lock is held, and a waiter that opened the old inode sees it
unnamed and retries on the new one. The lock file is never written: the config file
``.metatree`` is no part of locking, so re-saving it (an editor's temp file + rename) changes
nothing.

While the lock is held, the lease body is also written to ``<root>/.lock`` so that
`lock_status` can name the holder and metatreedb 0.2.3 clients (which check that name) wait. A
``.lock`` whose OS lock is free is stale by construction (its writer is gone) and is
overwritten; one we cannot parse was touched by metatreedb and is respected for `foreign_ttl`
seconds from its mtime. Every failure while taking the lock (the body cannot be written: disk
full, EIO, a ``.lock`` directory; or Ctrl-C) closes the descriptor, which releases the lock,
and surfaces as `StorageError`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import stat
import sys
import time
import uuid
from typing import IO, TYPE_CHECKING, Any, ClassVar, Final

from filelock import lock_descriptor, unlock_descriptor

from metatree._locking._base import BaseLock
from metatree._locking._info import (
    MAX_BODY,
    CorruptLease,
    LeaseInfo,
    describe_foreign,
    directory_error,
)
from metatree._locking._observe import highest_token, note_token, unchanged_for
from metatree._names import OS_LOCK_FILE, reserved_name
from metatree.backends.base import Backend, Capabilities
from metatree.errors import LockError, LockLostError, PathError, StorageError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from metatree._storage import Storage
    from metatree._transfer import Download, Upload
    from metatree._types import Version

__all__ = ["LocalBackend", "LocalLock", "check_regular", "confine_local", "open_regular"]

_READ_PIECE: Final = 1 << 20
"""How much a bounded read asks for at a time (a read of n bytes allocates n up front)."""


_CREATE_TEMP: Final = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
"""How a temp file is created: a fresh name, never an existing file (nor a planted link)."""

_DIRECT_PUT: Final = 2**20
"""Largest source `LocalBackend.put` reads and writes through the bare descriptor."""

_SYNCFS_FROM: Final = 64
"""Files from which `LocalBackend.sync` flushes their filesystem once instead of each."""


@functools.cache
def _libc_syncfs() -> Any:
    """Return libc's ``syncfs`` (Linux), or None."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        syncfs = libc.syncfs
    except (OSError, AttributeError):
        return None
    return syncfs


_NO_WAIT: Final = getattr(os, "O_NONBLOCK", 0)
_NO_FOLLOW: Final = getattr(os, "O_NOFOLLOW", 0)


def _syncfs(paths: list[str]) -> bool:
    """Flush the filesystems holding `paths` with one ``syncfs`` each; False if unavailable.

    The files' directories all sit below one database root, almost always on one
    filesystem; a file on another one (a mount inside the tree) is flushed by its own call.
    """
    syncfs = _libc_syncfs()
    if syncfs is None:
        return False
    done: set[int] = set()
    # each directory once: a bulk load's node holds its metadata.json and its file
    for parent in dict.fromkeys(os.path.dirname(path) or "." for path in paths):
        try:
            device = os.stat(parent).st_dev
        except OSError:
            continue  # removed since, with its file
        if device in done:
            continue
        try:  # a directory, or nothing: never a FIFO's blocking open
            fd = os.open(parent, os.O_RDONLY | _NO_WAIT | getattr(os, "O_DIRECTORY", 0))
        except OSError:
            return False  # then each file is fsynced, and checked
        try:
            if syncfs(fd) != 0:
                return False  # then each file is fsynced
        finally:
            os.close(fd)
        done.add(device)
    return True


class LocalBackend(Backend):
    """Local disk: temp file + fsync + `os.replace`, and `os.link` for exclusive create."""

    read_concurrency: ClassVar[int] = 1  # small reads in memory or the page cache: no gain
    write_concurrency: ClassVar[int] = 1  # disk-bound writes; a transaction batches fsyncs

    capabilities = Capabilities(
        atomic_exclusive_create=True,
        exclusive_names=True,
        real_directories=True,
        same_host_liveness=True,
    )

    def make_lock(
        self, storage: Storage, rel: str, *, ttl: float, timeout: float, **kwargs: Any
    ) -> BaseLock:
        """Return the OS file lock on ``.metatree.lock`` (`LocalLock`); `ttl` does not apply.

        The kernel releases a dead holder's lock, so there is no lease to expire.
        """
        return LocalLock(storage, rel, timeout=timeout, **kwargs)

    def _create_temp(self, path: str) -> tuple[int, str]:
        """Create a fresh temp file beside `path` (readable and writable); return fd and name.

        The file is created first and its directory made only when missing: a node's
        directory exists for all but its first write, and ``makedirs`` on an existing one
        cost a ``stat``, a failing ``mkdir`` and another ``stat`` per write.
        """
        parent = os.path.dirname(path)
        tmp = os.path.join(parent, reserved_name("tmp"))
        try:
            try:
                return os.open(tmp, _CREATE_TEMP, 0o666), tmp
            except FileNotFoundError:
                try:
                    os.mkdir(parent)  # a new node's directory: its parent exists
                except FileNotFoundError:
                    os.makedirs(parent, exist_ok=True)
                except FileExistsError:
                    pass  # made meanwhile (or a file: the open below says which)
            return os.open(tmp, _CREATE_TEMP, 0o666), tmp
        except NotADirectoryError as exc:
            # a file where a directory is needed: for a writer, the file's name is taken
            raise FileExistsError(str(exc)) from None

    def _write_temp(
        self, path: str, fill: Callable[[IO[bytes]], object], *, durable: bool = True
    ) -> str:
        """Create a temp file beside `path`, `fill` it, flush (and fsync); return its name."""
        fd, tmp = self._create_temp(path)
        try:
            with open(fd, "rb+") as out:  # readable: a hash reads back what it stored
                fill(out)
                out.flush()
                if durable:
                    os.fsync(out.fileno())
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp

    def _write_direct(
        self, path: str, fill: Callable[[int], object], *, durable: bool = True
    ) -> str:
        """`_write_temp` through the bare descriptor: `fill` writes to it with `_write_all`.

        A buffered file object costs an ``fstat``, an ``ioctl`` and ``lseek`` calls per file:
        a tenth of a small file's write in a bulk load.
        """
        fd, tmp = self._create_temp(path)
        try:
            try:
                fill(fd)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        return tmp

    def confine(self, root: str, path: str) -> None:
        """Refuse a path below `root` that passes through a symbolic link (`confine_local`)."""
        confine_local(root, path)

    def confine_many(self, root: str, paths: list[str]) -> list[Exception | None]:
        """`confine` each path, each directory they share checked once (one ``lstat``)."""
        return confine_local_many(root, paths)

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
            if limit is None:
                return stream.read(), None
            # read(limit + 1) would allocate the whole limit (256 MiB) up front for every
            # metadata.json: read what is there, in pieces, up to one byte past the limit
            pieces, size = [], 0
            while size <= limit and (piece := stream.read(min(_READ_PIECE, limit + 1 - size))):
                pieces.append(piece)
                size += len(piece)
            return b"".join(pieces), None

    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        """Write a temp file beside `path`, fsync it, then `os.replace` (atomic on POSIX).

        With ``durable=False`` the fsync is left to a later `sync`: a transaction writes every
        file of its new nodes first and syncs them in one batch (fsyncs of data already
        written back cost a fraction of one each), before any index lists them.
        """
        os.replace(self._write_direct(path, lambda fd: _write_all(fd, data), durable=durable), path)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Hard-link a complete temp file to `path`: ``link(2)`` fails if `path` exists.

        Unlike ``O_EXCL`` followed by a write, the file is never visible empty or torn.
        """
        tmp = self._write_direct(path, lambda fd: _write_all(fd, data))
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)
        return True

    def put(self, source: Upload, path: str, *, durable: bool = True) -> None:
        """Copy into a temp file and rename it, so a reader never sees a partial file.

        A small source (its size known, up to `_DIRECT_PUT`: a bulk load's files) is read and
        written through the bare descriptor; a larger local file is copied inside the kernel
        (`Upload.copy_to`), anything else in bounded chunks.
        """
        if source.size is not None and source.size <= _DIRECT_PUT:

            def fill(fd: int) -> None:
                while chunk := source.read(_READ_PIECE):
                    _write_all(fd, chunk)

            tmp = self._write_direct(path, fill, durable=durable)
        else:
            tmp = self._write_temp(path, source.copy_to, durable=durable)
        os.replace(tmp, path)

    def sync(self, paths: list[str]) -> None:
        """Make the files (written with ``durable=False``) durable; one removed needs none.

        Many files (a transaction's bulk load) are flushed by one ``syncfs`` of their
        filesystem where Linux has it: one journal commit instead of one per file (20 000
        fsyncs took 2.4 to 13 s for a 10 000-put transaction here). It flushes the
        directory entries too, which a file's fsync does not.
        """
        if len(paths) >= _SYNCFS_FROM and _syncfs(paths):
            return
        for path in paths:
            try:
                # a co-writer may have swapped in a FIFO (whose open waits for a writer: the
                # commit would hang, holding the lock) or a link: `open_regular` refuses both
                stream = open_regular(path)
            except (FileNotFoundError, NotADirectoryError):
                continue  # removed by a forced put later in the same transaction
            with stream:
                os.fsync(stream.fileno())

    def iter_chunks(self, path: str, chunk_size: int) -> Iterator[bytes]:
        """Read through one descriptor: a replacement (`os.replace`) leaves us the old inode."""
        with open_regular(path) as stream:
            while chunk := stream.read(chunk_size):
                yield chunk

    def get(self, path: str, out: Download) -> None:
        """Copy through one descriptor, so one version (see `iter_chunks`); kernel copy."""
        with open_regular(path) as src:
            out.copy_from(src)

    def rename(self, src: str, dst: str) -> None:
        """`os.replace`: atomic on POSIX, readers see the old or the new `dst`."""
        os.replace(src, dst)

    def kind(self, path: str) -> str | None:
        """``lstat``: a planted link is a "file" (what is not a directory), never followed."""
        try:
            return "directory" if stat.S_ISDIR(os.lstat(path).st_mode) else "file"
        except (FileNotFoundError, NotADirectoryError):
            return None

    def listdir(self, path: str) -> dict[str, str]:
        """Names and kinds, not following links: a link loop (``ln -s l l``) is a "file"."""
        try:
            with os.scandir(path) as entries:
                return {
                    e.name: "directory" if e.is_dir(follow_symlinks=False) else "file"
                    for e in entries
                }
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


def _write_all(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd` (``write(2)`` may write less than it was given)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _is_directory(path: str) -> bool:
    """Whether `path` itself is a directory (``lstat``: a link to one is not)."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def confine_local(root: str, path: str, checked: set[str] | None = None) -> None:
    """Refuse a local path below `root` that passes through a symbolic link.

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
        if checked is not None and current in checked:
            continue
        try:
            mode = os.lstat(current).st_mode
        except (FileNotFoundError, NotADirectoryError):
            return
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise PathError(current, "a name longer than this filesystem allows") from None
            raise
        if stat.S_ISLNK(mode):
            raise PathError(current, _PLANTED_LINK)
        if checked is not None and stat.S_ISDIR(mode):
            checked.add(current)  # a file is checked at each use: it may be replaced by a link


def confine_local_many(root: str, paths: Sequence[str | None]) -> list[Exception | None]:
    """`confine_local` each path (None: nothing to check); return what each raised, or None.

    The paths share one `checked` set: a directory they have in common is checked once.
    """
    checked: set[str] = set()
    out: list[Exception | None] = []
    for path in paths:
        try:
            if path is not None:
                confine_local(root, path, checked)
        except (PathError, OSError) as exc:
            out.append(exc)
        else:
            out.append(None)
    return out


_PLANTED_LINK = (
    "a symbolic link in stored data (metatree never stores one: it was planted, and "
    "following it would read outside the root); remove it"
)


def open_regular(path: str) -> IO[bytes]:
    """Open a local file for reading, refusing what is not a regular file.

    A FIFO planted where a file is expected would block the reader forever (while it holds
    the DB lock, every writer); a device could be read without end. ``O_NONBLOCK`` makes the
    open itself return at once; the type is then checked on the descriptor. A directory
    raises `IsADirectoryError`, as ``open`` would.
    """
    fd = os.open(path, os.O_RDONLY | _NO_WAIT | _NO_FOLLOW)
    try:
        check_regular(os.fstat(fd).st_mode, path)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def check_regular(mode: int, path: str) -> None:
    """Refuse what is not a regular file: a directory as ``open`` would, a FIFO or device."""
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
    import ctypes  # loaded with renameat2, never at import: Linux only

    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV):
        return False  # this kernel or filesystem cannot exchange
    raise OSError(code, os.strerror(code), b)


@functools.cache
def _renameat2() -> Any:
    """Return libc's ``renameat2`` through ctypes, None where there is none (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes  # optional in CPython builds

        libc = ctypes.CDLL(None, use_errno=True)
        function = libc.renameat2
    except (ImportError, OSError, AttributeError):
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


_OPEN_LOCK_FILE: Final = (
    os.O_RDWR  # what Windows' LockFileEx and NFS's emulation of flock need
    | getattr(os, "O_NOFOLLOW", 0)  # a planted link is refused, never followed
    | getattr(os, "O_NONBLOCK", 0)  # a planted FIFO cannot block the open
    | getattr(os, "O_CLOEXEC", 0)  # a program we start must not keep the lock alive after us
)
_NO_OS_LOCK = frozenset({errno.EBADF, errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL})
"""What the OS lock answers where the filesystem cannot lock (ENOSYS: no primitive at all)."""
_RETAKES: Final = 3
"""Attempts in a row when the lock is won on an inode just unlinked by its releaser."""
_Seen = tuple[float, bytes]  # the .lock's mtime and (a bounded prefix of) its body


class LocalLock(BaseLock):
    """The OS file lock on ``.metatree.lock``, plus a lease body at ``.lock`` for inspection.

    The lock is filelock's native one (`filelock.lock_descriptor`): ``flock(2)`` on POSIX,
    ``LockFileEx`` on Windows; both are released by the kernel the moment their holder dies.
    A lock file, unlike the root directory, can be unlinked or replaced (an rsync, a person),
    so the lock counts only while the name still names the inode it was taken on: checked
    right after taking it (else retry) and before each commit (else `LockLostError`).
    """

    def __init__(
        self, storage: Storage, rel: str, *, foreign_ttl: float = 30.0, **kwargs: Any
    ) -> None:
        kwargs.setdefault("poll_interval", 0.0005)
        kwargs.setdefault("max_poll_interval", 0.02)
        super().__init__(storage.url_of(rel), **kwargs)
        self.storage = storage
        self._rel = rel
        self.foreign_ttl = foreign_ttl
        self.owner = uuid.uuid4().hex
        self._fd: int | None = None
        self._opened: set[int] = set()  # every descriptor of the lock file open now
        self._lease: LeaseInfo | None = None
        self._holder = ""  # set when a foreign .lock was judged; else read when needed
        self._foreign = False

    # Confined when first used, not when the tree opens: a link planted at either name must
    # not stop a tree from opening, or fsck could never report it nor move it aside.
    @functools.cached_property
    def path(self) -> str:
        """The lease object ``.lock`` (confined to the root: a link there is refused)."""
        return self.storage.abs(self._rel)

    @functools.cached_property
    def guard(self) -> str:
        """The directory holding the lease object."""
        return os.path.dirname(self.path)

    @functools.cached_property
    def lock_file(self) -> str:
        """The file the OS lock is taken on, ``.metatree.lock`` (confined as `path`)."""
        return self.storage.abs(OS_LOCK_FILE)

    def _after_fork(self) -> None:
        """Close the inherited descriptors without unlocking: the lock stays the parent's.

        All of them, not only that of a lock held: a fork from another thread while this one
        was between locking the file and recording it left the child holding the lock after
        the parent died (the kernel releases it when the last descriptor closes).
        """
        super()._after_fork()
        opened, self._opened = self._opened, set()
        self._fd, self._lease = None, None
        self.owner = uuid.uuid4().hex
        for fd in opened:
            with contextlib.suppress(OSError):
                os.close(fd)

    def _close(self, fd: int) -> None:
        self._opened.discard(fd)
        os.close(fd)

    # -- errors -------------------------------------------------------------------------
    def _error(self, exc: OSError) -> StorageError:
        if isinstance(exc, IsADirectoryError) or _is_directory(self.path):
            if _is_directory(self.lock_file):
                return directory_error(self.storage.url_of(OS_LOCK_FILE))
            return directory_error(self.name)
        if exc.errno in _NO_OS_LOCK:
            return StorageError(
                self.storage.url,
                f"this filesystem cannot lock files ({exc.strerror}): a network filesystem? "
                "See docs/locking.md, 'Where the OS lock does not hold'",
            )
        lock_file_url = f"{self.storage.url.rstrip('/')}/{OS_LOCK_FILE}"  # no confine: a link
        about = lock_file_url if exc.filename == self.lock_file else self.name
        return StorageError(about, f"{type(exc).__name__}: {exc}")

    # -- the OS lock on the lock file ---------------------------------------------------
    def _take(self, flags: int = _OPEN_LOCK_FILE | os.O_CREAT) -> int | None:
        """Take the OS lock without waiting; return its descriptor, None when it is held.

        A lock on an inode that the name no longer names is not the lock: its holder unlinked
        it on release (or someone replaced it) between our open and our lock. The lock was
        just let go, so the name is opened again at once rather than after a back-off (a
        few times: a name replaced over and over is held by someone in effect).
        """
        for _ in range(_RETAKES):
            fd = os.open(self.lock_file, flags, 0o666)
            self._opened.add(fd)
            try:
                check_regular(os.fstat(fd).st_mode, self.lock_file)
                locked = lock_descriptor(fd, blocking=False)
                if locked and self._still_named(fd):
                    return fd
            except BaseException:
                self._close(fd)
                raise
            self._close(fd)  # our only descriptor of it: closing releases a lock we took
            if not locked:
                return None
        return None

    def _still_named(self, fd: int) -> bool:
        """Whether the lock file's name still names the inode locked through `fd`."""
        try:
            return os.path.samestat(os.lstat(self.lock_file), os.fstat(fd))
        except OSError:
            return False

    def _let_go(self, fd: int) -> None:
        """Unlink the lock file while still holding it, then unlock and close.

        Unlinked first, so that a waiter that opened this inode finds it no longer named when
        it gets the lock, and retries on the new file; never after unlocking (the next holder
        may have taken it by then). Windows refuses to unlink an open file: it stays, which
        is as safe. A lock file replaced by someone else is not ours to unlink.
        """
        try:
            if self._still_named(fd):
                with contextlib.suppress(OSError):
                    os.unlink(self.lock_file)
            with contextlib.suppress(OSError):  # closing our descriptor releases it anyway
                unlock_descriptor(fd)  # but a copy in a forked child would keep it held
        finally:
            self._close(fd)

    # -- acquire / release --------------------------------------------------------------
    def _try_acquire(self) -> bool:
        fd: int | None = None
        try:
            fd = self._take()
            if fd is None:
                self._holder, self._foreign = "", False  # read only if we give up
                return False
            previous = self._read()
            info = self._parse(previous)
            if previous is not None and info is None and not self._foreign_expired(previous):
                return False
            self._foreign = False
            lease = LeaseInfo.new(self.owner, 0.0, info, highest_token(self.name))
            self._write(lease.to_bytes())
            note_token(self.name, lease.token)
            self._lease = lease
            self._fd = fd  # from here on `_release` lets it go
        except OSError as exc:
            raise self._error(exc) from exc
        else:
            return True
        finally:
            if fd is not None and self._fd != fd:
                self._let_go(fd)  # a failed or declined attempt leaves no lock file behind

    def _parse(self, previous: _Seen | None) -> LeaseInfo | None:
        if previous is None:
            return None
        try:
            info = LeaseInfo.load(previous[1])
        except CorruptLease:
            return None
        note_token(self.name, info.token)
        return info

    def _foreign_expired(self, previous: _Seen) -> bool:
        """Judge a ``.lock`` we cannot parse: respected for `foreign_ttl` after it was written.

        Its age is the larger of now - mtime and how long this process has seen it unchanged
        (an mtime in the future, planted or skewed, cannot hold the lock forever).
        """
        mtime, body = previous
        key = body + repr(mtime).encode()
        age = max(time.time() - mtime, unchanged_for(self.name, key, repeatable=True))
        self._foreign = True
        self._holder = (
            f"{describe_foreign(body)}, written {age:.1f}s ago; it is taken over after "
            f"{self.foreign_ttl:g}s"
        )
        return age > self.foreign_ttl

    def _read(self) -> _Seen | None:
        """Return the ``.lock``'s mtime and body (a bounded prefix), or None when absent."""
        try:
            with open_regular(self.path) as stream:  # a planted FIFO must not block us
                mtime = os.fstat(stream.fileno()).st_mtime
                return mtime, stream.read(MAX_BODY + 1)
        except FileNotFoundError:
            return None

    def _read_holder(self) -> str:
        previous = self._read()
        if previous is None:
            return "a writer that is between two steps"
        info = self._parse(previous)
        if info is None:
            self._foreign_expired(previous)
            return self._holder
        self._foreign = False
        return info.describe()

    def _write(self, body: bytes) -> None:
        # no fsync: after a crash the OS lock is gone, and with it any meaning of the body
        tmp = os.path.join(self.guard, reserved_name("tmp"))
        try:
            with open(tmp, "xb") as stream:
                stream.write(body)
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def _release(self) -> None:
        self._lease = None
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # the body only names the holder for `lock_status`; a stale one is overwritten by
            # the next holder and reported dead meanwhile (its OS lock is gone), so failing to
            # delete it must not turn a committed operation into an error. A lock file that
            # was replaced may be the next holder's already, and so may the body: left alone.
            if self._still_named(fd):
                with contextlib.suppress(OSError):
                    os.unlink(self.path)
        finally:
            self._let_go(fd)

    def _abandon(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                self._release()

    def _describe_holder(self) -> str:
        """Name the holder; read from ``.lock`` only now, not on every failed attempt."""
        if self._holder:
            return self._holder  # a foreign .lock, judged by the attempt that just failed
        try:
            return self._read_holder()
        except OSError as exc:
            return f"unknown (its .lock cannot be read: {exc})"

    def _timeout_advice(self) -> str:
        if self._foreign:
            return (
                "retry later; a .lock that metatree did not write is taken over "
                f"{self.foreign_ttl:g}s after it was written, or remove it with break_lock()"
            )
        return (
            "retry later; on local disk the lock is the OS's file lock, released the moment "
            "its holder exits, and no other process can break it (lock_status() names it)"
        )

    def check(self) -> None:
        """Refuse when not held, or when the lock file no longer names the locked inode."""
        fd = self._fd
        if fd is None:
            raise LockLostError(self.name, "the lock is not held")
        if not self._still_named(fd):
            raise LockLostError(
                self.name,
                f"{OS_LOCK_FILE} was removed or replaced (or the database root moved) while "
                "the lock was held",
            )

    # -- inspection ---------------------------------------------------------------------
    def _os_lock_free(self) -> bool:
        """Whether nobody holds the OS lock now (probed without waiting, creating nothing).

        A reader may not be allowed to write the root: then the probe opens read-only, which
        the local lock of every OS accepts (NFS's emulation would refuse it, as a holder's).
        """
        try:
            try:
                fd = self._take(_OPEN_LOCK_FILE)
            except OSError as exc:
                if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                    raise
                fd = self._take(_OPEN_LOCK_FILE & ~os.O_RDWR | os.O_RDONLY)
        except FileNotFoundError:
            return True  # a holder keeps its lock file named
        except OSError as exc:
            raise self._error(exc) from exc
        if fd is None:
            return False
        self._close(fd)
        return True

    def status(self) -> LeaseInfo | None:
        """Return the holder named in ``.lock``; None when free, including when its writer died."""
        try:
            previous = self._read()
        except OSError as exc:
            raise self._error(exc) from exc
        if previous is None:
            return None
        info = self._parse(previous)
        if info is None:
            return LeaseInfo.foreign(previous[0])
        if self._fd is None and self._os_lock_free():
            return None  # the writer of this body is gone (the kernel released its lock)
        return info

    def break_(self, *, force: bool = False) -> bool:
        """Remove a stale or foreign ``.lock``; a live holder's OS lock cannot be broken.

        `force` changes nothing here: no process can take another's OS lock.
        """
        try:
            if self._read() is None:
                return False
            fd = self._take()
            if fd is not None:
                try:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                finally:
                    self._let_go(fd)
                return True
            holder = self._read_holder()
        except OSError as exc:
            raise self._error(exc) from exc
        raise LockError(
            f"{self.name} is held by a live process ({holder}); on local disk the kernel "
            "releases it when that process ends"
        )
