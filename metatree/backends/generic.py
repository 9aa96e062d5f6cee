"""Any other fsspec filesystem: `GenericBackend`, `Backend`'s primitives made safe on both kinds.

A filesystem without a registered backend is one of two kinds, and this backend cannot ask
which (fsspec says neither), so every primitive works on both:

- **keys** (object stores, fsspec's memory filesystem): a directory is a key prefix, a write
  never needs one, a single PUT is atomic;
- **real directories** (``DirFileSystem`` over local disk, SFTP, HDFS): a write below a missing
  directory fails, ``open("wb")`` writes in place (a reader sees a part), a file and a
  directory cannot share a name, and a directory stays when its files are deleted.

So: a missing parent directory is made only when a write fails for lack of it (no request
on a store of keys); `write_atomic` writes a temp file and renames it over the target, as
`put` does; `rename` refuses a directory as its target (``mv`` would move *into* it) and
moves names with glob characters by copy and delete (fsspec's default ``mv`` expands them);
`remove_tree` and `replace_tree` remove the directories they emptied, deepest first; and
`replace_tree` removes the old entry first where it cannot share its name with the new one.
On a store of keys this is the price of not knowing the kind: `write_atomic` is a PUT, a
HEAD, a copy and a delete instead of one PUT, and each emptied prefix gets an ``rmdir``.

Capabilities are the conservative ones (no atomic create, no conditional write, names not
exclusive), except for what fsspec's own filesystems make certain when wrapped (a
``DirFileSystem`` over local disk or memory): their names are exclusive, and memory is
invisible to other processes (`data_in_memory`). `real_directories` is never claimed: a
directory is not renamed atomically here (no trash), and `confine` checks nothing, so a
symbolic link planted in a wrapped local disk is followed.

Exact where a single PUT is atomic; its exclusive create is only as atomic as fsspec's
``mode="create"`` on that filesystem (often a check, then a write). It names no lock of its own,
so `Backend.make_lock` gives it the memory backend's `ContentLeaseStore`, which excludes only
the threads of this process: opening such a database warns, and the fix is a backend of its
own with a real lock (docs/backends.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
from typing import IO, TYPE_CHECKING, Any, ClassVar, Self, TypeVar, cast

from fsspec.implementations.local import LocalFileSystem
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.spec import AbstractFileSystem

from metatree._names import METADATA_FILE
from metatree._paths import GLOB
from metatree.backends.base import Backend, Capabilities
from metatree.backends.local import check_regular, confine_local, confine_local_many

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from metatree._transfer import Download
    from metatree._types import Version

__all__ = ["GenericBackend"]

_T = TypeVar("_T")
_WRAPPED_DEPTH = 8  # wrappers (DirFileSystem, caches) followed to find the filesystem below


class GenericBackend(Backend):
    """A filesystem no backend is registered for: keys or real directories, both handled."""

    write_concurrency: ClassVar[int] = 8
    """Uploads in flight (fsspec's sync API: a thread pool, `Backend.put_many`); the
    filesystems fsspec itself implements are safe in threads."""

    def __new__(cls, fs: AbstractFileSystem | None = None) -> Self:
        """Describe a wrapped filesystem of fsspec's own truthfully (`_described`).

        Capabilities are a promise of the class, so a known kind is a subclass. Tests read
        them both ways (``exclusive_names=False``: the store may hold a key and a prefix of
        one name), so a ``DirFileSystem`` over local disk or memory says what it is; any
        other filesystem gets the conservative class. (`copy` calls this without `fs`: the
        class is then already the described one.)
        """
        described = _described(fs) if cls is GenericBackend and fs is not None else cls
        return cast("Self", object.__new__(described))

    # -- writes ---------------------------------------------------------------------------
    def write_atomic(self, path: str, data: bytes, *, durable: bool = True) -> None:
        """Write a temp file beside `path`, then rename it over `path`.

        ``pipe_file`` is one atomic PUT on a store of keys, but writes in place where there
        are real files: a reader would see the first part of the new body.
        """
        self._through_temp(
            path, lambda tmp: self._making_parent(tmp, lambda: self.fs.pipe_file(tmp, data))
        )

    def create_exclusive(self, path: str, data: bytes) -> bool:
        """Create unless present (``mode="create"``), making a missing parent directory."""

        def create() -> bool:
            try:
                self.fs.pipe_file(path, data, mode="create")
            except FileExistsError:
                if self.kind(path) is None:
                    raise  # not the name: a file in the way of its parent (memory says so)
                return False
            return True

        return self._making_parent(path, create)

    def _open_new(self, path: str) -> IO[bytes]:
        """Open a new file, making a missing parent: the source is read once, after it."""
        out: IO[bytes] = self._making_parent(path, lambda: self.fs.open(path, "wb"))
        return out

    def rename(self, src: str, dst: str) -> None:
        """Move the file `src` over `dst`, never into a directory named `dst`.

        ``mv`` onto a directory of a real-directory filesystem moves the file inside it
        (``shutil.move``); the primitive's promise is to replace a file.
        """
        if self.kind(dst) == "directory":
            raise IsADirectoryError(errno.EISDIR, "is a directory", dst)
        self._making_parent(dst, lambda: self._move(src, dst), source=src)

    def _move(self, src: str, dst: str) -> None:
        """``mv`` (a rename where there are real files), but literal for glob characters.

        fsspec's default ``mv`` copies and removes through ``expand_path``, which expands
        ``[]*?``; such names are copied and removed by their exact names instead.
        """
        if GLOB.search(src) or GLOB.search(dst):
            self.fs.cp_file(src, dst)
            self.fs.rm_file(src)
        else:
            self.fs.mv(src, dst)

    def _copy(self, src: str, dst: str) -> None:
        # docstring inherited; a missing parent directory of `dst` is made
        self._making_parent(dst, lambda: self.fs.cp_file(src, dst), source=src)

    def _making_parent(self, path: str, write: Callable[[], _T], source: str | None = None) -> _T:
        """Run `write` (of `path`); if it failed for a missing parent directory, make it, retry.

        A store of keys never fails so, so it never pays the extra requests. A missing
        `source` (of a move or copy) is the failure itself: nothing is made for it. A file in
        the way of the parent is `FileExistsError`, as on local disk: for a writer, the
        file's name is taken.
        """
        try:
            try:
                return write()
            except FileNotFoundError:
                parent = path.rstrip("/").rpartition("/")[0]
                if not parent or (source is not None and self.kind(source) is None):
                    raise
                if self.kind(parent) is None:
                    self.fs.makedirs(parent, exist_ok=True)
            # made here, or by a concurrent write of the same batch (`put_many`) meanwhile:
            # a parent that existed all along fails again, with the same error
            return write()
        except NotADirectoryError as exc:
            raise FileExistsError(errno.EEXIST, "a file is in the way", path) from exc

    # -- removals -------------------------------------------------------------------------
    def remove_tree(self, path: str, trash: str | None) -> None:
        """Delete every file below `path` (its top ``metadata.json`` last), then its directories.

        A real directory stays when its files are deleted, and a node's name would then stay
        taken: the directories listed are removed deepest first, then `path` itself. An
        ``rmdir`` that fails (a prefix that is no directory, a file written meanwhile) is left.
        `trash` is unused: a directory rename is not atomic on every generic filesystem.
        """
        files, folders = self._tree(path)
        if not files and not folders and self.kind(path) != "directory":
            raise FileNotFoundError(path)
        top = f"{path.rstrip('/')}/{METADATA_FILE}"
        self._delete_keys([f for f in files if f != top])
        if top in files:
            self._delete_keys([top])
        self._remove_empty([*folders, path])

    def replace_tree(self, src: str, dst: str, trash: str, old_kind: str | None) -> None:
        """Copy the staged file or directory `src` into place, as `Backend.replace_tree`.

        Where a file and a directory cannot share a name (real directories), the first copy
        of a changed kind fails before anything is written; the old entry is then removed and
        the copy made onto nothing (a failure after that leaves `dst` missing and `src`
        complete). The directories emptied in `dst` and those of `src` are removed. A single
        file over a file or nothing is moved instead: a rename where there are real files, so
        a reader never sees it copied in place half way.
        """
        new, new_folders = self._tree(src)
        if not new and old_kind != "directory":
            self._making_parent(dst, lambda: self._move(src, dst), source=src)
            return
        old, old_folders = self._tree(dst) if old_kind is not None else ([], [])
        below = src.rstrip("/") + "/"
        pairs = [(key, f"{dst}/{key.removeprefix(below)}") for key in new] if new else [(src, dst)]
        try:
            self._copy(*pairs[0])
        except (IsADirectoryError, FileExistsError):  # a file and a directory of one name
            if old_kind is None or old_kind == ("directory" if new else "file"):
                raise
            if old_kind == "directory":
                self.remove_tree(dst, None)
            else:
                self.remove_file(dst)
            old, old_folders, old_kind = [], [], None
            self._copy(*pairs[0])
        for key, target in pairs[1:]:
            self._copy(key, target)
        written = {target for _, target in pairs}
        stale = [key for key in old if key not in written]
        if old_kind == "file" and new:
            stale.append(dst)
        self._delete_keys([*stale, *(key for key, _ in pairs)])
        self._remove_empty([*old_folders, *new_folders, src])

    def _tree(self, path: str) -> tuple[list[str], list[str]]:
        """Return the files and the directories strictly below `path`, in one listing."""
        self.fs.invalidate_cache(path)
        prefix = path.rstrip("/") + "/"
        entries: dict[str, dict[str, Any]] = self.fs.find(path, withdirs=True, detail=True)
        files: list[str] = []
        folders: list[str] = []
        for name, info in entries.items():
            if name.startswith(prefix):
                (folders if info["type"] == "directory" else files).append(name)
        return sorted(files), folders

    def _remove_empty(self, folders: list[str]) -> None:
        """Remove the directories that are empty now, deepest first; leave the others."""
        for folder in sorted(set(folders), key=lambda f: f.count("/"), reverse=True):
            with contextlib.suppress(OSError):
                self.fs.rmdir(folder)
        self.fs.invalidate_cache()


class _ExclusiveNames(GenericBackend):
    """The generic backend on a wrapped local disk: a name is a file or a directory.

    Stored data on a local disk can hold what metatree never writes: a symbolic link (a node's
    directory linked elsewhere, through which a remove would delete outside the root) and a
    FIFO (a read would block forever). As on `LocalBackend`, paths through a link are refused
    (`confine_local` on the local path the wrappers map to) and reads refuse what is not a
    regular file; both are checked on the path, then used (the race is the one
    docs/hardening-storage.md describes for local disk).
    """

    capabilities: ClassVar[Capabilities] = Capabilities(exclusive_names=True)

    def confine(self, root: str, path: str) -> None:
        local_root, local_path = _local_path(self.fs, root), _local_path(self.fs, path)
        if local_root is not None and local_path is not None:
            confine_local(local_root, local_path)

    def confine_many(self, root: str, paths: list[str]) -> list[Exception | None]:
        """`confine` each path, each local directory they share checked once."""
        local_root = _local_path(self.fs, root)
        if local_root is None:
            return [None] * len(paths)
        return confine_local_many(local_root, [_local_path(self.fs, path) for path in paths])

    def _regular(self, path: str) -> None:
        """Refuse a FIFO, socket or device where a file is read (`check_regular`)."""
        local = _local_path(self.fs, path)
        if local is not None:
            check_regular(os.stat(local).st_mode, local)

    def read(self, path: str) -> bytes:
        self._regular(path)
        return super().read(path)

    def read_versioned(self, path: str, limit: int | None = None) -> tuple[bytes, Version]:
        self._regular(path)
        return super().read_versioned(path, limit)

    def iter_chunks(self, path: str, chunk_size: int) -> Iterator[bytes]:
        self._regular(path)
        return super().iter_chunks(path, chunk_size)

    def get(self, path: str, out: Download) -> None:
        self._regular(path)
        super().get(path, out)


class _InMemory(GenericBackend):
    """The generic backend on a wrapped memory://: in this process only, names exclusive."""

    capabilities: ClassVar[Capabilities] = Capabilities(exclusive_names=True, data_in_memory=True)

    def iter_chunks(self, path: str, chunk_size: int) -> Iterator[bytes]:
        """Slice one whole read: fsspec's memory files share one position between readers."""
        data = memoryview(self.read(path))
        for start in range(0, len(data), chunk_size):
            yield bytes(data[start : start + chunk_size])


def _local_path(fs: AbstractFileSystem, path: str) -> str | None:
    """Return the local path `path` of `fs` maps to through its ``DirFileSystem`` wrappers.

    None where a wrapper is of another kind (a cache): its mapping is not known here.
    """
    current: object = fs
    for _ in range(_WRAPPED_DEPTH):
        if isinstance(current, LocalFileSystem):
            return str(current._strip_protocol(path))
        join = getattr(current, "_join", None)
        if join is None:
            return None
        path = join(path)
        current = getattr(current, "fs", None)
    return None


def _described(fs: AbstractFileSystem) -> type[GenericBackend]:
    """Return the class describing `fs`: what it wraps (``DirFileSystem.fs``) decides.

    Only fsspec's own local and memory filesystems are known; they refuse a file below a
    file (``exclusive_names``), and memory is invisible to other processes. Directories do
    not rename atomically through this backend, so neither claims `real_directories`.
    """
    current: object = fs
    for _ in range(_WRAPPED_DEPTH):
        if isinstance(current, MemoryFileSystem):
            return _InMemory
        if isinstance(current, LocalFileSystem):
            return _ExclusiveNames
        current = getattr(current, "fs", None)
        if not isinstance(current, AbstractFileSystem):
            break
    return GenericBackend
