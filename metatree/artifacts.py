"""`ArtifactStore`: ZenML's artifact-store file API over any backend, confined to one root.

ZenML's materializers and tools talk to storage through a small file API (``open``,
``copyfile``, ``exists``, ``glob``, ``isdir``, ``listdir``, ``makedirs``, ``mkdir``,
``remove``, ``rename``, ``rmtree``, ``stat``, ``size``, ``walk``). This module offers the same
methods on a metatree `Storage`, so such tools can run on every metatree backend.

ZenML confines paths with a string-prefix test (a store at ``s3://b/store`` accepts
``s3://b/store2``) and leaves ``..`` in remote paths. Here every path, relative or an
absolute URL, is turned into a path relative to the root by `confine` before any I/O: one
segment at a time, refusing what could climb out, name another bucket, protocol or host, or
touch the database's own files (docs/artifacts.md lists the rules). I/O then goes through
`Storage`, whose primitives map errors to `metatree.errors` and check each local path for
planted symbolic links.
"""

from __future__ import annotations

import fnmatch
import io
import os
import re
import tempfile
import unicodedata
import urllib.parse
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final, Literal, Self

from metatree._core.db import Database
from metatree._core.update import check_unreferenced
from metatree._metadata import load_metadata
from metatree._names import METADATA_FILE, is_reserved
from metatree._paths import GLOB, MAX_NAME_BYTES, is_invisible
from metatree._records import record_of, recorded_names, spelled
from metatree._storage import Storage, as_storage
from metatree.backends import translate_errors
from metatree.datastore import VALUE_OF
from metatree.errors import AlreadyExistsError, MetatreeError, NotFoundError, PathError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

    from fsspec.spec import AbstractFileSystem

    from metatree._tree import Metatree

__all__ = ["ArtifactStore", "confine"]

PathType = str | os.PathLike[str]
Mode = Literal["r", "rb", "w", "wb"]
_MODES: Final = ("r", "rb", "w", "wb")
SPOOL_SIZE: Final = 8 * 2**20
"""Reads and writes stay in memory up to this size, then spill to a local temp file."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")


@dataclass(frozen=True, slots=True)
class Confined:
    """A user's path confined to the root: `rel` is ``/``-joined below it (``""``: the root)."""

    rel: str
    absolute: bool
    """Whether the user gave a URL or absolute path (results are then given as URLs)."""


def confine(fs: AbstractFileSystem, root: str, path: object, *, pattern: bool = False) -> Confined:
    """Return `path` as a path relative to `root` (a path of `fs`), or raise `PathError`.

    Pure: no I/O. `path` is relative to the root, an absolute path of the filesystem
    (``/tmp/store/x``), or a URL of one of the filesystem's protocols (``s3://b/store/x``).
    It is normalised segment by segment: ``.`` and empty segments go, ``..`` removes the
    previous segment and may never climb above the root (nor above the URL's top). The
    result must be the root or below it by whole segments, so ``s3://b/store2`` is not in
    ``s3://b/store``. Refused anywhere: backslashes, control characters (NUL included),
    invisible characters, glob characters (fsspec expands them in ``mv`` and ``rm``; only
    `ArtifactStore.glob`'s pattern may hold them, `pattern=True`), ``::`` chains,
    percent-encoded or look-alike dots and slashes (a layer that decodes them would climb),
    and metatree's system names (``metadata.json``, ``.metatree*``, ``.lock``) at any depth.
    """
    text = _text(path)
    shown = text
    _check_characters(text, shown, pattern=pattern)
    root = root.rstrip("/") or "/"
    if "://" in text:
        parts = _from_url(fs, root, text, shown)
        absolute = True
    elif text.startswith("/"):
        parts = _below(root, _normalise(text, shown), shown)
        absolute = True
    else:
        first = text.split("/", 1)[0]
        if _SCHEME.match(first):
            raise PathError(shown, f"{first!r} looks like a URL scheme or a drive; use 'x://...'")
        parts = _normalise(text, shown, top=0)
        absolute = False
    for part in parts:
        _check_segment(part, shown)
    return Confined("/".join(parts), absolute)


def _text(path: object) -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise PathError(repr(path), f"a path is a str or os.PathLike, not {type(path).__name__}")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise PathError(
            repr(path), "a path must be valid UTF-8 (it has a lone surrogate)"
        ) from None
    return path


def _check_characters(text: str, shown: str, *, pattern: bool) -> None:
    if "\\" in text:
        raise PathError(shown, "'\\' is a separator on Windows and is refused")
    bad = _CONTROL.search(text)
    if bad:
        raise PathError(shown, f"control character {bad.group()!r}")
    invisible = next((c for c in text if is_invisible(c)), None)
    if invisible is not None:
        raise PathError(shown, f"invisible character {invisible!r} makes look-alike names")
    if "::" in text:
        raise PathError(shown, "chained URLs ('::') are refused: they name other filesystems")
    glob = GLOB.search(text)
    if glob and not pattern:
        raise PathError(shown, f"glob character {glob.group()!r}: fsspec would expand it")


def _normalise(text: str, shown: str, top: int = 0) -> list[str]:
    """Split `text` on ``/`` and resolve ``.``/``..``; ``..`` never removes the first `top`."""
    parts: list[str] = []
    for part in text.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if len(parts) <= top:
                raise PathError(shown, "'..' climbs out of the root")
            parts.pop()
            continue
        parts.append(part)
    return parts


def _below(root: str, parts: list[str], shown: str) -> list[str]:
    """Return `parts` (an absolute path's segments) relative to `root`, or refuse them."""
    base = [p for p in root.split("/") if p]
    if parts[: len(base)] != base:
        raise PathError(shown, f"outside the store's root {root!r}")
    return parts[len(base) :]


def _from_url(fs: AbstractFileSystem, root: str, text: str, shown: str) -> list[str]:
    """Confine a URL: one of `fs`'s protocols, no other host, below `root` after ``..``."""
    scheme, rest = text.split("://", 1)
    protocols = (fs.protocol,) if isinstance(fs.protocol, str) else tuple(fs.protocol)
    known = {p.casefold(): p for p in protocols}
    if scheme.casefold() not in known:
        raise PathError(shown, f"protocol {scheme!r} is not the store's ({'/'.join(protocols)})")
    scheme = known[scheme.casefold()]  # fsspec strips its protocols in their own letter case
    # the first segment may be a bucket or host: '..' may not remove it
    parts = _normalise(rest, shown, top=0 if rest.startswith("/") else 1)
    canonical = "/".join(parts)
    stripped = str(
        type(fs)._strip_protocol(f"{scheme}://{'/' if rest.startswith('/') else ''}{canonical}")
    )
    if stripped.strip("/") != canonical:
        # the filesystem dropped or changed a part (WebHDFS drops the host): another server's
        # path would silently name ours
        raise PathError(shown, "the URL names a host or form the store does not use")
    return _below(root, [p for p in stripped.split("/") if p], shown)


def _check_segment(part: str, shown: str) -> None:
    if len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        raise PathError(shown, f"a segment longer than {MAX_NAME_BYTES} bytes")
    decoded = urllib.parse.unquote(part)
    folded = unicodedata.normalize("NFKC", decoded)
    if folded in (".", "..") or any(c in folded for c in "/\\"):
        raise PathError(shown, f"segment {part!r} decodes to a dot segment or a separator")
    # Windows drops trailing dots and spaces: 'metadata.json.' is the node's index there
    if any(is_reserved(name) for name in (part, folded, folded.rstrip(". "))):
        raise PathError(shown, f"{part!r} is a system file of the database, not an artifact")


class _Writer:
    """A file being written: bytes gather in a spool and are stored on a clean close only.

    `Storage.put` stores them through a temp name renamed over the target, so a reader
    never sees half a file; a block that raises, or a file never closed, stores nothing.
    """

    def __init__(self, store: ArtifactStore, rel: str, text: bool) -> None:
        self._store, self._rel, self._text = store, rel, text
        self._spool: IO[bytes] | None = tempfile.SpooledTemporaryFile(SPOOL_SIZE)  # noqa: SIM115

    @property
    def closed(self) -> bool:
        """Whether the file was closed (stored) or discarded."""
        return self._spool is None

    def writable(self) -> bool:
        """Return True: this file is written."""
        return True

    def readable(self) -> bool:
        """Return False: a file opened for writing is not read."""
        return False

    def write(self, data: str | bytes) -> int:
        """Add `data` (str in mode ``"w"``, bytes-like in ``"wb"``) to the file."""
        if self._spool is None:
            raise ValueError("I/O operation on closed file")
        if self._text != isinstance(data, str):
            kind = "str" if self._text else "a bytes-like object"
            raise TypeError(f"write() argument must be {kind}, not {type(data).__name__}")
        self._spool.write(data.encode("utf-8") if isinstance(data, str) else data)
        return len(data)

    def flush(self) -> None:
        """Nothing to flush: the file is stored whole when closed."""

    def close(self) -> None:
        """Store the file (atomically); closing again does nothing."""
        if self._spool is None:
            return
        spool, self._spool = self._spool, None
        with spool:
            spool.seek(0)
            self._store.storage.put(spool, self._rel)

    def discard(self) -> None:
        """Drop what was written; nothing is stored."""
        if self._spool is not None:
            spool, self._spool = self._spool, None
            spool.close()

    def __del__(self) -> None:
        """Discard a file dropped without being closed: nothing is stored, no spool leaks."""
        self.discard()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()


class ArtifactStore:
    """ZenML's artifact-store file API on a metatree storage root (docs/artifacts.md).

    Parameters
    ----------
    root
        A path or URL (opened with `storage_options`, as `Metatree` opens its root), or a
        `Storage`. Nothing outside it is ever read or written through this store.
    fs
        An fsspec filesystem to use instead of opening `root` from its URL.
    """

    def __init__(
        self, root: PathType | Storage, fs: AbstractFileSystem | None = None, **storage_options: Any
    ) -> None:
        given = root if isinstance(root, Storage) else os.fspath(root)
        self.storage = as_storage(given, fs, **storage_options)

    @classmethod
    def of(cls, tree: Metatree) -> ArtifactStore:
        """Return the file API over the whole database `tree` (its system files refused)."""
        return cls(tree.storage)

    def __repr__(self) -> str:
        return f"ArtifactStore({self.storage.url!r})"

    @property
    def path(self) -> str:
        """The root as a URL (ZenML's ``ArtifactStore.path``)."""
        return self.storage.url

    # -- paths --------------------------------------------------------------------------
    def _confine(self, path: PathType) -> Confined:
        """Confine `path`, then check it for planted links (local disk; `Storage.abs`)."""
        where = confine(self.storage.fs, self.storage.root, path)
        self.storage.abs(where.rel)
        return where

    def _rel(self, path: PathType) -> str:
        return self._confine(path).rel

    def _show(self, rel: str, absolute: bool) -> str:
        """Give `rel` back in the user's form: relative, or a URL when they gave one."""
        return self.storage.url_of(rel) if absolute else rel

    def _kind(self, rel: str) -> str | None:
        return self.storage.kind(rel)

    def _refuse_nodes(self, rel: str, shown: str) -> None:
        """Refuse to remove or move `rel` if it holds a database node (a metadata.json)."""
        if self._kind(rel) == "directory":
            for below in self.storage.walk_files(rel):
                if any(is_reserved(part) for part in below.split("/")):
                    raise PathError(shown, "it holds the database's own files (a node)")
        elif not rel:
            raise PathError(shown, "the store's root itself")

    def _check_free(self, rel: str, shown: str, *, file: bool) -> None:
        """Refuse a write that a filesystem with directories would refuse, on every backend.

        Object stores would take a file key where a directory (a prefix) is, or a key below a
        file: both names would then exist, and the tree's nodes would read as files. So a file
        is not written where a directory is, and nothing is written below a file.
        """
        if file and self._kind(rel) == "directory":
            raise AlreadyExistsError(shown, "a directory has this name")
        if not file and self._kind(rel) == "file":
            raise AlreadyExistsError(shown, "a file has this name")
        parts = rel.split("/")
        for depth in range(1, len(parts)):
            above = "/".join(parts[:depth])
            if self._kind(above) == "file":
                raise AlreadyExistsError(shown, f"{above!r} is a file, not a directory")

    def _refuse_values(self, rel: str, shown: str) -> None:
        """Refuse to write, replace, move or remove a file that holds a DataStore value.

        A value's file is the metadata field's (`DataStore`, `ArchiveStore`): replacing it
        here would change the value behind its record, removing it would leave the field
        naming nothing. So, as `Metatree.remove` and a forced put refuse it, a file of a node
        (a directory with a metadata.json) that a field references, or whose record says a
        DataStore put it (``metatree_value_of``), is refused whether it exists or not, and so
        is any path below such a name (a directory made or moved where a lost value's file
        was would be read as that value's).
        Names are compared case-folded (as `check_unreferenced` does): refusing a look-alike
        on a case-sensitive store is the safe side. Not under the DB lock: a value stored
        after this check and before the write is not seen (the file API takes no lock).
        """
        parts = rel.split("/")
        nodes = ["/".join(parts[:depth]) for depth in range(len(parts))]  # each directory above
        metas = [f"{node}/{METADATA_FILE}" if node else METADATA_FILE for node in nodes]
        read = self.storage.read_many(metas, Database.max_metadata_bytes)  # one round trip
        for node, name, data in zip(nodes, parts, read, strict=True):
            if isinstance(data, NotFoundError):
                continue  # not a node's directory: no field can hold its files
            if isinstance(data, MetatreeError):
                raise data
            self._refuse_value(node, name, data, shown)

    def _refuse_value(self, node: str, name: str, data: bytes, shown: str) -> None:
        """Refuse `name` in the node at `node` (its metadata.json `data`) if a value's."""
        where = self.storage.url_of(node)
        metadata = load_metadata(data, where)
        path = tuple(node.split("/")) if node else ()
        check_unreferenced(metadata, path, name, shown)
        record = record_of(metadata, spelled(recorded_names(metadata, where), name, True), where)
        field = None if record is None else record.provenance.info.get(VALUE_OF)
        if field is not None:
            raise PathError(
                shown,
                f"{name!r} is a file DataStore stored for metadata field {field!r}: update "
                "or remove that field instead (fsck and gc handle one no field names)",
            )

    # -- the file API -------------------------------------------------------------------
    def open(self, path: PathType, mode: Mode = "r") -> IO[Any]:
        """Open a file: ``"r"``/``"rb"`` read one whole version of it, ``"w"``/``"wb"`` write.

        A read gets a snapshot (spooled locally, seekable), so it never mixes two versions.
        A write is stored when the file is closed (by the ``with`` block's clean end) through
        a temp name and a rename: readers see the old file or the new one, never half of it.
        Missing parent directories are created (as on object stores).
        """
        rel = self._rel(path)
        if mode not in _MODES:
            raise PathError(os.fspath(path), f"mode {mode!r} is not one of {_MODES}")
        if not rel:
            raise PathError(os.fspath(path), "the store's root is a directory")
        if mode.startswith("w"):
            self._check_free(rel, os.fspath(path), file=True)
            self._refuse_values(rel, os.fspath(path))
            return _Writer(self, rel, text=mode == "w")  # type: ignore[return-value]
        spool = self._snapshot(rel)
        return io.TextIOWrapper(spool, encoding="utf-8") if mode == "r" else spool

    def _snapshot(self, rel: str) -> IO[bytes]:
        spool = tempfile.SpooledTemporaryFile(SPOOL_SIZE)  # noqa: SIM115 - returned
        try:
            for chunk in self.storage.iter_bytes(rel):
                spool.write(chunk)
        except BaseException:
            spool.close()
            raise
        spool.seek(0)
        return spool

    def copyfile(self, src: PathType, dst: PathType, overwrite: bool = False) -> None:
        """Copy the file `src` to `dst`; an existing `dst` needs ``overwrite=True``."""
        source, target = self._rel(src), self._rel(dst)
        if not overwrite and self._kind(target) is not None:
            raise AlreadyExistsError(os.fspath(dst), "pass overwrite=True to replace it")
        self._check_free(target, os.fspath(dst), file=True)
        self._refuse_values(target, os.fspath(dst))
        with self._snapshot(source) as spool:
            self.storage.put(spool, target)

    def exists(self, path: PathType) -> bool:
        """Whether a file or directory is at `path`."""
        return self._kind(self._rel(path)) is not None

    def isdir(self, path: PathType) -> bool:
        """Whether `path` is a directory (on object stores: a prefix with keys below it)."""
        return self._kind(self._rel(path)) == "directory"

    def listdir(self, path: PathType) -> list[str]:
        """Return the sorted names in the directory `path`, without the database's own files."""
        rel = self._rel(path)
        if self._kind(rel) != "directory":
            raise NotFoundError(os.fspath(path), "directory")
        return sorted(name for name in self.storage.listdir(rel) if not is_reserved(name))

    def makedirs(self, path: PathType) -> None:
        """Create the directory `path` and its parents (nothing to create on object stores)."""
        rel = self._rel(path)
        if rel and self._kind(rel) != "directory":
            self._check_free(rel, os.fspath(path), file=False)
            self._refuse_values(rel, os.fspath(path))
            with translate_errors(self.storage.url_of(rel)):
                self.storage.fs.makedirs(self.storage.abs(rel), exist_ok=True)

    def mkdir(self, path: PathType) -> None:
        """Create the directory `path`; its parent must exist, and `path` must not."""
        rel = self._rel(path)
        if self._kind(rel) is not None:
            raise AlreadyExistsError(os.fspath(path), "mkdir creates a new directory")
        self._check_free(rel, os.fspath(path), file=False)
        self._refuse_values(rel, os.fspath(path))
        parent = rel.rpartition("/")[0]
        if self.storage.capabilities.real_directories and self._kind(parent) != "directory":
            raise NotFoundError(self.storage.url_of(parent), "parent directory")
        with translate_errors(self.storage.url_of(rel)):
            self.storage.fs.makedirs(self.storage.abs(rel), exist_ok=True)

    def remove(self, path: PathType) -> None:
        """Remove the file `path` (a directory needs `rmtree`)."""
        rel = self._rel(path)
        kind = self._kind(rel)
        if kind != "file":
            raise NotFoundError(os.fspath(path), "file" if kind is None else "file (a directory)")
        self._refuse_values(rel, os.fspath(path))
        self.storage.remove_file(rel)

    def rename(self, src: PathType, dst: PathType, overwrite: bool = False) -> None:
        """Move the file or directory `src` to `dst`.

        A file replaces an existing file `dst` only with ``overwrite=True``; a directory
        moves only to a free name and never holding a database node.
        """
        source, target = self._rel(src), self._rel(dst)
        kind = self._kind(source)
        if kind is None:
            raise NotFoundError(os.fspath(src))
        if target == source or target.startswith(f"{source}/") or not target:
            raise PathError(os.fspath(dst), "a path cannot move into itself or over the root")
        existing = self._kind(target)
        if existing is not None and (kind == "directory" or existing == "directory"):
            raise AlreadyExistsError(os.fspath(dst), "rename does not replace a directory")
        if existing is not None and not overwrite:
            raise AlreadyExistsError(os.fspath(dst), "pass overwrite=True to replace it")
        self._check_free(target, os.fspath(dst), file=kind == "file")
        if kind == "file":
            self._refuse_values(source, os.fspath(src))
            self._refuse_values(target, os.fspath(dst))
            self.storage.rename(source, target)
            return
        self._refuse_nodes(source, os.fspath(src))
        self._refuse_values(target, os.fspath(dst))
        self.storage.replace_tree(source, target, None)

    def rmtree(self, path: PathType) -> None:
        """Remove the directory `path` and everything below it (never a database node)."""
        rel = self._rel(path)
        if not rel:
            raise PathError(os.fspath(path), "the store's root itself is not removed here")
        if self._kind(rel) != "directory":
            raise NotFoundError(os.fspath(path), "directory")
        self._refuse_nodes(rel, os.fspath(path))
        self.storage.remove_tree(rel)

    def stat(self, path: PathType) -> dict[str, Any]:
        """Return the filesystem's details of `path` (fsspec's ``info``: size, type, ...)."""
        rel = self._rel(path)
        if self._kind(rel) is None:
            raise NotFoundError(os.fspath(path))
        with translate_errors(self.storage.url_of(rel)):
            info = dict(self.storage.fs.info(self.storage.abs(rel)))
        info["name"] = rel
        return info

    def size(self, path: PathType) -> int:
        """Return the size in bytes of the file `path`."""
        info = self.stat(path)
        if info["type"] == "directory":
            raise NotFoundError(os.fspath(path), "file (it is a directory)")
        return int(info["size"])

    def walk(
        self,
        top: PathType,
        topdown: bool = True,
        onerror: Callable[[MetatreeError], object] | None = None,
    ) -> Iterator[tuple[str, list[str], list[str]]]:
        """Yield ``(directory, subdirectories, files)`` for `top` and each directory below.

        As ``os.walk``: a missing `top` yields nothing; with ``topdown=True`` the caller may
        prune the subdirectory list in place. A directory that cannot be listed is given to
        `onerror` and skipped; without `onerror` its error is raised (``os.walk`` would hide
        it). The database's own files are left out.
        """
        where = self._confine(top)
        if self._kind(where.rel) != "directory":
            return
        yield from self._walk(where.rel, where.absolute, topdown, onerror)

    def _walk(
        self,
        rel: str,
        absolute: bool,
        topdown: bool,
        onerror: Callable[[MetatreeError], object] | None,
    ) -> Iterator[tuple[str, list[str], list[str]]]:
        try:
            entries = self.storage.listdir(rel)
        except MetatreeError as exc:
            if onerror is None:
                raise
            onerror(exc)
            return
        dirs = sorted(n for n, k in entries.items() if k == "directory" and not is_reserved(n))
        files = sorted(n for n, k in entries.items() if k == "file" and not is_reserved(n))
        here = self._show(rel, absolute)
        if topdown:
            yield here, dirs, files
        for name in list(dirs):
            yield from self._walk(f"{rel}/{name}" if rel else name, absolute, topdown, onerror)
        if not topdown:
            yield here, dirs, files

    def glob(self, pattern: PathType) -> list[str]:
        """Return the sorted paths matching `pattern` (``*``, ``?``, ``[...]`` within a segment).

        The pattern is confined like any path; matches come back relative, or as URLs if the
        pattern was one. The database's own files never match.
        """
        where = confine(self.storage.fs, self.storage.root, pattern, pattern=True)
        parts = where.rel.split("/") if where.rel else []
        fixed = 0
        while fixed < len(parts) and not GLOB.search(parts[fixed]):
            fixed += 1
        base = "/".join(parts[:fixed])
        self.storage.abs(base)
        matches = self._match(base, parts[fixed:])
        return sorted(self._show(rel, where.absolute) for rel in matches)

    def _match(self, base: str, rest: list[str]) -> Iterator[str]:
        if not rest:
            if self._kind(base) is not None:
                yield base
            return
        head, *tail = rest
        for name, kind in self.storage.listdir(base).items():
            if is_reserved(name) or not fnmatch.fnmatchcase(name, head):
                continue
            below = f"{base}/{name}" if base else name
            if not tail:
                yield below
            elif kind == "directory":
                yield from self._match(below, tail)
