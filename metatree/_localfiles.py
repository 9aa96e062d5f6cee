"""The local side of put and get: local directory trees in, stored trees out.

A recursive put reads a local directory that the user controls; a recursive get writes stored
names, which anyone with write access to the bucket controls, onto the local disk. Both are
checked whole before the first byte moves (DESIGN.md invariants 4 to 6): a put refuses names
that could never be stored safely, a get refuses names that could leave the download directory
(zip-slip), and a download appears at its final name only when it is complete.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import re
import shutil
import stat
import uuid
from typing import TYPE_CHECKING, Any

from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from metatree._names import SYSTEM_PREFIX
from metatree._paths import MAX_NAME_BYTES, check_name
from metatree._transfer import Moved, TreeCallback, run_bounded
from metatree.errors import (
    AlreadyExistsError,
    ConflictError,
    MetatreeError,
    NotFoundError,
    PathError,
    StorageError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from metatree._core.integrity import Check
    from metatree._storage import Storage
    from metatree._types import Source

__all__ = [
    "MAX_DEPTH",
    "UNSAFE_LOCAL",
    "check_chunk_size",
    "check_flag",
    "check_local_outfile",
    "check_source",
    "download_tree",
    "is_text_stream",
    "local_call",
    "local_read_error",
    "local_within",
    "real_local",
    "scan_source",
    "upload",
]

UNSAFE_LOCAL = re.compile(r"[\\\x00-\x1f\x7f]")
"""What a stored name may not hold to become a local path component (a separator, controls)."""


MAX_DEPTH = 256
"""Deepest local path a download or an extraction makes (os.makedirs recurses per level)."""

MAX_CHUNK = 2**30
"""Largest `chunk_size` (1 GiB): larger reads only exhaust memory (or overflow ``read``)."""


def real_local(path: str | os.PathLike[str]) -> str:
    """Return where a local path really is: links resolved, in the letter case the disk compares.

    ``os.path.normcase`` folds it on Windows; macOS's default disk folds too, unseen here.
    """
    return os.path.normcase(os.path.realpath(os.fspath(path)))


def local_within(path: str, base: str) -> bool:
    """Whether the `real_local` `path` is `base` or below it, segment by segment.

    ``/x/db2`` is not within ``/x/db``; a path on another drive (Windows) is not either.
    """
    try:
        return os.path.commonpath([path, base]) == base
    except ValueError:
        return False


def check_chunk_size(chunk_size: object, shown: str) -> int:
    """Return `chunk_size` if it is a positive int, else `PathError` (``0`` used to read b"")."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size <= 0:
        raise PathError(shown, f"chunk_size must be a positive int, not {chunk_size!r}")
    if chunk_size > MAX_CHUNK:
        raise PathError(shown, f"chunk_size must be at most {MAX_CHUNK} (1 GiB)")
    return chunk_size


def check_flag(value: object, name: str, shown: str) -> bool:
    """Refuse a switch that is not a bool (``verify="no"`` is truthy), before any I/O."""
    if not isinstance(value, bool):
        raise PathError(shown, f"{name} must be True or False, not {value!r}")
    return value


def check_callback(callback: object, shown: str) -> None:
    """Refuse a progress callback that is not an fsspec `Callback`, before any I/O."""
    if not isinstance(callback, Callback):
        raise PathError(
            shown,
            f"callback must be an fsspec.callbacks.Callback, not {type(callback).__name__} "
            "(fsspec.callbacks.TqdmCallback draws a progress bar)",
        )


def is_text_stream(source: object) -> bool:
    """Whether a file object yields str: it would fail with a raw TypeError mid-upload.

    ``read(0)`` consumes nothing from any stream, so it is asked before anything is written.
    """
    if isinstance(source, io.TextIOBase):
        return True
    read = getattr(source, "read", None)
    if read is None:
        return False
    try:
        probe = read(0)
    except Exception:  # noqa: BLE001 - a stream that cannot answer is judged when it is read
        return False
    return isinstance(probe, str)


def check_local_outfile(outfile: object) -> str | None:
    """Return `outfile` as a str after checking it can receive a download, before any I/O."""
    if outfile is None:
        return None
    if not isinstance(outfile, str | os.PathLike):
        raise PathError(repr(outfile), "outfile must be a local path (str or os.PathLike)")
    local = os.fspath(outfile)
    if not isinstance(local, str):
        raise PathError(repr(outfile), "outfile must be a str path, not bytes")
    if "\x00" in local:
        raise PathError(repr(outfile), "outfile holds a NUL character")
    if os.path.lexists(local):
        raise AlreadyExistsError(local, "get will not overwrite a local file")
    parent = os.path.dirname(os.path.abspath(local))
    if not os.path.isdir(parent):
        raise NotFoundError(parent, "local directory to download into")
    return local


def check_source(source: object, name: str | None, shown: str, recursive: bool) -> str:
    """Validate what `put` was given and return the stored file's name, before any I/O.

    A local directory put with `recursive` is scanned whole here (every name, every file
    readable, no empty directory), so a bad name deep inside fails before the DB lock.
    """
    if isinstance(source, str | os.PathLike):
        local = os.fspath(source)
        if not os.path.exists(local):
            raise NotFoundError(local, "local file to put")
        mode = _stat(local, local).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
            # opening a FIFO blocks until a writer comes: under the DB lock, every writer waits
            raise PathError(local, "not a regular file or directory (a fifo, socket, ...)")
        if stat.S_ISDIR(mode):
            if not recursive:
                raise PathError(shown, f"{local!r} is a directory: pass recursive=True")
            scan_source(local)
        chosen = name if name is not None else os.path.basename(os.path.normpath(local))
    elif isinstance(source, bytes | bytearray | memoryview) or hasattr(source, "read"):
        if name is None:
            raise PathError(shown, "put of bytes or a file object needs name=")
        if is_text_stream(source):
            raise PathError(shown, "the file object is open in text mode: open it with 'rb'")
        chosen = name
    else:
        raise PathError(shown, f"cannot put a {type(source).__name__}: give a path, bytes or file")
    return check_name(chosen, shown)


# -- put: a local directory tree ----------------------------------------------------------
def scan_source(base: str) -> list[tuple[str, str]]:
    """Return every file below the local directory `base` as (local path, stored path).

    Everything is checked before the caller writes anything: each name as a stored name
    (`check_name`: glob characters, reserved names, controls, ...), each file readable.
    Symbolic links are followed (a link to a directory stores the directory), with loop
    protection. Empty directories (the source itself included) are refused, since object
    stores cannot hold them and a silent loss is worse. Errors name the local path.
    """
    out: list[tuple[str, str]] = []
    top = _stat(base, base)
    stack: list[tuple[str, str, frozenset[tuple[int, int]]]] = [
        (base, "", frozenset({(top.st_dev, top.st_ino)}))
    ]
    while stack:
        folder, prefix, ancestors = stack.pop()
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
        except OSError as exc:
            raise StorageError(folder, f"cannot list the local directory: {exc}") from None
        if not entries:
            raise PathError(
                folder,
                "an empty local directory cannot be stored (object stores have no empty "
                "directories): put a file in it or remove it",
            )
        for entry in reversed(entries):
            local = entry.path
            try:
                check_name(entry.name, local)
            except PathError as exc:
                raise PathError(local, f"cannot store this local file: {exc.reason}") from None
            stored = f"{prefix}{entry.name}"
            info = _stat(local, base)
            if stat.S_ISDIR(info.st_mode):
                ident = (info.st_dev, info.st_ino)
                if ident in ancestors:
                    raise PathError(local, "a symbolic link loops back to a directory above it")
                stack.append((local, f"{stored}/", ancestors | {ident}))
            elif stat.S_ISREG(info.st_mode):
                _check_readable(local)
                out.append((local, stored))
            else:
                raise PathError(local, "not a regular file or directory (a fifo, socket, ...)")
    out.sort(key=lambda pair: pair[1])
    return out


def _stat(local: str, base: str) -> os.stat_result:
    try:
        return os.stat(local)  # follows links: a link stores what it points to
    except FileNotFoundError:
        what = "local file to put" if local == base else "target of the local file (a broken link)"
        raise NotFoundError(local, what) from None
    except OSError as exc:
        raise StorageError(local, f"cannot read the local file: {exc}") from None


def _check_readable(local: str) -> None:
    problem = local_read_error(local)
    if problem is not None:
        raise problem


def local_read_error(local: str) -> MetatreeError | None:
    """Return the error naming `local` if it cannot be opened for reading now, else None.

    Asked after an upload failed: a local file that vanished or became unreadable midway is
    the cause, and the error must name it rather than the destination.
    """
    try:
        with open(local, "rb"):
            return None
    except FileNotFoundError:
        return NotFoundError(local, "local file to put")
    except OSError as exc:
        return StorageError(local, f"cannot read the local file: {exc}")


def upload(
    storage: Storage,
    source: Source,
    files: list[tuple[str, str]] | None,
    rel: str,
    callback: Callback,
    unsynced: list[str] | None,
) -> list[tuple[str, Moved]]:
    """Put `source` (`files` None) or a scanned directory's `files` below `rel`.

    Returns each stored file's path below `rel` (``""`` for `source` itself) with its size
    and sha256, hashed as the bytes passed (the file records). With `unsynced`, flushes are
    skipped and the written paths listed for a later sync. A failure whose cause is a local
    file (gone or unreadable midway) names that file. The files of a directory report
    progress as one transfer (`TreeCallback`).
    """
    width = storage.backend.write_concurrency
    if files is not None and len(files) > 1 and width > 1 and callback is DEFAULT_CALLBACK:
        # no progress to keep in order: the files go up concurrently (`Storage.put_many`)
        items = [(local, f"{rel}/{stored}") for local, stored in files]
        sent = storage.put_many(items, durable=unsynced is None, digest="sha256")
        if unsynced is not None:
            unsynced.extend(target for _, target in items)
        return [(stored, m) for (_, stored), m in zip(files, sent, strict=True)]
    targets = [(source, "")] if files is None else [(f, f"/{s}") for f, s in files]
    progress = TreeCallback(callback)
    stored: list[tuple[str, Moved]] = []
    for one, sub in targets:
        target = f"{rel}{sub}"
        try:
            moved = storage.put(one, target, progress, durable=unsynced is None, digest="sha256")
        except MetatreeError as exc:
            local = os.fspath(one) if isinstance(one, str | os.PathLike) else None
            problem = None if local is None else local_read_error(local)
            if problem is not None:
                raise problem from exc
            raise
        if unsynced is not None:
            unsynced.append(target)
        stored.append((sub.lstrip("/"), moved))
        progress.next_file()
    return stored


# -- get: a stored directory tree ---------------------------------------------------------
def unsafe_local_segment(segment: str) -> str | None:
    """Why the stored name `segment` cannot become one local path component, or None."""
    if segment in ("", ".", ".."):
        return f"{segment!r} would leave the download directory"
    bad = UNSAFE_LOCAL.search(segment)
    if bad:
        return f"it contains {bad.group()!r} (a separator or a control character)"
    if len(segment.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
        return f"a name longer than {MAX_NAME_BYTES} bytes"
    return None


def download_tree(
    storage: Storage,
    rel: str,
    outfile: str,
    callback: Callback,
    checks: Mapping[str, Check] | None = None,
    unrecorded: Callable[[str], Check] | None = None,
) -> None:
    """Download the stored directory `rel` to the new local directory `outfile`.

    The whole listing is checked first: one name that could leave `outfile` (``..``, an
    absolute or empty segment, a backslash, a control character) refuses the download, with
    `PathError` naming the stored key, before anything is written. Names starting with
    ``.metatree`` are metatree's own leftovers (a killed put's temp file) and are skipped.
    Files land in a fresh directory beside `outfile`, renamed into place once complete, so
    a failure leaves no partial directory. A file with a record in `checks` (by its path
    below `rel`) is hashed as it downloads and checked against it (`IntegrityError`); a
    recorded file the listing lacks, or a listed file without a record in a recorded
    directory (`unrecorded` makes its check), fails the download before anything is written.
    """
    version = storage.tree_version(rel)
    plan: list[list[str]] = []
    for sub in storage.walk_files(rel):
        parts = sub.split("/")
        if len(parts) > MAX_DEPTH:  # os.makedirs recurses once per level
            raise PathError(
                storage.url_of(rel),
                f"a stored name {len(parts)} directories deep (at most {MAX_DEPTH}) cannot be "
                "downloaded; nothing was written",
            )
        for part in parts:
            reason = unsafe_local_segment(part)
            if reason is not None:
                raise PathError(
                    storage.url_of(f"{rel}/{sub}"),
                    f"this stored name cannot be downloaded: {reason}; nothing was written",
                )
        if not any(part.startswith(SYSTEM_PREFIX) for part in parts):
            plan.append(parts)
    _refuse_file_and_directory(storage, rel, plan)
    listed = {"/".join(parts) for parts in plan}
    checks = dict(checks or {})
    for sub, recorded in sorted(checks.items()):
        if sub not in listed:
            recorded.missing()  # recorded, not stored: never a directory with a file left out
    if checks and unrecorded is not None:  # a recorded directory: its put stored every file
        for sub in sorted(listed - set(checks)):
            checks[sub] = unrecorded(sub)  # planted: IntegrityError, unless a put records it
    parent, name = os.path.split(os.path.abspath(outfile))
    partial = os.path.join(parent, f".{name}.metatree-partial-{uuid.uuid4().hex}")
    local_call(partial, os.mkdir, partial)
    progress = TreeCallback(callback)
    try:
        try:
            for parts in plan:
                folder = os.path.dirname(os.path.join(partial, *parts))
                local_call(folder, os.makedirs, folder, exist_ok=True)

            def fetch(parts: list[str], each: Callback) -> None:
                check = checks.get("/".join(parts))
                storage.get(
                    f"{rel}/{'/'.join(parts)}",
                    os.path.join(partial, *parts),
                    each,
                    digest=None if check is None else "sha256",
                    check=None if check is None else check.moved,
                )

            width = storage.backend.read_concurrency
            if width > 1 and len(plan) > 1 and callback is DEFAULT_CALLBACK:
                run_bounded([functools.partial(fetch, parts) for parts in plan], width)
            else:
                for parts in plan:
                    fetch(parts, progress)
                    progress.next_file()
        except NotFoundError:
            _check_same_tree(storage, rel, version)
            raise
        _check_same_tree(storage, rel, version)
        _check_one_put(storage, rel, checks)
        local_call(outfile, _rename_new, partial, outfile)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(partial)
        raise


def _check_one_put(storage: Storage, rel: str, checks: Mapping[str, Check]) -> None:
    """Raise `ConflictError` if the recorded files came from more than one put.

    A recursive put records all its files under one put; each file is checked against the
    record current when it was read, so a directory replaced midway on an object store
    (where `_check_same_tree` cannot see it) would pass file by file with a mix of versions.
    """
    if len({check.record.provenance.uuid for check in checks.values()}) > 1:
        raise ConflictError(
            storage.url_of(rel), "the directory was replaced while it was downloaded; retry"
        )


def _check_same_tree(storage: Storage, rel: str, version: object) -> None:
    """Raise `ConflictError` if the directory was replaced while it was downloaded.

    Each file is read whole from one version, but a directory replaced meanwhile (a forced
    recursive put renames a new one into place) would mix files of both. Where the backend
    cannot identify a directory (object stores), see docs/hardening-storage.md.
    """
    if version is None:
        return
    try:
        now = storage.tree_version(rel)
    except NotFoundError:
        now = None
    if now != version:
        raise ConflictError(
            storage.url_of(rel), "the directory was replaced while it was downloaded; retry"
        )


def _refuse_file_and_directory(storage: Storage, rel: str, plan: list[list[str]]) -> None:
    """Refuse a listing where one name is a file and a directory (an S3 key and a prefix).

    A local directory cannot hold both; found midway, it would fail after writing.
    """
    files = {"/".join(parts) for parts in plan}
    for parts in plan:
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in files:
                raise PathError(
                    storage.url_of(f"{rel}/{folder}"),
                    "this stored name is both a file and a directory, which a local disk "
                    "cannot hold; nothing was written",
                )


def _rename_new(src: str, dst: str) -> None:
    """Rename the complete download into place, never over something that appeared since."""
    if os.path.lexists(dst):
        raise AlreadyExistsError(dst, "get will not overwrite a local file")
    os.rename(src, dst)


def local_call(path: str, action: Callable[..., object], *args: Any, **kwargs: Any) -> None:
    """Run ``action(*args, **kwargs)`` on the local disk; its OSError becomes one naming `path`."""
    try:
        action(*args, **kwargs)
    except MetatreeError:
        raise
    except OSError as exc:
        raise StorageError(path, f"local filesystem: {exc}") from None
