"""Directories as one deterministic ``.tar.gz``: scan, stream out, extract safely (docs/archives.md).

Pure local code, bytes in and bytes out: `scan_archive` checks a local tree before the DB lock,
`ArchiveReader` streams the archive in bounded memory (the uploader reads it like a file), and
`extract` unpacks a stored archive, which anyone with write access to the storage controls, so
every member is checked and nothing becomes visible before the whole stream was read.
"""

from __future__ import annotations

import fnmatch
import io
import json
import os
import re
import shutil
import stat
import struct
import tarfile
import uuid
import zlib
from collections import deque
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast, overload

from metatree._localfiles import unsafe_local_segment
from metatree._names import SYSTEM_PREFIX
from metatree._paths import MAX_NAME_BYTES
from metatree.errors import ArchiveError, MetatreeError, NotFoundError, PathError, StorageError

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence

    from _typeshed import WriteableBuffer

    from metatree._types import Source

__all__ = [
    "MAX_BYTES",
    "PYTHON_INFO",
    "ArchiveEntry",
    "ArchiveReader",
    "archive_source",
    "check_extract_target",
    "extract",
    "scan_archive",
    "source_of",
]

PYTHON_INFO = "python-info.json"
MAX_BYTES = 2**40
"""Default cap on the decompressed size of an archive (1 TiB): a gzip bomb stops there."""
MAX_PATH_BYTES = 4096  # PATH_MAX of Linux: longer names cannot be created anyway
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


def _local_path(value: object, what: str) -> str:
    """Return `value` as a str path, or `PathError` (bytes paths and NUL are refused)."""
    path = os.fspath(value) if isinstance(value, str | os.PathLike) else None
    if not isinstance(path, str) or "\x00" in path:
        raise PathError(repr(value), f"{what} must be a local path (str or os.PathLike)")
    return path


def _int_in(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PathError(what, f"{what} must be an int from {low} to {high}, not {value!r}")
    return value


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

    base = _local_path(directory, "the directory to archive")
    entries = scan_archive(base, include=include, exclude=exclude, hidden=hidden)
    info = {k: runtime()[k] for k in ("python", "platform", "versions")}
    chosen = name if name is not None else f"{os.path.basename(os.path.normpath(base))}.tar.gz"
    return ArchiveReader(entries, info), chosen


def source_of(
    source: Source,
    name: str | None,
    archive: object,
    include: Any,
    exclude: Any,
    hidden: Any,
) -> tuple[Source, str | None]:
    """Return the source and name a put stores: with `archive`, the directory's archive.

    The archive's options without ``archive=True`` are refused (they would be ignored).
    """
    if not isinstance(archive, bool):
        raise PathError(repr(source), f"archive must be True or False, not {archive!r}")
    if archive:
        reader, chosen = archive_source(
            source, name, include=include, exclude=exclude, hidden=hidden
        )
        return cast("IO[bytes]", reader), chosen
    if include is not None or exclude is not None or hidden is not False:
        raise PathError(repr(source), "include, exclude and hidden need archive=True")
    return source, name


# -- scan ----------------------------------------------------------------------------------
def _patterns(value: object, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    # a bare str would be iterated as one-character patterns: the most common mistake
    if not isinstance(value, list | tuple) or not all(isinstance(p, str) and p for p in value):
        raise PathError(what, f"{what} must be a list or tuple of non-empty glob strings")
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
    inc, exc = _patterns(include, "include"), _patterns(exclude, "exclude")
    if not isinstance(hidden, bool):
        raise PathError("hidden", f"hidden must be a bool, not {hidden!r}")
    base = _local_path(directory, "the directory to archive")
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
        level = _int_in(level, "level", 0, 9)
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


# -- extract -------------------------------------------------------------------------------
class _Inflater:
    """Decompress the gzip stream of `chunks` for tarfile's stream mode, counting every byte.

    The gzip layer is ours (not ``r|gz``) so that each decompressed byte, PAX headers
    included, counts against `max_bytes`, and so that the CRC and length trailer are checked
    at the end. An exception raised by the iterator itself is kept and re-raised as is.
    """

    def __init__(self, chunks: Iterable[bytes], name: str, max_bytes: int) -> None:
        self._chunks, self._name, self._max = iter(chunks), name, max_bytes
        self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
        self._pending, self._done, self.total = b"", False, 0
        self.error: BaseException | None = None

    def _raw(self) -> bytes:
        try:
            return bytes(next(self._chunks))
        except StopIteration:
            self._done = True
            return b""
        except BaseException as err:
            self.error = err
            raise

    def read(self, size: int = -1) -> bytes:
        """Return up to `size` decompressed bytes (tarfile asks a record at a time)."""
        want = _CHUNK if size < 0 else size
        out = bytearray()
        while len(out) < want:
            if not self._pending:
                if self._done:
                    break
                self._pending = self._raw()
                continue
            if self._zlib.eof:  # another gzip member follows (concatenated gzip is gzip)
                self._zlib = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out += self._zlib.decompress(self._pending, want - len(out))
            except zlib.error as err:
                raise ArchiveError(self._name, f"not a valid gzip stream: {err}") from None
            z = self._zlib
            self._pending = z.unused_data if z.eof else z.unconsumed_tail
        self.total += len(out)
        if self.total > self._max:
            raise ArchiveError(
                self._name, f"it decompresses to more than max_bytes={self._max} (a gzip bomb?)"
            )
        return bytes(out)

    def finish(self) -> None:
        """Read past the tar end blocks to the end of the iterator; refuse a truncated gzip."""
        while self.read(_CHUNK):
            pass
        if not self._zlib.eof:
            raise ArchiveError(self._name, "the gzip stream is truncated")

    def drain(self) -> None:
        """Consume the rest of the iterator unread, so that its own error (integrity) wins."""
        while not self._done:
            self._raw()


@overload
def check_extract_target(target: None) -> None: ...


@overload
def check_extract_target(target: object) -> str: ...


def check_extract_target(target: object) -> str | None:
    """Return `target` as an absolute path if an archive can be extracted there (None: none).

    Checked before any request: a str or os.PathLike, in an existing directory, and not a
    file (a missing target is created by `extract`).
    """
    if target is None:
        return None
    path = os.path.abspath(_local_path(target, "extract_to"))
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise NotFoundError(parent, "local directory to extract into")
    if os.path.lexists(path) and not os.path.isdir(path):
        raise PathError(path, "extract_to exists and is not a directory")
    return path


def extract(
    chunks: Iterable[bytes],
    target: str,
    *,
    overwrite: bool = False,
    name: str = "<archive>",
    max_bytes: int = MAX_BYTES,
) -> list[str]:
    """Extract the ``.tar.gz`` streamed by `chunks` into `target`; return the names extracted.

    Members land in a fresh ``.metatree-extract-<hex>`` directory inside `target` and move into
    place only after the iterator was consumed to its very end (its own errors, such as an
    `IntegrityError` raised at the end of a verified download, propagate) and after every final
    name was checked for conflicts. A hostile or broken archive raises `ArchiveError`; on any
    failure the temp directory (and `target`, if created here) is removed, so nothing is left.
    `overwrite` replaces existing files (never a directory by a file or back) and merges
    directories; without it any existing file at a final name refuses the whole extraction.
    """
    max_bytes = _int_in(max_bytes, "max_bytes", 1, MAX_BYTES * 2**20)
    target = check_extract_target(target)
    created = not os.path.lexists(target)
    if created:
        _local(target, os.mkdir, target)
    temp = os.path.join(target, f"{SYSTEM_PREFIX}-extract-{uuid.uuid4().hex}")
    source = _Inflater(chunks, name, max_bytes)
    try:
        _local(temp, os.mkdir, temp, 0o700)
        names = _unpack_all(source, temp, name)
        for src, dst in _plan(temp, target, overwrite, name):
            _local(dst, os.replace, src, dst)
    except BaseException:
        shutil.rmtree(target if created else temp, ignore_errors=True)
        raise
    shutil.rmtree(temp, ignore_errors=True)  # what is left: directories merged into existing ones
    return sorted(names)


def _unpack_all(source: _Inflater, temp: str, name: str) -> list[str]:
    """Unpack into `temp` and read the iterator to its end; the iterator's own error wins."""
    try:
        try:
            names = _unpack(source, temp, name)
            source.finish()
        except tarfile.TarError as err:
            raise ArchiveError(name, f"not a valid tar archive: {err}") from None
    except ArchiveError:
        source.drain()  # an IntegrityError at the end explains a broken archive better
        raise
    except BaseException:
        if source.error is not None:  # tarfile may have wrapped it: give it back as raised
            raise source.error from None
        raise
    return names


_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f]")


def _unpack(source: _Inflater, temp: str, name: str) -> list[str]:
    """Check and write each member in stream order; return the member names."""
    kinds: dict[str, str] = {}  # member name -> "dir", "file" or "symlink"
    parents: set[str] = set()  # directories implied by deeper names
    dir_times: list[tuple[str, float]] = []
    with tarfile.open(fileobj=source, mode="r|", encoding="utf-8") as tar:  # type: ignore[call-overload]
        while (member := tar.next()) is not None:
            tar.members.clear()  # stream mode keeps every header otherwise
            rel = _member_name(member.name, name)
            if rel is None:  # "." or "./": the target itself
                if member.isdir():
                    continue
                raise ArchiveError(name, f"member {member.name!r} is not a file name")
            kind, link = _kind(member, rel, kinds, parents, name)
            try:
                safe = tarfile.data_filter(member, temp)
            except tarfile.FilterError as err:
                raise ArchiveError(name, f"member {member.name!r} refused: {err}") from None
            path = os.path.join(temp, *rel.split("/"))
            try:
                _write(tar, member, safe, path, link, temp)
            except OSError as err:
                raise StorageError(path, f"local filesystem: {err}") from None
            kinds[rel] = kind
            parts = rel.split("/")
            parents.update("/".join(parts[:depth]) for depth in range(1, len(parts)))
            if kind == "dir" and safe.mtime is not None:
                dir_times.append((path, safe.mtime))
    for path, mtime in reversed(dir_times):  # after their content, which changes them
        _local(path, os.utime, path, (mtime, mtime))
    return list(kinds)


def _refuse(name: str, member: str, reason: str) -> ArchiveError:
    shown = repr(member) if len(member) <= 200 else f"{member[:200]!r}..."
    return ArchiveError(name, f"member {shown} refused: {reason}; nothing was extracted")


def _member_name(raw: str, name: str) -> str | None:
    """Return a member's name normalized (``a/b``), None for the root, or refuse it."""
    if not raw or raw.startswith("/"):
        raise _refuse(name, raw, "an absolute or empty name")
    if _UNSAFE.search(raw):
        raise _refuse(name, raw, "a backslash, NUL or control character in the name")
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError:
        raise _refuse(name, raw, "the name is not valid UTF-8") from None
    parts = [p for p in raw.rstrip("/").split("/") if p != "."]
    for part in parts:
        if part in ("", ".."):
            raise _refuse(name, raw, "an empty or '..' segment (it could leave the target)")
        if len(part.encode()) > MAX_NAME_BYTES:
            raise _refuse(name, raw, f"a name segment longer than {MAX_NAME_BYTES} bytes")
        if part.casefold().startswith(SYSTEM_PREFIX):
            raise _refuse(name, raw, f"names starting with {SYSTEM_PREFIX!r} are metatree's")
    rel = "/".join(parts)
    if len(rel.encode()) > MAX_PATH_BYTES:
        raise _refuse(name, raw, f"a path longer than {MAX_PATH_BYTES} bytes")
    return rel or None


def _kind(
    member: tarfile.TarInfo, rel: str, kinds: dict[str, str], parents: set[str], name: str
) -> tuple[str, str | None]:
    """Return the member's kind and hard-link source, refusing what could escape or clash."""
    if rel in kinds:
        raise _refuse(name, member.name, "a duplicate entry")
    parts = rel.split("/")
    for depth in range(1, len(parts)):
        above = kinds.get("/".join(parts[:depth]))
        if above == "symlink":
            raise _refuse(name, member.name, "it would be written through a symbolic link")
        if above is not None and above != "dir":
            raise _refuse(name, member.name, "a name that is both a file and a directory")
    if member.isdir():
        return "dir", None
    if rel in parents:
        raise _refuse(name, member.name, "a name that is both a file and a directory")
    if member.isreg():
        return "file", None
    if member.issym():
        _check_symlink(rel, member.linkname, name)
        return "symlink", None
    if member.islnk():
        try:
            link = _member_name(member.linkname, name) if member.linkname else None
        except ArchiveError:
            link = None
        if link is None or kinds.get(link) != "file":
            raise _refuse(
                name,
                member.name,
                f"a hard link to {member.linkname!r}: no regular file extracted before it",
            )
        return "file", link
    if member.ischr() or member.isblk():
        raise _refuse(name, member.name, "a device")
    if member.isfifo():
        raise _refuse(name, member.name, "a fifo")
    raise _refuse(name, member.name, f"an unsupported member type {member.type!r}")


def _check_symlink(rel: str, linkname: str, name: str) -> None:
    """Refuse a link leaving the target: absolute, climbing too high, or climbing after a name.

    ``..`` is allowed only at the start of the link, over the real directories the link sits
    in: after a name it could climb out of a directory that is itself a link (``d -> .``,
    then ``x -> d/../..``), which no check of the names alone can see.
    """
    if not linkname or linkname.startswith("/") or _UNSAFE.search(linkname):
        raise _refuse(name, rel, f"a link to {linkname!r} (empty, absolute or unsafe)")
    ups, named = 0, False
    for part in linkname.split("/"):
        if part == "..":
            if named:
                raise _refuse(name, rel, f"a link to {linkname!r} ('..' after a name)")
            ups += 1
        elif part not in ("", "."):
            named = True
    if ups > rel.count("/"):
        raise _refuse(name, rel, f"a link to {linkname!r}, outside the target")


def _write(
    tar: tarfile.TarFile,
    member: tarfile.TarInfo,
    safe: tarfile.TarInfo,
    path: str,
    link: str | None,
    temp: str,
) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)  # checked: only real directories above
    if member.isdir():
        os.makedirs(path, exist_ok=True)  # may exist already, implied by an earlier name
    elif member.issym():
        os.symlink(safe.linkname, path)
    elif link is not None:
        os.link(os.path.join(temp, *link.split("/")), path)
    else:
        data = tar.extractfile(member)
        if data is None:  # pragma: no cover - a regular member always has a file object
            raise ArchiveError(member.name, "no data")
        with open(path, "xb") as out:
            shutil.copyfileobj(data, out, _CHUNK)
        if safe.mode is not None:
            os.chmod(path, safe.mode)
        if safe.mtime is not None:
            os.utime(path, (safe.mtime, safe.mtime))


def _plan(temp: str, target: str, overwrite: bool, name: str) -> list[tuple[str, str]]:
    """Return the renames that put `temp`'s content into `target`, or refuse any conflict.

    Every final name is checked before anything moves. Existing real directories are merged
    (never a link to one: it could lead outside); existing files are replaced only with
    `overwrite`; a file never replaces a directory nor the reverse.
    """
    moves: list[tuple[str, str]] = []
    conflicts: list[str] = []
    stack = [(temp, target, "")]
    while stack:
        src_dir, dst_dir, prefix = stack.pop()
        for entry in sorted(os.listdir(src_dir)):
            src, dst = os.path.join(src_dir, entry), os.path.join(dst_dir, entry)
            if not os.path.lexists(dst):
                moves.append((src, dst))
                continue
            src_is_dir = os.path.isdir(src) and not os.path.islink(src)
            dst_is_dir = os.path.isdir(dst) and not os.path.islink(dst)
            if src_is_dir and dst_is_dir:
                stack.append((src, dst, f"{prefix}{entry}/"))
            elif overwrite and not src_is_dir and not dst_is_dir:
                moves.append((src, dst))
            else:
                conflicts.append(f"{prefix}{entry}")
    if conflicts:
        hint = "" if overwrite else ": pass overwrite=True to replace files"
        raise ArchiveError(
            name,
            f"{len(conflicts)} name(s) exist already in {target!r} (first {conflicts[0]!r})"
            f"{hint}; nothing was extracted",
        )
    return moves


def _local(path: str, action: Callable[..., object], *args: object) -> None:
    """Run a local filesystem action, mapping its OSError to a `StorageError` naming `path`."""
    try:
        action(*args)
    except MetatreeError:
        raise
    except OSError as err:
        raise StorageError(path, f"local filesystem: {err}") from None
