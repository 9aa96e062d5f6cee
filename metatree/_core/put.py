"""Put: carry out a `PutPlan` in the order that keeps every crash harmless.

The top new node's metadata first (so whatever a crash leaves is an orphan `claim`
recognises), then the nodes below it, then the file, hashed as it streams, then the
metadata.json of the node that receives it, with the file's record (size, sha256, time,
provenance: `metatree._records`), then the one index rewrite that makes it all visible (the
commit point). A new node receiving the file is written once, after the file, unless it is
the top new node: then it is written twice (first as the orphan marker, then with the
record). A small file (`read_small`) is read and hashed first: its new node is then written
once, final, where it would first be written (the top node before the file; in a
transaction, any), and exactly the bytes hashed are stored. In a transaction a file for a
node that existed before is staged under a reserved name and moved into place at commit,
its record staged with the node's metadata.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any

from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from metatree._core import index
from metatree._core.db import children_of, rel_path
from metatree._core.plan import PutPlan, check_target, claim, plan_put
from metatree._core.transaction import Deferred, Staged, Transaction
from metatree._localfiles import scan_source, upload
from metatree._metadata import CHILDREN
from metatree._names import METADATA_FILE, reserved_beside
from metatree._records import set_records
from metatree._transfer import read_small
from metatree.errors import AlreadyExistsError, LockLostError, MetatreeError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from metatree._core.db import Database
    from metatree._core.resolve import Target
    from metatree._transfer import Moved
    from metatree._types import NodePath, Source

__all__ = ["put"]


def put(
    db: Database,
    target: Target,
    source: Source,
    name: str,
    *,
    force: bool = False,
    recursive: bool = False,
    callback: Callback = DEFAULT_CALLBACK,
    info: Mapping[str, Any] | None = None,
) -> NodePath:
    """Store `source` as `name` in the node `target` names, creating missing nodes.

    Returns the node's path. Everything that can be checked without storage is checked
    by the caller (`info`, the caller's provenance, too); what needs the tree is checked by
    the plan before the first write.
    """
    with db.write_lock():
        tx = db.own_tx()
        with contextlib.nullcontext() if tx is None else tx.joining():
            return _put(db, tx, target, source, name, force, recursive, callback, info)


def _put(
    db: Database,
    tx: Transaction | None,
    target: Target,
    source: Source,
    name: str,
    force: bool,
    recursive: bool,
    callback: Callback,
    info: Mapping[str, Any] | None,
) -> NodePath:
    """`put` under the lock (in a transaction, joined without flushing its deferred puts)."""
    plan = plan_put(db, target, name)
    if tx is not None and tx.pending_delete(plan.claimed):
        # re-creating what this transaction removed: commit it up to here first
        db.commit(tx)
        plan = plan_put(db, target, name)
    elif tx is not None and plan.anchor in tx.pending_nodes:
        # the node it goes into is a deferred put's: written first, then read again
        tx.flush(db.storage)
        plan = plan_put(db, target, name)
    local = os.fspath(source) if isinstance(source, str | os.PathLike) else None
    # scanned once, under the lock: what _check_room sizes is exactly what is stored
    files = scan_source(local) if recursive and local and os.path.isdir(local) else None
    deferred = tx is not None and bool(plan.new) and _deferrable(db, tx, source, callback)
    final: dict[str, Any] | None = None  # the new receiving node's metadata, known now
    known: list[tuple[str, Moved]] = []
    if plan.new and files is None and not deferred and (small := read_small(source)) is not None:
        source, moved = small
        known = [("", moved)]
        final = _with_records(db, plan, known, {} if info is None else info)
        db.dump_checked(plan.node, final)  # the exact records: refused before any write
    else:
        _check_room(db, plan, files, {} if info is None else info)
    old_kind = None
    if plan.new:
        claim(db, plan, _listed(db, tx, plan))
    if tx is not None:
        tx.touch(rel_path(plan.anchor), plan.claimed.rsplit("/", 1)[-1])
        if deferred:
            _defer(db, tx, plan, source, files, {} if info is None else info)
            return plan.node
    if plan.new:
        # the top new node first: whatever a crash leaves has a metadata.json at its
        # top, so `claim` knows it for an orphan; nothing lists it until the commit.
        # If this write fails, it met something in the way, which is not ours to undo.
        top, below = plan.new[0], plan.new[1:2]
        if final is not None and not below:  # the top new node receives the file
            _write_new_node(db, (*plan.anchor, top), final, tx, owned=True)
        else:
            _write_new_node(db, (*plan.anchor, top), {CHILDREN: below} if below else {}, tx)
    else:
        old_kind = check_target(db, plan, force=force, recursive=recursive)
    stored: list[tuple[str, Moved]] = []
    try:
        stored = _put_into(
            db,
            plan,
            source,
            tx,
            force=force,
            files=files,
            callback=callback,
            old_kind=old_kind,
            final=final,
        )
        if final is not None and stored == known and (tx is not None or len(plan.new) == 1):
            if tx is not None:  # staged as written: the commit does not write it again
                tx.stage(plan.node, final)
        else:
            _record(db, plan, stored, {} if info is None else info, tx)
    except BaseException as exc:
        if tx is None and db.owns_writes() and not isinstance(exc, LockLostError):
            _take_back(db, plan, stored, old_kind)
        raise
    if plan.new:
        index.append(plan.metadata, plan.new[0], db.index_threshold)
        db.write_metadata(plan.anchor, plan.metadata, commit=True, expect=plan.version)
    return plan.node


FLUSH_FILES = 8
"""A transaction flushes once this many times its concurrency in files are deferred: a batch
long enough to keep every slot busy, short enough that a failure is found early."""


def _deferrable(db: Database, tx: Transaction, source: Source, callback: Callback) -> bool:
    """Whether a put that creates its node can wait for the transaction's flush.

    Only where uploads run concurrently (local disk and memory gain nothing: they keep the
    sequential path), only without a progress callback (a batch interleaves the bytes of
    many files), and only for sources that stay what they were when put was called: bytes
    (copied now) and local paths (read at the flush: a file changed before the block ends
    is stored as it is then, and its record says so). A file object is the caller's to close.
    """
    width = db.storage.backend.write_concurrency if tx.concurrency is None else tx.concurrency
    return (
        width > 1
        and callback is DEFAULT_CALLBACK
        and isinstance(source, bytes | bytearray | memoryview | str | os.PathLike)
    )


def _defer(
    db: Database,
    tx: Transaction,
    plan: PutPlan,
    source: Source,
    files: list[tuple[str, str]] | None,
    info: Mapping[str, Any],
) -> None:
    """Queue the writes of a put that creates its node; stage its index entry now.

    `claim` has run: the names are free under our lock. Each new node's first metadata
    (its child below, as `_put_into` writes it) is serialised now, so a metadata.json that
    could not be stored is refused by this call, as without deferral.
    """
    nodes: list[tuple[NodePath, bytes]] = []
    for depth in range(1, len(plan.new) + 1):
        path = (*plan.anchor, *plan.new[:depth])
        below = {CHILDREN: [plan.new[depth]]} if depth < len(plan.new) else {}
        nodes.append((path, db.dump_checked(path, below)))
        tx.remember(path, below, None)
    if isinstance(source, bytearray | memoryview):
        source = bytes(source)  # the caller may change it before the flush
    target = plan.target
    uploads: list[tuple[Source, str, str]] = (
        [(source, target, "")]
        if files is None
        else [(local, f"{target}/{stored}", stored) for local, stored in files]
    )

    def finish(stored: list[tuple[str, Moved]]) -> bytes:
        _record(db, plan, stored, info, tx)
        return db.dump_checked(plan.node, tx.cache[plan.node])

    tx.defer(Deferred(nodes, uploads, finish), [path for path, _ in nodes])
    index.append(plan.metadata, plan.new[0], db.index_threshold)
    db.write_metadata(plan.anchor, plan.metadata, commit=True, expect=plan.version)
    width = db.storage.backend.write_concurrency if tx.concurrency is None else tx.concurrency
    if tx.pending_files() >= FLUSH_FILES * width:
        tx.flush(db.storage)


def _listed(db: Database, tx: Transaction | None, plan: PutPlan) -> dict[str, str] | None:
    """Return what `claim` would list at the new top node, when the transaction knows: nothing.

    One listing of the anchor's directory answers for many new children (`Transaction.listed`);
    not where names fold (a case-insensitive disk would match another spelling).
    """
    if tx is None or db.case_insensitive:
        return None
    here = rel_path(plan.anchor)
    siblings = len(children_of(plan.metadata))
    free = tx.listed(here, plan.new[0], siblings, lambda: db.storage.listdir(here))
    return {} if free else None


def _check_room(
    db: Database, plan: PutPlan, files: list[tuple[str, str]] | None, info: Mapping[str, Any]
) -> None:
    """Refuse, before the first write, a put whose records could not be stored or read back.

    The node's metadata with this put's records (placeholder sizes and hashes of full
    width) must parse (a malformed record is `CorruptMetadataError`) and stay within the
    size the database reads (`MetadataError`): found after the upload, a forced put would
    already have replaced the data.
    """
    names = [plan.name]
    if files is not None:
        names = [f"{plan.name}/{stored}" for _, stored in files]
    metadata = {} if plan.new else dict(plan.metadata)
    placeholders = [(name, 10**15, "0" * 64) for name in names]
    set_records(
        metadata, plan.name, placeholders, info, db.url(plan.node), fold=db.case_insensitive
    )
    db.dump_checked(plan.node, metadata)


def _take_back(
    db: Database, plan: PutPlan, stored: list[tuple[str, Moved]], old_kind: str | None
) -> None:
    """Delete what a failed put wrote, where that restores the tree as it was.

    Only while our lease holds and locking is on (`Database.owns_writes`), and never after a
    lost conditional write: then another writer changed the node, and the path may be theirs.
    The top new node is ours and unlisted; a new file in an existing node (stored, but its
    record could not be written) is ours too. A file that replaced another cannot be taken
    back: its old bytes are gone, and its stale record fails verification (docs/format.md).
    """
    with contextlib.suppress(MetatreeError):
        if plan.new:
            db.storage.remove_tree(plan.claimed)
        elif stored and old_kind is None:
            db.delete(plan.target, tree=any(sub for sub, _ in stored))


def _put_into(
    db: Database,
    plan: PutPlan,
    source: Source,
    tx: Transaction | None,
    *,
    force: bool,
    files: list[tuple[str, str]] | None,
    callback: Callback,
    old_kind: str | None,
    final: dict[str, Any] | None = None,
) -> list[tuple[str, Moved]]:
    """Write the new nodes between the top one (`put` wrote it) and the file's; store the file.

    Returns what `upload` stored (each file's path below the target, size and sha256). In a
    transaction, a file for a node that existed before is staged instead. Nodes are written
    top down (deepest first left ``n/`` holding only ``v1/`` after a crash: a "stored
    directory" to `claim`, blocking the name for good). Outside a transaction the node that
    receives the file is written after it, by `_record`, with the file's record: the top
    new node above it already marks a crash's leftovers as an orphan. In a transaction, a
    receiving node whose `final` metadata is known (a small file, hashed first) is written
    with it, once.
    """
    anchor, new, node, target = plan.anchor, plan.new, plan.node, plan.target
    last = len(new) if tx is not None else len(new) - 1
    for depth in range(2, last + 1):
        below = {CHILDREN: [new[depth]]} if depth < len(new) else final or {}
        _write_new_node(db, (*anchor, *new[:depth]), below, tx, owned=below is final)
    if new and tx is None:
        # the file goes straight into the new node's directory: a writer whose lease ran
        # out meanwhile must not write there (the next holder may own that name now)
        db.lock.check()
    if tx is None or node in tx.created:
        # in a node this transaction created, files are flushed in one batch at its end
        unsynced = None if tx is None else tx.unsynced
        return _store(
            db, source, target, files, callback, unsynced, new_node=bool(new), old_kind=old_kind
        )
    if tx.staged_for(target) is not None and not force:  # stored by this transaction
        raise AlreadyExistsError(db.url(node, plan.name))
    staged = Staged(
        reserved_beside(target, "tx"),
        old_kind,
        files is not None,
    )
    try:
        stored = _store(db, source, staged.path, files, callback)
    except BaseException:  # a partial staged copy is nobody's: delete it
        with contextlib.suppress(MetatreeError):
            db.delete(staged.path, tree=staged.tree)
        raise
    tx.unstage(target)  # only now: a failed replace keeps the earlier staged copy
    tx.moves[target] = staged
    return stored


def _with_records(
    db: Database, plan: PutPlan, stored: list[tuple[str, Moved]], info: Mapping[str, Any]
) -> dict[str, Any]:
    """Return the metadata of a node this put creates, recording the files `stored`."""
    name = plan.name
    files = [
        (f"{name}/{sub}" if sub else name, moved.size, moved.digest or "") for sub, moved in stored
    ]
    metadata: dict[str, Any] = {}
    set_records(metadata, name, files, info, db.url(plan.node), fold=db.case_insensitive)
    return metadata


def _record(
    db: Database,
    plan: PutPlan,
    stored: list[tuple[str, Moved]],
    info: Mapping[str, Any],
    tx: Transaction | None,
) -> None:
    """Write the receiving node's metadata with the records of the files just stored.

    A node this put created is unlisted and ours: written unconditionally (in a transaction,
    staged with the node, written at its commit). An existing node's metadata is rewritten
    conditionally on the version the plan read (a commit point: the file is in place).
    """
    node, name = plan.node, plan.name
    files = [
        (f"{name}/{sub}" if sub else name, moved.size, moved.digest or "") for sub, moved in stored
    ]
    if not plan.new:
        set_records(  # _check_room checked the stored records
            plan.metadata, name, files, info, db.url(node), fold=db.case_insensitive, checked=True
        )
        db.write_metadata(node, plan.metadata, commit=True, expect=plan.version)
        return
    metadata = _with_records(db, plan, stored, info)
    if tx is None:
        db.put_metadata(node, metadata, expect=None)
    else:
        tx.stage(node, metadata)


def _write_new_node(
    db: Database,
    path: NodePath,
    metadata: dict[str, Any],
    tx: Transaction | None,
    *,
    owned: bool = False,
) -> None:
    """Write a new (still unlisted) node's metadata now; in a transaction, unflushed.

    A transaction counts the node as its own only once the write succeeded: a failed
    write met something in the way, which a rollback must not delete. It also keeps the
    bytes written (`Transaction.written`): metadata written final, with its records, is not
    written again at the commit. `owned`: the caller never changes `metadata` again (the
    transaction keeps it, uncopied).
    """
    if tx is None:
        db.put_metadata(path, metadata, expect=None)
        return
    data = db.dump_checked(path, metadata)  # a new node's index is inline (one child)
    rel = rel_path(path, METADATA_FILE)
    db.storage.write_atomic(rel, data, durable=False)
    tx.unsynced.append(rel)
    tx.remember(path, metadata, None, owned=owned)
    tx.created.add(path)
    tx.written[path] = data


def _store(
    db: Database,
    source: Source,
    rel: str,
    files: list[tuple[str, str]] | None,
    callback: Callback,
    unsynced: list[str] | None = None,
    *,
    new_node: bool = True,
    old_kind: str | None = None,
) -> list[tuple[str, Moved]]:
    """Store a file, or the scanned directory `files`; with `unsynced`, skip flushes.

    With `unsynced` the written paths are listed there for one sync at the end.

    A directory (or a file replacing one) is uploaded under a reserved staging name in
    the same node and put in place only when complete (`Storage.replace_tree`): a failure
    midway shows nothing and keeps the old data. In a node this put creates, nothing is
    visible before the index lists the node, so files go straight to their place.
    """
    if files is None and old_kind != "directory":
        return upload(db.storage, source, None, rel, callback, unsynced)
    if new_node and old_kind is None:
        return upload(db.storage, source, files, rel, callback, unsynced)
    stage = reserved_beside(rel, "staging")
    try:
        stored = upload(db.storage, source, files, stage, callback, None)
        db.storage.replace_tree(stage, rel, old_kind)
    except BaseException:
        with contextlib.suppress(MetatreeError):
            if files is None:
                db.storage.remove_file(stage)
            else:
                db.storage.remove_tree(stage)
        raise
    return stored
