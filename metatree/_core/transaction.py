"""Transaction: many writes under one hold of the DB lock, one unit that commits or not at all.

Inside ``with tree.transaction():`` metadata reads are served from a cache filled on first
read (the lock is held, so nobody else can change them), and metadata writes are staged.
What a transaction does becomes visible only when it commits:

* new nodes are written at once but stay unlisted (invisible) until an index lists them;
* a file put into a node that already exists is stored under a reserved staging name in that
  node and moved over its target at commit;
* a removed node's or file's data is deleted after the commit, never before.

At the end, after one check that the lease is still ours, the metadata of the nodes the
transaction created is written, every file of those nodes is made durable in one batch, the
staged files are moved into place, then the indexes of existing nodes are rewritten, deepest
first (DESIGN.md invariant 2), and last the removed data is deleted. An exception that leaves
the block, or any nested block (nested blocks are one unit with the outermost: there are no
savepoints), aborts the whole transaction: nothing staged is written, staged files and the
directories of nodes it created are deleted, and the block's end raises. A crash *during* the
commit can leave a prefix of it applied (no journal: these stores cannot commit several objects
at once); a crash before it leaves only unlisted data, which `fsck` reports.

The batch matters on local disk, where one fsync per file costs a journal commit each (about
1.6 ms per put of two files on the development machine, against 0.4 ms batched).

On a remote store the batch is the requests: a put that creates its node is only planned
and checked when it is called (every refusal still comes from the call), and its writes are
`Deferred` until the transaction flushes them, up to `Transaction.concurrency` at a time
(`Storage.put_many`): the new nodes' first metadata.json level by level, top first, then the
files, then, at the commit, the nodes' metadata with the files' records (a node whose small
files were hashed first is written final at once, and not again: `_measured`). Anything else in the
transaction that reads or writes flushes first (`metatree._core.db.Database.active_tx`), so it
sees every earlier put complete; a failed flush fails the transaction (`Transaction.failed`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from metatree._core.index import Children
from metatree._metadata import CHILDREN, copy_json
from metatree._names import METADATA_FILE
from metatree._transfer import COPY_CHUNK, Transfer
from metatree.errors import ConflictError, PathError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from metatree._core.db import Database
    from metatree._storage import Storage
    from metatree._transfer import Moved
    from metatree._types import NodePath, Source

__all__ = ["Deferred", "Staged", "Transaction"]


@dataclass(frozen=True, slots=True)
class Deferred:
    """The writes of one put that creates its node, waiting for the transaction's flush."""

    nodes: list[tuple[NodePath, bytes]]
    """Each new node's first metadata.json (the orphan marker of `claim`), top first."""
    uploads: list[tuple[Source, str, str]]
    """(bytes or local path, storage path, path below the put's target) of each file."""
    finish: Callable[[list[tuple[str, Moved]]], bytes]
    """Stages the receiving node's metadata with the records of what was stored; returns it
    serialised."""


@dataclass(frozen=True, slots=True)
class Staged:
    """A file or directory stored under a reserved name, to be moved over its target."""

    path: str
    """Where it was stored: a relative path beside the target, ``reserved_beside(target, "tx")``."""
    old_kind: str | None
    """What the target held when this was staged (`Storage.kind`)."""
    tree: bool
    """A directory (``put(recursive=True)`` of a local directory), not a single file."""


@dataclass
class Transaction:
    """Staged state of one transaction, owned by the task (context) that opened it."""

    pid: int = field(default_factory=os.getpid)
    """The process that opened it: a forked child inherits the context, not the transaction."""
    thread: int = field(default_factory=threading.get_ident)
    """The thread that opened it: a thread running a copy of the context (``to_thread``)
    does not hold the lock, and must not stage beside the owner."""
    cache: dict[NodePath, dict[str, Any]] = field(default_factory=dict)
    """Metadata as the transaction sees it (read or staged)."""
    versions: dict[NodePath, object] = field(default_factory=dict)
    """Stored version of each metadata read, for the conditional commit."""
    dirty: set[NodePath] = field(default_factory=set)
    """Nodes whose metadata must be written at the end."""
    created: set[NodePath] = field(default_factory=set)
    """Nodes this transaction created: nothing lists them until it commits."""
    unsynced: list[str] = field(default_factory=list)
    """Files (relative paths) written without a flush, to be made durable before the commit."""
    moves: dict[str, Staged] = field(default_factory=dict)
    """Target (relative path) -> what was staged for it, moved into place at commit."""
    deletes: list[tuple[str, bool]] = field(default_factory=list)
    """(relative path, is a tree) of removed data, deleted after the commit."""
    discarded: list[Staged] = field(default_factory=list)
    """Staged copies made pointless by a later remove or put: deleted at the end, commit or not."""
    closed: bool = False
    """Set when the block ends: contexts copied inside it must not stage into it any more."""
    failed: BaseException | None = None
    """The exception that left a nested block, or a failed flush: only a rollback is left."""
    concurrency: int | None = None
    """Uploads a flush keeps in flight (the backend's `write_concurrency` when None)."""
    check: Callable[[], None] | None = None
    """The lease check a flush makes before its files (`BaseLock.check`): a writer whose
    lease lapsed while its new nodes' markers went out stops there, as a plain put does."""
    pending: list[Deferred] = field(default_factory=list)
    """Puts whose writes wait for the next flush."""
    pending_nodes: set[NodePath] = field(default_factory=set)
    """The nodes of `pending`: not written yet."""
    deferring: bool = False
    """Set while a put runs: its own reads must not flush what it is about to join."""
    listings: dict[str, dict[str, str]] = field(default_factory=dict)
    """Directory listings of the nodes new children were claimed in (see `listed`)."""
    written: dict[NodePath, bytes] = field(default_factory=dict)
    """Metadata a flush wrote final (with its records): the commit rewrites only a change."""
    claims: dict[str, int] = field(default_factory=dict)
    """Claims made in each node's directory, to decide when its one listing pays."""

    @contextlib.contextmanager
    def joining(self) -> Iterator[None]:
        """Run a put: reads inside it do not flush (the put decides when to)."""
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False

    def defer(self, deferred: Deferred, nodes: list[NodePath]) -> None:
        """Queue a put's writes; `nodes` are the nodes it creates (counted as ours now).

        They join `created` before anything is written: `claim` found their names free (or
        cleared an orphan) under our lock, so whatever appears there is ours to roll back.
        """
        self.pending.append(deferred)
        self.pending_nodes.update(nodes)
        self.created.update(nodes)

    def pending_files(self) -> int:
        """How many files wait for the next flush."""
        return sum(len(d.uploads) for d in self.pending)

    def flush(self, storage: Storage) -> None:
        """Write what the pending puts deferred, concurrently; on failure, fail the transaction.

        Level by level, so that a new node's metadata.json exists before anything below it
        (a crash then leaves orphans `claim` and fsck recognise), then every file; the node of
        a put whose files are small is written final, with records hashed first and checked
        against the upload's own hash (`_measured`). A failure
        or an interrupt leaves only unlisted data of nodes in `created`, which the rollback
        deletes; the transaction can no longer commit.
        """
        pending, self.pending = self.pending, []
        if not pending:
            return
        try:
            known = {i: _measured(d.uploads) for i, d in enumerate(pending)}
            markers: list[tuple[int, NodePath, bytes]] = []
            for i, d in enumerate(pending):
                nodes = list(d.nodes)
                records = known[i]
                if records is not None:  # the receiving node's first write is its last
                    path = nodes[-1][0]
                    nodes[-1] = (path, d.finish(records))
                    self.written[path] = nodes[-1][1]
                markers.extend((len(path), path, data) for path, data in nodes)
            for depth in sorted({depth for depth, _, _ in markers}):
                level = [(data, _metadata_rel(path)) for d, path, data in markers if d == depth]
                storage.put_many(level, durable=False, concurrency=self.concurrency)
                self.unsynced.extend(rel for _, rel in level)
            if self.check is not None:
                self.check()
            files = [(source, rel) for d in pending for source, rel, _ in d.uploads]
            moved = iter(
                storage.put_many(
                    files, durable=False, digest="sha256", concurrency=self.concurrency
                )
            )
            self.unsynced.extend(rel for _, rel in files)
            for i, d in enumerate(pending):
                stored = [(sub, next(moved)) for _, _, sub in d.uploads]
                records = known[i]
                if records is None:
                    d.finish(stored)
                elif stored != records:  # a local file changed between its hash and upload
                    _changed(storage, d.uploads, stored, records)
        except BaseException as exc:
            self.failed = self.failed or exc
            raise
        finally:
            self.pending_nodes.clear()

    def write_created(self, db: Database, writes: list[tuple[NodePath, dict[str, Any]]]) -> None:
        """Write the metadata of the nodes this transaction created (unlisted: any order).

        Concurrently where the backend gains (`Storage.put_many`), else one by one. A node a
        flush already wrote final (`written`) is written again only if it changed since.
        """
        width = (
            db.storage.backend.write_concurrency if self.concurrency is None else self.concurrency
        )
        # a new node past the index threshold already (format v2): its log is written too
        logged = [(p, m) for p, m in writes if isinstance(m.get(CHILDREN), Children)]
        writes = [(p, m) for p, m in writes if not isinstance(m.get(CHILDREN), Children)]
        for path, metadata in logged:
            db.put_metadata(path, metadata, expect=None, durable=False)
            self.unsynced.append(_metadata_rel(path))
        todo = [(path, metadata, db.dump_checked(path, metadata)) for path, metadata in writes]
        todo = [
            (path, metadata, data)
            for path, metadata, data in todo
            if self.written.get(path) != data
        ]
        rels = [_metadata_rel(path) for path, _, _ in todo]
        if width > 1 and len(todo) > 1:
            items = [(data, rel) for (_, _, data), rel in zip(todo, rels, strict=True)]
            db.storage.put_many(items, durable=False, concurrency=width)
        else:
            for path, metadata, _ in todo:
                db.put_metadata(path, metadata, expect=None, durable=False)
        self.unsynced.extend(rels)

    def committed(self) -> None:
        """Forget what a commit made stale (later reads in the block read again)."""
        self.cache.clear()
        self.versions.clear()
        self.listings.clear()
        self.claims.clear()
        self.written.clear()

    def drop_pending(self) -> None:
        """Forget puts never flushed (a rollback): nothing of theirs was written."""
        self.created -= self.pending_nodes
        self.pending = []
        self.pending_nodes.clear()

    def listed(
        self, here: str, name: str, siblings: int, listdir: Callable[[], dict[str, str]]
    ) -> bool:
        """Whether `name` is free in the directory `here`, from one listing of it; False: ask.

        A transaction creating many children of one node would list each new name's directory
        (`claim`): one request each. Once the claims made in `here` have cost as many
        requests as one listing of it would (a page per 1 000 `siblings`), it is listed once;
        under our lock nobody else changes it, and every name this transaction stores in it
        is added (`touch`), so such a name is always asked about again.
        """
        listing = self.listings.get(here)
        if listing is None:
            made = self.claims[here] = self.claims.get(here, 0) + 1
            if made <= 1 + siblings // 1000:
                return False
            listing = self.listings[here] = listdir()
        return name not in listing

    def touch(self, here: str, name: str) -> None:
        """Note that this transaction stores `name` in the directory `here` (see `listed`)."""
        listing = self.listings.get(here)
        if listing is not None:
            listing[name] = "written"

    def get(self, path: NodePath) -> dict[str, Any] | None:
        """Return a copy of the cached metadata (callers may change what they get)."""
        cached = self.cache.get(path)
        return None if cached is None else _copy(cached)

    def remember(
        self, path: NodePath, metadata: dict[str, Any], version: object, *, owned: bool = False
    ) -> None:
        """Cache metadata just read from storage, with its stored version.

        `owned`: the caller gives `metadata` up (a new node's, as just written), no copy.
        """
        self.cache[path] = metadata if owned else _copy(metadata)
        self.versions[path] = version

    def stage(self, path: NodePath, metadata: dict[str, Any]) -> None:
        """Stage a write (the caller gives up `metadata`)."""
        self.cache[path] = metadata
        self.dirty.add(path)

    def forget(self, path: NodePath) -> None:
        """Drop a removed node and everything below it from the transaction's view."""
        size = len(path)
        for known in [p for p in self.cache if p[:size] == path]:
            del self.cache[known]
            self.dirty.discard(known)
            self.versions.pop(known, None)
        self.created = {p for p in self.created if p[:size] != path}

    def pending_delete(self, rel: str) -> bool:
        """Whether `rel`, or a directory above it, is data this transaction removed."""
        return any(rel == gone or rel.startswith(f"{gone}/") for gone, _ in self.deletes)

    def staged_for(self, target: str) -> Staged | None:
        """Return what will become `target` at commit, if this transaction staged it."""
        return self.moves.get(target)

    def unstage(self, target: str) -> bool:
        """Forget the staged copy for `target` (removed or replaced); return if there was one."""
        staged = self.moves.pop(target, None)
        if staged is None:
            return False
        self.discarded.append(staged)
        return True

    def unstage_below(self, rel: str) -> None:
        """Forget staged copies whose target lies in the removed directory `rel`."""
        for target in [t for t in self.moves if t.startswith(f"{rel}/")]:
            self.discarded.append(self.moves.pop(target))

    def writes(self) -> list[tuple[NodePath, dict[str, Any]]]:
        """Return the staged writes, created nodes first, then deepest first; forget them."""
        order = sorted(self.dirty, key=lambda p: (p not in self.created, -len(p), p))
        self.dirty = set()
        return [(path, self.cache[path]) for path in order]


PREHASH_MAX = 8 * 2**20
"""Largest file a flush hashes before it uploads it (see `_measured`)."""


def _measured(uploads: list[tuple[Source, str, str]]) -> list[tuple[str, Moved]] | None:
    """Return the records of a put's small files, hashed before the upload; None: not small.

    With its records known, the node's metadata.json is written once, final, before the
    files (an unlisted node with a metadata.json at its top is an orphan `claim` and fsck
    recognise, as the plain marker was): one request fewer per put. The upload hashes the
    bytes again, and a difference fails the transaction, so the records stay exact. A file
    above `PREHASH_MAX`, or one that cannot be looked at now, goes the three-write way (its
    upload then reports what is wrong).
    """
    out = []
    for source, _, sub in uploads:
        if isinstance(source, str | os.PathLike):
            try:
                info = os.stat(source)
            except OSError:
                return None
            if not stat.S_ISREG(info.st_mode):  # replaced since the call (a FIFO would hang)
                raise PathError(os.fspath(source), "no longer a regular file: nothing was stored")
            if info.st_size > PREHASH_MAX:
                return None
        elif not isinstance(source, bytes):
            return None
        with Transfer(digest="sha256") as transfer, transfer.source(source) as upload:
            while upload.read(COPY_CHUNK):
                pass
        out.append((sub, transfer.result()))
    return out


def _changed(
    storage: Storage,
    uploads: list[tuple[Source, str, str]],
    stored: list[tuple[str, Moved]],
    records: list[tuple[str, Moved]],
) -> None:
    """Raise `ConflictError` for the first file whose upload differs from its record."""
    for (_, rel, _), got, recorded in zip(uploads, stored, records, strict=True):
        if got != recorded:
            raise ConflictError(
                storage.url_of(rel), "the local file changed while it was stored; put it again"
            )


def _metadata_rel(path: NodePath) -> str:
    return "/".join((*path, METADATA_FILE))


def _copy(metadata: dict[str, Any]) -> dict[str, Any]:
    """Copy metadata deeply, but the children index (a list of str) with one C-level copy.

    A plain deepcopy visits every name of the index: at 10 000 children it dominated a
    transaction's CPU time. The rest is JSON (`copy_json`); a v2 index (`Children`) is
    immutable: shared, never copied.
    """
    children = metadata.get(CHILDREN)
    if not isinstance(children, list | Children):
        return {k: copy_json(v) for k, v in metadata.items()}
    rest = {k: copy_json(v) for k, v in metadata.items() if k != CHILDREN}
    return {CHILDREN: list(children) if isinstance(children, list) else children, **rest}
