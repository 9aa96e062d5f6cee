"""Directories as one deterministic ``.tar.gz``: scan and stream out (docs/archives.md).

Pure local code, bytes out: `scan_archive` checks a local tree before the DB lock (refusing any
name `metatree._extract` would refuse, so every archive made here can be extracted again), and
`ArchiveReader` streams the archive in bounded memory (the uploader reads it like a file).
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import stat
import struct
import tarfile
import zlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast

from metatree._extract import MAX_PATH_BYTES, int_in, local_path
from metatree._localfiles import MAX_DEPTH, unsafe_local_segment
from metatree._names import SYSTEM_PREFIX
from metatree.errors import NotFoundError, PathError, StorageError

if TYPE_CHECKING:
    from collections.abc import Generator, Iterator, Mapping

    from _typeshed import WriteableBuffer

    from metatree._types import Source

__all__ = [
    "PYTHON_INFO",
    "ArchiveEntry",
    "ArchiveReader",
    "archive_source",
    "scan_archive",
    "source_of",
]

PYTHON_INFO = "python-info.json"
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")
"""What an archive's stored name ends with: tools (and `get(extract_to=)` users) go by it."""
_CHUNK = 2**20  # bytes read from a local file or written to one at a time
_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE


@dataclass(frozen=True, slots=True)
class ArchiveEntry:
    """One member-to-be: its local path, its name in the archive, and what its header records."""

    local: str
    name: str
    is_dir: bool
    size: int
    mode: int
    mtime: int


def archive_source(
    directory: object,
    name: str | None,
    *,
    include: Sequence[str] | None,
    exclude: Sequence[str] | None,
    hidden: bool,
) -> tuple[ArchiveReader, str]:
    """Return what ``put(..., archive=True)`` uploads: the streamed archive and its name.

    The directory is scanned whole here, before the DB lock (bad input writes nothing). The
    stored name defaults to the directory's name plus ``.tar.gz``. The archive holds a
    ``python-info.json`` with this process's Python, platform and library versions (as the
    file records name them), as modelstore's archives do.
    """
    from metatree._records import runtime

    base = local_path(directory, "the directory to archive")
    entries = scan_archive(base, include=include, exclude=exclude, hidden=hidden)
    info = {k: runtime()[k] for k in ("python", "platform", "versions")}
    if name is None:
        stem = os.path.basename(os.path.abspath(base))  # "." is the working directory's name
        if not stem:
            raise PathError(base, "the root directory has no name: pass name=")
        name = f"{stem}.tar.gz"
    elif not str(name).endswith(ARCHIVE_SUFFIXES):  # a non-str name is refused by check_name
        raise PathError(repr(name), f"an archive's name ends with {' or '.join(ARCHIVE_SUFFIXES)}")
    return ArchiveReader(entries, info), name


def source_of(
    source: Source,
    name: str | None,
    archive: object,
    include: Any,
    exclude: Any,
    hidden: Any,
    recursive: object = False,
) -> tuple[Source, str | None]:
    """Return the source and name a put stores: with `archive`, the directory's archive.

    The archive's options without ``archive=True`` are refused (they would be ignored), and
    so is ``recursive=True`` with it (an archive is one file: the choice would be ignored).
    """
    if not isinstance(archive, bool):
        raise PathError(repr(source), f"archive must be True or False, not {archive!r}")
    if archive and recursive:
        raise PathError(repr(source), "archive=True stores one file: drop recursive=True")
    if archive:
        reader, chosen = archive_source(
            source, name, include=include, exclude=exclude, hidden=hidden
        )
        return cast("IO[bytes]", reader), chosen
    if include is not None or exclude is not None or hidden is not False:
        raise PathError(repr(source), "include, exclude and hidden need archive=True")
    return source, name


# -- scan ----------------------------------------------------------------------------------
def _patterns(value: object, what: str, base: str) -> tuple[str, ...]:
    if value is None:
        return ()
    # a bare str would be iterated as one-character patterns: the most common mistake
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str | bytes)
        or not all(isinstance(p, str) and p for p in value)
    ):
        raise PathError(base, f"{what} must be a list or tuple of non-empty glob strings")
    return tuple(value)


def _matches(patterns: tuple[str, ...], rel: str, base: str) -> bool:
    return any(fnmatch.fnmatchcase(rel, p) or fnmatch.fnmatchcase(base, p) for p in patterns)


def scan_archive(
    directory: str,
    *,
    include: Sequence[str] | None = None,
    exclude: Sequence[str] | None = None,
    hidden: bool = False,
) -> list[ArchiveEntry]:
    """Return the entries of `directory` to archive, sorted by name, checked before any write.

    Patterns are globs matched against the POSIX relative path and the base name; `exclude`
    wins and prunes a whole directory; `include` keeps what matches (a directory that matches
    keeps everything below it) plus the directories leading to it. Hidden names (a segment
    starting with ``.``) are skipped unless `hidden`. Symbolic links are followed, with loop
    protection. Every kept name must be extractable again (`extract` refuses the rest).
    """
    base = local_path(directory, "the directory to archive")
    inc, exc = _patterns(include, "include", base), _patterns(exclude, "exclude", base)
    if not isinstance(hidden, bool):
        raise PathError(base, f"hidden must be a bool, not {hidden!r}")
    if not os.path.exists(base):
        raise NotFoundError(base, "local directory to archive")
    if not os.path.isdir(base):
        raise PathError(base, "only a directory can be archived")
    top = _stat_inside(base)
    if top is None:  # pragma: no cover - removed since the line above
        raise NotFoundError(base, "local directory to archive")
    found: list[ArchiveEntry] = []
    chosen: set[str] = set()  # matched files and directories (before adding their parents)
    stack = [(base, "", frozenset({(top.st_dev, top.st_ino)}), not inc)]
    while stack:
        folder, prefix, ancestors, all_in = stack.pop()
        try:
            with os.scandir(folder) as listing:
                names = sorted(e.name for e in listing)
        except OSError as err:
            raise PathError(folder, f"cannot list the local directory: {err}") from None
        for name in names:
            rel, local = f"{prefix}{name}", os.path.join(folder, name)
            if (name.startswith(".") and not hidden) or _matches(exc, rel, name):
                continue
            info = _stat_inside(local)
            kept = all_in or _matches(inc, rel, name)
            if info is None:
                if not kept:
                    continue  # a broken link that the filters leave out does not matter
                raise PathError(local, "a broken symbolic link (its target does not exist)")
            if stat.S_ISDIR(info.st_mode):
                if (info.st_dev, info.st_ino) in ancestors:
                    raise PathError(local, "a symbolic link loops back to a directory above it")
                ident = ancestors | {(info.st_dev, info.st_ino)}
                stack.append((local, f"{rel}/", ident, kept))
            elif not kept:
                continue
            elif not stat.S_ISREG(info.st_mode):
                raise PathError(local, "not a regular file or directory (a fifo, socket, ...)")
            else:
                _check_readable(local)
            if kept:
                chosen.add(rel)
            found.append(
                ArchiveEntry(
                    local,
                    rel,
                    stat.S_ISDIR(info.st_mode),
                    0 if stat.S_ISDIR(info.st_mode) else info.st_size,
                    stat.S_IMODE(info.st_mode) & 0o777,
                    int(info.st_mtime),
                )
            )
    keep = set(chosen)
    for rel in chosen:
        parts = rel.split("/")
        keep.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
    entries = sorted((e for e in found if e.name in keep), key=lambda e: e.name)
    for entry in entries:
        _check_archive_name(entry.name, entry.local)
    if not entries:
        raise PathError(base, "nothing to archive: every entry was filtered out (or it is empty)")
    return entries


def _stat_inside(local: str) -> os.stat_result | None:
    """Stat `local` following links (a link stores what it points to); None if it is broken."""
    try:
        return os.stat(local)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise PathError(local, f"cannot read the local file: {err}") from None


def _check_readable(local: str) -> None:
    try:
        with open(local, "rb"):
            pass
    except OSError as err:
        raise PathError(local, f"cannot read the local file: {err}") from None


def _check_archive_name(rel: str, local: str) -> None:
    """Refuse a name `extract` would refuse: archiving it would store an archive nobody can use."""
    segment = rel.rsplit("/", 1)[-1]
    reason = unsafe_local_segment(segment)
    if reason is None and rel.count("/") >= MAX_DEPTH:
        reason = f"a path deeper than {MAX_DEPTH} directories"
    if reason is None and segment.casefold().startswith(SYSTEM_PREFIX):
        reason = f"names starting with {SYSTEM_PREFIX!r} are reserved by metatree"
    try:
        size = len(rel.encode("utf-8"))
    except UnicodeEncodeError:
        reason = "the name is not valid UTF-8"
        size = 0
    if reason is None and size > MAX_PATH_BYTES:
        reason = f"a relative path longer than {MAX_PATH_BYTES} bytes"
    if reason is not None:
        raise PathError(local, f"cannot archive this local file: {reason}")


# -- stream out ----------------------------------------------------------------------------
class ArchiveReader(io.RawIOBase):
    """A read-only binary file streaming the deterministic ``.tar.gz`` of scanned entries.

    The tar stream is built here (headers from `TarInfo.tobuf`, data, padding, end blocks)
    and deflated chunk by chunk, so memory stays at a few MiB whatever the tree. Same entries,
    same bytes: sorted names, uid/gid 0, empty owner names, integer mtimes, permission bits,
    PAX for long names, and a gzip header with mtime 0, no file name and a fixed OS byte.
    `size` is None: the length is unknown until the end, so uploaders stream it.
    """

    size: int | None = None

    def __init__(
        self, entries: Sequence[ArchiveEntry], python_info: Mapping[str, object], *, level: int = 6
    ) -> None:
        super().__init__()
        level = int_in(level, "level", 0, 9)
        try:
            info = json.dumps(dict(python_info), sort_keys=True, indent=2) + "\n"
        except (TypeError, ValueError) as err:
            raise PathError(PYTHON_INFO, f"python_info is not JSON: {err}") from None
        members: list[tuple[str, ArchiveEntry | bytes]] = [(e.name, e) for e in entries]
        if PYTHON_INFO not in {e.name for e in entries}:  # the user's own file wins
            members.append((PYTHON_INFO, info.encode()))
        members.sort(key=lambda pair: pair[0])
        self._pieces = _gzip(_tar(members), level)
        self._held: deque[bytes] = deque()  # pieces made but not read yet, about 1 MiB each
        self._held_size = 0

    def readable(self) -> bool:
        """Return True: the archive is read, never written or sought."""
        return True

    def read(self, size: int | None = -1) -> bytes:
        """Return up to `size` bytes of the archive (all that is left if `size` is negative).

        Pieces are joined once into the result (no growing buffer), so a read of n bytes
        holds about n bytes plus one piece.
        """
        if self.closed:
            raise ValueError("read of a closed ArchiveReader")
        want = -1 if size is None else size
        while want < 0 or self._held_size < want:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._held.append(piece)
            self._held_size += len(piece)
        if want < 0 or want >= self._held_size:
            out = b"".join(self._held)
            self._held.clear()
            self._held_size = 0
            return out
        parts, need = [], want
        while need:
            piece = self._held.popleft()
            if len(piece) > need:
                self._held.appendleft(piece[need:])
                piece = piece[:need]
            parts.append(piece)
            need -= len(piece)
        self._held_size -= want
        return b"".join(parts)

    def readall(self) -> bytes:
        """Return the rest of the archive (in memory: for small trees and tests)."""
        return self.read(-1)

    def readinto(self, buffer: WriteableBuffer) -> int:
        """Fill `buffer` with the next bytes of the archive; return how many (0 at the end)."""
        view = memoryview(buffer).cast("B")
        data = self.read(len(view))
        view[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Stop the stream and close the local file being read, if any."""
        self._pieces.close()
        super().close()


def _gzip(tar: Generator[bytes, None, None], level: int) -> Generator[bytes, None, None]:
    """Deflate `tar` into one gzip member with a fixed header (mtime 0, no name, OS 255)."""
    xfl = 2 if level == 9 else 4 if level == 1 else 0
    yield b"\x1f\x8b\x08\x00" + struct.pack("<I", 0) + bytes([xfl, 255])
    deflate = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc, length = 0, 0
    try:
        for block in tar:
            crc, length = zlib.crc32(block, crc), length + len(block)
            out = deflate.compress(block)
            if out:
                yield out
        yield deflate.flush() + struct.pack("<II", crc, length & 0xFFFFFFFF)
    finally:
        tar.close()  # closes the local file being read, when the reader is closed early


def _tar(members: list[tuple[str, ArchiveEntry | bytes]]) -> Generator[bytes, None, None]:
    """Yield the tar stream of `members`: header, data, padding; two end blocks; record padding."""
    total = 0
    for name, member in members:
        if isinstance(member, bytes):
            head = _header(name, tarfile.REGTYPE, len(member), 0o644, 0)
            for block in (head, member, _padding(len(member))):
                total += len(block)
                yield block
            continue
        kind = tarfile.DIRTYPE if member.is_dir else tarfile.REGTYPE
        head = _header(name, kind, member.size, member.mode, member.mtime)
        if member.is_dir:
            total += len(head)
            yield head
            continue
        for block in _file_blocks(member, head):
            total += len(block)
            yield block
    end = 2 * _BLOCK + (-(total + 2 * _BLOCK) % _RECORD)
    yield bytes(end)


def _header(name: str, kind: bytes, size: int, mode: int, mtime: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type, info.size, info.mode, info.mtime = kind, size, mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def _file_blocks(entry: ArchiveEntry, head: bytes) -> Iterator[bytes]:
    """Yield a file's header and exactly the size it declares, or fail naming the file."""
    try:
        with open(entry.local, "rb") as src:
            if os.fstat(src.fileno()).st_size != entry.size:
                raise _changed(entry)
            yield head
            left = entry.size
            while left:
                chunk = src.read(min(_CHUNK, left))
                if not chunk:
                    raise _changed(entry)
                left -= len(chunk)
                yield chunk
            if src.read(1):
                raise _changed(entry)
    except StorageError:
        raise
    except OSError as err:
        raise StorageError(entry.local, f"cannot read the local file: {err}") from None
    yield _padding(entry.size)


def _changed(entry: ArchiveEntry) -> StorageError:
    return StorageError(
        entry.local,
        f"the local file changed size while it was archived (scanned {entry.size} bytes)",
    )


def _padding(size: int) -> bytes:
    return bytes(-size % _BLOCK)
