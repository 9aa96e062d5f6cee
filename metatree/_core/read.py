"""Reading the tree as this task sees it: a node's entries, the walk, exists, and get.

Inside a transaction that view includes the files it staged and leaves out the data it
removed. Everywhere, a directory no index lists and that holds a node's leftovers (an
orphan) is invisible: it is not an entry, does not exist and cannot be downloaded.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import posixpath
from typing import TYPE_CHECKING, Any, NoReturn

from metatree._core.db import children_of, rel_path
from metatree._core.integrity import Check, settle, verified, wait_for_writer
from metatree._core.resolve import EARLY_BYTES, Ahead, resolve
from metatree._localfiles import download_tree
from metatree._names import METADATA_FILE, is_reserved
from metatree._records import FileRecord, recorded_names, records_of, spelled
from metatree._waves import Later
from metatree.errors import IntegrityError, NotFoundError, UnresolvedPathError

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from fsspec.callbacks import Callback

    from metatree._core.db import Database, Fetched
    from metatree._core.resolve import Resolved, Target
    from metatree._paths import Segment
    from metatree._types import NodePath

__all__ = [
    "entries",
    "exists",
    "get",
    "holds",
    "is_orphan",
    "is_orphan_listing",
    "orphan_to_hide",
    "readable",
    "record_at",
    "walk",
]


def readable(db: Database, path: NodePath, name: str) -> str:
    """Return where the file `name` of the node is read from, as this task sees the tree.

    Inside a transaction that is the staged copy of a file it put, and nothing for data it
    removed; elsewhere the file itself. An orphan directory is never readable.
    """
    rel = rel_path(path, name)
    tx = db.active_tx()
    if tx is not None:
        if tx.pending_delete(rel):
            raise NotFoundError(db.url(path, name), "file (removed in this transaction)")
        staged = tx.staged_for(rel)
        if staged is not None:
            return staged.path
    return rel


def is_orphan_listing(listed: Mapping[str, str]) -> bool:
    """Whether an unlisted directory's entries are a node's leftovers (see `is_orphan`)."""
    return METADATA_FILE in listed or all(map(is_reserved, listed))


def is_orphan(db: Database, path: NodePath, name: str) -> bool:
    """Whether the unlisted directory `name` of the node is a node's leftover.

    An unlisted directory with a metadata.json at its top is an orphan node (a crashed
    put or remove, a transaction rolled back): a directory stored by ``put(recursive=True)``
    never holds one, since reserved names are refused in it. One holding nothing but
    system files (the temp file of a put killed before its first rename) is one too.
    """
    return is_orphan_listing(db.storage.listdir(rel_path(path, name)))


def orphan_to_hide(db: Database, path: NodePath, name: str, rel: str, *, recorded: bool) -> bool:
    """Whether the unlisted directory `name` (read at `rel`) is an orphan, hidden from reads.

    A transaction's staged copy (`rel` is not the name's own path) or a directory with
    records never is: a file planted in it, a metadata.json too, is unexpected instead.
    """
    return not recorded and rel == rel_path(path, name) and is_orphan(db, path, name)


def entries(db: Database, path: NodePath) -> list[str]:
    """Names of the node's files and children, sorted, without system entries or orphans."""
    listed = db.storage.listdir(rel_path(path))
    names = [n for n in listed if not is_reserved(n)]
    tx = db.active_tx()
    if tx is not None:  # as the transaction sees it: staged files in, removed ones out
        here = rel_path(path)
        names = [n for n in names if not tx.pending_delete(rel_path(path, n))]
        names += [posixpath.basename(t) for t in tx.moves if posixpath.dirname(t) == here]
        names = list(dict.fromkeys(names))
    unlisted_dirs = [n for n in names if listed.get(n) == "directory"]
    if unlisted_dirs:
        children = set(children_of(db.read_metadata(path)))
        hidden = {n for n in unlisted_dirs if n not in children and is_orphan(db, path, n)}
        names = [n for n in names if n not in hidden]
    return sorted(names)


def walk(db: Database, path: NodePath = ()) -> Iterator[tuple[NodePath, dict[str, Any]]]:
    """Yield every node below `path` (itself first) with its metadata, in index order.

    The depth is bounded by the tree's levels: a leaf's ``children`` (planted, or written
    by another client) is never followed. Where the backend reads concurrently, a node's
    children are read in waves of its ``read_concurrency`` (`ahead`), each sent when the
    walk reaches its first node: as many reads wait in memory as one wave holds, per level.
    """
    width = db.storage.backend.read_concurrency
    stack: list[tuple[NodePath, Fetched | None]] = [(path, None)]
    while stack:
        current, fetched = stack.pop()
        metadata = db.read_for_write(current, fetched)[0]
        yield current, metadata
        if len(current) < len(db.keys):
            children = [(*current, c) for c in children_of(metadata)]
            stack.extend(reversed(ahead(db, children, width)))


def ahead(db: Database, paths: list[NodePath], width: int) -> list[tuple[NodePath, Fetched | None]]:
    """Pair each node with its metadata.json's read, sent in waves of `width` when first asked.

    None where a wave would not pay (`width` 1: read when needed, as before), and in a
    transaction (which holds the nodes it wrote: reading them would be wasted).
    """
    if width <= 1 or len(paths) <= 1 or db.own_tx() is not None:
        return [(path, None) for path in paths]
    out: list[tuple[NodePath, Fetched | None]] = []
    for start in range(0, len(paths), width):
        group = paths[start : start + width]
        wave = Later([db.fetch(path) for path in group], width, db.storage.fs)
        out += [(path, functools.partial(wave.result, i)) for i, path in enumerate(group)]
    return out


def exists(db: Database, target: Target, last: Segment) -> bool:
    """Whether `last` (a node or file name) names something in the node `target` names."""
    try:
        node = resolve(db, target, Ahead(own=True))
        name = node.name(last)
    except (NotFoundError, UnresolvedPathError):
        return False
    return holds(node, name)


def holds(node: Resolved, name: str) -> bool:
    """Whether `name` is a child, a file or a directory of `node`, as this task sees it."""
    if name in children_of(node.metadata) and not node.is_leaf:
        return True
    db = node.db
    try:
        rel = readable(db, node.path, name)
    except NotFoundError:
        return False
    kind = db.storage.kind(rel)
    if kind == "directory":
        return not is_orphan(db, node.path, name)
    return kind is not None


def record_at(node: Resolved, name: str) -> FileRecord:
    """Return the record of the file `name` of `node` (`Metatree.stat`).

    `NotFoundError` says which is missing: the file, or only its record (stored by
    metatreedb or an older version), or it names a stored directory, whose files have one
    record each (`Node.files`).
    """
    url = node.db.url(node.path, name)
    recorded, records = _records_for(node, name, None, verify=True)
    if recorded in records:
        return records[recorded]
    if records:
        raise NotFoundError(url, "file record: it is a directory, whose files have records")
    if name in children_of(node.metadata) and not node.is_leaf:
        raise NotFoundError(url, "file (it is a node)")
    if holds(node, name):
        raise NotFoundError(url, "file record (the file was stored without one)")
    raise NotFoundError(url, "file")


def get(
    node: Resolved,
    name: str,
    outfile: str | None,
    *,
    recursive: bool,
    chunk_size: int,
    callback: Callback,
    verify: bool = True,
) -> Iterator[bytes]:
    """Stream a file, or download it (or, with `recursive`, a directory) to `outfile`.

    With `verify`, a recorded file is checked against its record (`metatree._core.integrity`):
    a download before it is moved to `outfile`, a stream at its end. Reading the record costs
    one request (the node's metadata.json), none when the node's metadata was read already.
    """
    db = node.db
    rel = readable(db, node.path, name)
    recorded, records = _records_for(node, name, None, verify)
    record = records.get(recorded)
    early = _early_file(node, name, rel, record)  # whole, and checked against its record
    if early is not None and outfile is None:
        return _slices(early, chunk_size)
    if early is not None and outfile is not None and (not recursive or len(records) <= 1):
        db.storage.get(rel, outfile, callback, data=early)  # a file: not a directory
        return _iter_local(outfile, chunk_size)
    if outfile is None:
        try:
            chunks = db.storage.iter_bytes(rel, chunk_size)
        except NotFoundError as missing:
            _gone(node, recorded, record, missing)
        if record is None:
            return chunks
        return verified(chunks, Check(db, node.path, recorded, record))
    if recursive and (record is None or len(records) > 1):  # maybe a directory
        try:
            if _get_tree(node, name, rel, outfile, callback, recorded, records):
                return iter(())
        except NotFoundError:
            if record is not None or not records:  # not recorded as a directory
                raise
            # recorded as a directory, yet gone: a forced put replacing it renames the old
            # one away before the new one in (WebHDFS has no atomic swap). Once the writer
            # holding the lock is done, look again, once, with the records as they are then.
            wait_for_writer(db)
            metadata = db.read_metadata(node.path)
            recorded, records = _records_for(node, name, metadata, verify)
            if _get_tree(node, name, rel, outfile, callback, recorded, records, metadata):
                return iter(())
            record = records.get(recorded)  # it is a file now: check it against its record
    check = None if record is None else Check(db, node.path, recorded, record).moved
    try:
        db.storage.get(rel, outfile, callback, digest="sha256" if check else None, check=check)
    except NotFoundError as missing:
        _gone(node, recorded, record, missing)
    return _iter_local(outfile, chunk_size)


def _early_file(node: Resolved, name: str, rel: str, record: FileRecord | None) -> bytes | None:
    """Return the file as the resolution's wave read it ahead (`Ahead.file`), if usable.

    Only the whole file, read where it is stored (not a transaction's staged copy), and
    only if it matches its record: that wave may have read it before the record, so bytes
    that differ are not reported but read again after it, as a read in order would. A file
    without a record that was not there raises its `NotFoundError` (it was read after the
    index that lists the node); any other failure is left to the read that follows.
    """
    if node.early is None or rel != rel_path(node.path, name):
        return None
    got = node.early.file_read(node.path, name)
    if isinstance(got, NotFoundError) and record is None:
        raise got
    if not isinstance(got, bytes) or len(got) > EARLY_BYTES:
        return None
    if record is None:
        return got
    fits = len(got) == record.size and hashlib.sha256(got).hexdigest() == record.sha256
    return got if fits else None


def _slices(data: bytes, chunk_size: int) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(data), chunk_size):
        yield bytes(view[start : start + chunk_size])


def _gone(
    node: Resolved, recorded: str, record: FileRecord | None, missing: NotFoundError
) -> NoReturn:
    """Raise for a file that could not be read: `ConflictError` if a put changed it meanwhile.

    A forced put can turn a recorded file into a directory (or remove it) between the record's
    read and the file's: that is a race, not a missing file. Otherwise `missing` itself.
    """
    if record is not None:
        with contextlib.suppress(IntegrityError):  # the record stands: simply not there
            settle(node.db, node.path, recorded, record, lambda _: False, "")
    raise missing


def _records_for(
    node: Resolved, name: str, metadata: dict[str, Any] | None, verify: bool
) -> tuple[str, dict[str, FileRecord]]:
    """Return the name `name`'s records are kept under, and them (none without `verify`).

    `metadata` is the node's (None: as `node` read it, or reads it now); without `verify`
    nothing is read: that is the request `verify=False` saves.
    """
    if not verify:
        return name, {}
    if metadata is None:
        metadata = node.metadata
    db, where = node.db, node.db.url(node.path)
    recorded = spelled(recorded_names(metadata, where), name, db.case_insensitive)
    return recorded, records_of(metadata, where, under=recorded)


def _get_tree(
    node: Resolved,
    name: str,
    rel: str,
    outfile: str,
    callback: Callback,
    recorded: str,
    records: dict[str, FileRecord],
    metadata: dict[str, Any] | None = None,
) -> bool:
    """Download `name` if it is a stored directory (each file checked); False if it is not."""
    db = node.db
    checks = {
        sub[len(recorded) + 1 :]: Check(db, node.path, sub, found)
        for sub, found in records.items()
        if sub.startswith(f"{recorded}/")
    }
    kind = db.storage.kind(rel)
    if kind is None and checks:
        raise NotFoundError(db.url(node.path, name), "directory")
    if kind != "directory":
        return False
    children = children_of(node.metadata if metadata is None else metadata)
    if name not in children and orphan_to_hide(db, node.path, name, rel, recorded=bool(checks)):
        raise NotFoundError(db.url(node.path, name), "file or directory")
    download_tree(
        db.storage,
        rel,
        outfile,
        callback,
        checks,
        lambda sub: Check.unrecorded(db, node.path, f"{recorded}/{sub}"),
    )
    return True


def _iter_local(path: str, chunk_size: int) -> Iterator[bytes]:
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            yield chunk
