"""Safe extraction of a stored ``.tar.gz`` (docs/archives.md, "Extraction").

A stored archive is input: anyone with write access to the storage controls it (DESIGN.md
invariant 6). `extract` checks every member (names, links, kinds, sizes), unpacks into a
fresh directory inside the target, reads its source to the very end (so a verifying download
raises before anything shows), checks every final name for conflicts and only then moves the
members into place.
"""

from __future__ import annotations

import math
import os
import shutil
import tarfile
import uuid
import zlib
from typing import TYPE_CHECKING, overload

from metatree._localfiles import MAX_DEPTH, UNSAFE_LOCAL, local_call
from metatree._names import SYSTEM_PREFIX
from metatree._paths import MAX_NAME_BYTES
from metatree.errors import ArchiveError, NotFoundError, PathError, StorageError

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

__all__ = [
    "MAX_BYTES",
    "MAX_MEMBERS",
    "MAX_PATH_BYTES",
    "check_extract_options",
    "check_extract_target",
    "extract",
    "extracted",
    "int_in",
    "local_path",
]

MAX_BYTES = 2**40
"""Default cap on the decompressed size of an archive (1 TiB): a gzip bomb stops there."""
MAX_MEMBERS = 1_000_000
"""Default cap on an archive's members: a million tiny files exhaust inodes before bytes."""
MAX_PATH_BYTES = 4096  # PATH_MAX of Linux: longer names cannot be created anyway
_CHUNK = 2**20  # bytes written to a local file at a time
_FEED = 2**16  # compressed bytes given to zlib at a time (see _Inflater.read)


def local_path(value: object, what: str) -> str:
    """Return `value` as a str path, or `PathError` (bytes paths and NUL are refused)."""
    path = os.fspath(value) if isinstance(value, str | os.PathLike) else None
    if not isinstance(path, str) or "\x00" in path:
        raise PathError(repr(value), f"{what} must be a local path (str or os.PathLike)")
    return path


def int_in(value: object, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise PathError(what, f"{what} must be an int from {low} to {high}, not {value!r}")
    return value


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
        self._pending, self._done, self.total = memoryview(b""), False, 0
        self.error: BaseException | None = None

    def _raw(self) -> memoryview:
        try:
            return memoryview(bytes(next(self._chunks)))
        except StopIteration:
            self._done = True
            return memoryview(b"")
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
            # fed in small pieces: zlib copies what it leaves unconsumed on every call, and
            # tarfile asks for a few KiB at a time (an 8 MiB chunk fed whole was copied over
            # and over: 70 MiB/s, against 300+ MiB/s this way)
            piece = self._pending[:_FEED]
            try:
                out += self._zlib.decompress(piece, want - len(out))
            except zlib.error as err:
                raise ArchiveError(self._name, f"not a valid gzip stream: {err}") from None
            z = self._zlib
            left = len(z.unused_data) if z.eof else len(z.unconsumed_tail)
            self._pending = self._pending[len(piece) - left :]
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


def check_extract_options(
    extract_to: object, overwrite: object, outfile: object, recursive: object, shown: str
) -> str | None:
    """Check `get`'s extraction options before any request; return the target (or None)."""
    if not isinstance(overwrite, bool):
        raise PathError(shown, f"overwrite must be True or False, not {overwrite!r}")
    if extract_to is not None and (outfile is not None or recursive):
        raise PathError(shown, "extract_to excludes outfile and recursive")
    return check_extract_target(extract_to)


def extracted(
    chunks: Iterator[bytes], target: str | None, *, overwrite: bool, name: str
) -> Iterator[bytes]:
    """Return `chunks`, or with a `target`, extract them there and return an empty iterator."""
    if target is None:
        return chunks
    extract(chunks, target, overwrite=overwrite, name=name)
    return iter(())


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
    path = os.path.abspath(local_path(target, "extract_to"))
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
    max_members: int = MAX_MEMBERS,
) -> list[str]:
    """Extract the ``.tar.gz`` streamed by `chunks` into `target`; return the names extracted.

    Members land in a fresh ``.metatree-extract-<hex>`` directory inside `target` and move into
    place only after the iterator was consumed to its very end (its own errors, such as an
    `IntegrityError` raised at the end of a verified download, propagate) and after every final
    name was checked for conflicts. A hostile or broken archive raises `ArchiveError`; on any
    failure the temp directory (and `target`, if created here) is removed, so nothing is left.
    `overwrite` replaces existing files (never a directory by a file or back) and merges
    directories; without it any existing file at a final name refuses the whole extraction.
    `max_bytes` and `max_members` bound what a hostile archive can make (disk, inodes).
    """
    max_bytes = int_in(max_bytes, "max_bytes", 1, MAX_BYTES * 2**20)
    max_members = int_in(max_members, "max_members", 1, MAX_MEMBERS * 2**10)
    target = check_extract_target(target)
    created = not os.path.lexists(target)
    if created:
        local_call(target, os.mkdir, target)
    temp = os.path.join(target, f"{SYSTEM_PREFIX}-extract-{uuid.uuid4().hex}")
    source = _Inflater(chunks, name, max_bytes)
    try:
        local_call(temp, os.mkdir, temp, 0o700)
        names = _unpack_all(source, temp, name, max_members)
        for src, dst in _plan(temp, target, overwrite, name):
            local_call(dst, os.replace, src, dst)
    except BaseException:
        shutil.rmtree(target if created else temp, ignore_errors=True)
        raise
    shutil.rmtree(temp, ignore_errors=True)  # what is left: directories merged into existing ones
    return sorted(names)


def _unpack_all(source: _Inflater, temp: str, name: str, max_members: int) -> list[str]:
    """Unpack into `temp` and read the iterator to its end; the iterator's own error wins."""
    try:
        try:
            names = _unpack(source, temp, name, max_members)
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


_MTIMES = (-(2**40), 2**40)
"""Modification times a member may carry (a PAX mtime can be NaN or 1e300: os.utime refuses)."""


def _finite(value: object) -> float:
    """Return `value` as a float, or NaN when it is not a finite number (refused as a time)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return math.nan
    return number if math.isfinite(number) else math.nan


def _unpack(source: _Inflater, temp: str, name: str, max_members: int) -> list[str]:
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
            if len(kinds) + len(parents) >= max_members:  # implied directories are inodes too
                raise _refuse(name, member.name, f"more than max_members={max_members} members")
            kind, link = _kind(member, rel, kinds, parents, name)
            if not _MTIMES[0] <= _finite(member.mtime) <= _MTIMES[1]:
                raise _refuse(
                    name, member.name, f"an impossible modification time {member.mtime!r}"
                )
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
        local_call(path, os.utime, path, (mtime, mtime))
    return list(kinds)


def _refuse(name: str, member: str, reason: str) -> ArchiveError:
    shown = repr(member) if len(member) <= 200 else f"{member[:200]!r}..."
    return ArchiveError(name, f"member {shown} refused: {reason}; nothing was extracted")


def _member_name(raw: str, name: str) -> str | None:
    """Return a member's name normalized (``a/b``), None for the root, or refuse it."""
    if not raw or raw.startswith("/"):
        raise _refuse(name, raw, "an absolute or empty name")
    if UNSAFE_LOCAL.search(raw):
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
    if len(parts) > MAX_DEPTH:
        raise _refuse(name, raw, f"a path deeper than {MAX_DEPTH} directories")
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
    if member.issparse() or getattr(member, "sparse", None) is not None:
        # tarfile expands a sparse map itself: its expanded size escapes `max_bytes`, and
        # 300 bytes of archive can declare a terabyte of holes (ArchiveReader never writes one)
        raise _refuse(name, member.name, "a sparse file")
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
    if not linkname or linkname.startswith("/") or UNSAFE_LOCAL.search(linkname):
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
