"""Database: the tree's operations, built only on `Storage` primitives and the DB lock.

Nodes are addressed by their path, a tuple of names from the root. A node exists when its
parent's ``children`` index lists it; writes keep that true by ordering (DESIGN.md invariant 2):
a file, then new nodes' metadata.json deepest first, then the one index rewrite that makes
them visible. A crash at any step leaves at worst an unlisted orphan.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import posixpath
import threading
import unicodedata
import warnings
from typing import TYPE_CHECKING, Any

from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from metatree._localfiles import (
    check_local_outfile,
    download_tree,
    is_text_stream,
    scan_source,
    upload,
)
from metatree._locking import BaseLock, LeaseInfo, check_lock_options, make_lock
from metatree._metadata import (
    CHILDREN,
    Config,
    check_keys,
    check_metadata_update,
    dump_metadata,
    load_metadata,
)
from metatree._names import CONFIG_FILE, METADATA_FILE, is_reserved, reserved_beside
from metatree._paths import (
    Literal,
    Location,
    Placeholder,
    Segment,
    check_name,
    resolve_segment,
)
from metatree._transaction import Staged, Transaction
from metatree._types import NodePath, Source
from metatree.errors import (
    AlreadyExistsError,
    ConflictError,
    CorruptMetadataError,
    DatabaseError,
    LockError,
    LockLostError,
    MetatreeError,
    NotFoundError,
    PathError,
    TransactionAbortedError,
    UnresolvedPathError,
)
from metatree.warnings import MetatreeWarning

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from metatree._storage import Storage

__all__ = ["Database", "NodePath", "check_outfile", "check_source"]

EMPTY_METADATA = b"{}"


def _rel(path: NodePath, *more: str) -> str:
    return "/".join((*path, *more))


def children_of(metadata: Mapping[str, Any]) -> list[str]:
    """Return the node's children index."""
    children: list[str] = metadata.get(CHILDREN, [])
    return children


class Database:
    """A metatree database on a `Storage`.

    Use `Database.open`; the constructor takes already validated parts.
    """

    max_metadata_bytes: int = 256 * 2**20
    """A metadata.json larger than this is corrupt, and only this much of it is read: a
    planted giant index must not be read whole. 256 MiB holds an index of several million
    children (issue 16 plans a sharded index past that)."""

    def __init__(
        self, storage: Storage, config: Config, lock: BaseLock, lock_options: dict[str, float]
    ) -> None:
        self.storage = storage
        self.config = config
        self.lock = lock
        self.lock_options = lock_options
        # the transaction belongs to the task that opened it (asyncio tasks of one thread too)
        self._tx: contextvars.ContextVar[Transaction | None] = contextvars.ContextVar(
            f"metatree-tx-{id(self)}", default=None
        )
        self._tx_thread: tuple[int, int] | None = None
        self.case_insensitive = _probe_case_insensitive(storage)

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _reopen, (self.storage, self.config.keys, self.lock_options)

    @property
    def keys(self) -> tuple[str, ...]:
        """The levels of the tree."""
        return self.config.keys

    # -- opening ------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        storage: Storage,
        keys: tuple[str, ...] | list[str] | None = None,
        locking_enabled: bool | None = None,
        *,
        create: bool = True,
        lock_timeout: float = 60.0,
        lock_ttl: float = 30.0,
    ) -> Database:
        """Open the database at `storage`, creating it when `create` and the root is empty.

        `keys` must match the stored ones (None reads them). The stored `locking_enabled`
        wins over the argument, with a warning when they differ, as metatreedb did.
        """
        wanted = None if keys is None else check_keys(keys, storage.url)
        check_lock_options(storage.url, lock_ttl, lock_timeout)  # before anything is written
        try:
            config = Config.from_bytes(storage.read_bytes(CONFIG_FILE), storage.url)
        except NotFoundError as exc:
            cls._check_root(storage, exc)
            if not create or wanted is None:
                reason = "no database here" + ("" if create else " (create=False)")
                raise DatabaseError(storage.url, f"{reason}; pass keys to create one") from None
            config = cls._create(
                storage, wanted, True if locking_enabled is None else locking_enabled
            )
        if wanted is not None and wanted != config.keys:
            raise DatabaseError(
                storage.url,
                f"it was created with keys {list(config.keys)}, not {list(wanted)}; "
                "pass keys=None to use the stored ones",
            )
        if locking_enabled is not None and locking_enabled != config.locking_enabled:
            warnings.warn(
                f"{storage.url} was created with locking_enabled={config.locking_enabled}; "
                "the stored setting is used",
                MetatreeWarning,
                stacklevel=3,
            )
        lock = make_lock(
            storage, enabled=config.locking_enabled, ttl=lock_ttl, timeout=lock_timeout
        )
        return cls(storage, config, lock, {"lock_timeout": lock_timeout, "lock_ttl": lock_ttl})

    @staticmethod
    def _check_root(storage: Storage, missing: NotFoundError) -> None:
        """Say what is wrong when the config cannot be read; return if the root is just empty.

        Costs requests only on this failure path, so opening a database stays one request.
        """
        if storage.kind("") == "file":
            raise DatabaseError(storage.url, "the root is a file, not a directory") from missing
        if storage.kind(CONFIG_FILE) == "directory":
            raise DatabaseError(
                storage.url, ".metatree is a directory, not the config"
            ) from missing

    @staticmethod
    def _create(storage: Storage, keys: tuple[str, ...], locking_enabled: bool) -> Config:
        unrelated = sorted(n for n in storage.listdir("") if not is_reserved(n))
        if unrelated:
            shown = ", ".join(unrelated[:5]) + (", ..." if len(unrelated) > 5 else "")
            raise DatabaseError(
                storage.url, f"the root holds unrelated data ({shown}); use an empty directory"
            )
        config = Config(keys, locking_enabled)
        # Both creates are exclusive: a concurrent creator that got there first keeps its
        # root index (which may already list children) and its config, which we then read.
        storage.create_exclusive(METADATA_FILE, EMPTY_METADATA)
        if not storage.create_exclusive(CONFIG_FILE, config.to_bytes()):
            return Config.from_bytes(storage.read_bytes(CONFIG_FILE), storage.url)
        return config

    # -- reading ------------------------------------------------------------------------
    def url(self, path: NodePath, *more: str) -> str:
        """Return the URL of a node or of a file in it."""
        return self.storage.url_of(_rel(path, *more))

    def read_metadata(self, path: NodePath) -> dict[str, Any]:
        """Read a node's metadata.json (one request; none when a transaction has it)."""
        return self._read_for_write(path)[0]

    def _read_for_write(self, path: NodePath) -> tuple[dict[str, Any], object]:
        """Return a node's metadata and its stored version (for a conditional commit)."""
        tx = self._active_tx()
        if tx is not None:
            if path and tx.pending_delete(_rel(path)):
                raise NotFoundError(self.url(path), "node (removed in this transaction)")
            cached = tx.get(path)
            if cached is None:
                metadata, version = self._read_metadata(path)
                tx.remember(path, metadata, version)
                return metadata, version
            return cached, tx.versions.get(path)
        return self._read_metadata(path)

    def _read_metadata(self, path: NodePath) -> tuple[dict[str, Any], object]:
        rel = _rel(path, METADATA_FILE)
        try:
            data, version = self.storage.read_versioned(rel, self.max_metadata_bytes)
        except NotFoundError:
            self._check_missing_index(path)
            raise NotFoundError(self.url(path), "node") from None
        if len(data) > self.max_metadata_bytes:
            raise CorruptMetadataError(
                self.storage.url_of(rel), f"larger than {self.max_metadata_bytes} bytes"
            )
        if not data and not path and self._fresh_legacy_root():
            return {}, version
        return load_metadata(data, self.storage.url_of(rel)), version

    def _check_missing_index(self, path: NodePath) -> None:
        """Raise `CorruptMetadataError` for an unreadable index that is a directory, or the root's."""
        rel = _rel(path, METADATA_FILE)
        if self.storage.kind(rel) == "directory":
            raise CorruptMetadataError(self.storage.url_of(rel), "it is a directory")
        if not path:
            raise CorruptMetadataError(
                self.storage.url_of(rel),
                "the root index is missing, but the config exists: it was deleted",
            )

    def _fresh_legacy_root(self) -> bool:
        """Metatreedb 0.2.3 creates the root metadata.json empty; accept that, and only that.

        An empty root file is read as ``{}`` only while the root has no child directory: with
        one, the empty file is a torn write that lost the index, and reading it as ``{}``
        would make the next write drop every child.
        """
        return "directory" not in self.storage.listdir("").values()

    def resolve(self, location: Location, shown: str) -> tuple[NodePath, dict[str, Any] | None]:
        """Walk `location` from the root; return the node's path and its parent's metadata.

        Reads one metadata.json per level, the node's own excepted: the parent's index is
        what proves the node exists.
        """
        path: NodePath = ()
        parent: dict[str, Any] | None = None
        for segment in location:
            metadata = self.read_metadata(path)
            name = resolve_segment(segment, metadata, shown, self.describe_node(path))
            if name not in children_of(metadata):
                raise NotFoundError(self.url(path, name), "node")
            path, parent = (*path, name), metadata
        return path, parent

    def resolve_file(
        self, location: Location, file: Segment, shown: str
    ) -> tuple[NodePath, str, dict[str, Any] | None]:
        """Resolve a node and the name of a file in it; the node's metadata only if read."""
        path, _ = self.resolve(location, shown)
        if isinstance(file, Literal):
            return path, file.name, None
        metadata = self.read_metadata(path)
        return path, resolve_segment(file, metadata, shown, self.describe_node(path)), metadata

    def readable(self, path: NodePath, name: str) -> str:
        """Return where the file `name` of the node is read from, as this task sees the tree.

        Inside a transaction that is the staged copy of a file it put, and nothing for data it
        removed; elsewhere the file itself. An orphan directory is never readable.
        """
        rel = _rel(path, name)
        tx = self._active_tx()
        if tx is not None:
            if tx.pending_delete(rel):
                raise NotFoundError(self.url(path, name), "file (removed in this transaction)")
            staged = tx.staged_for(rel)
            if staged is not None:
                return staged.path
        return rel

    def describe_node(self, path: NodePath) -> str:
        """Name a node for messages: "the root" or its location."""
        return f"node {'/'.join(path)!r}" if path else "the root"

    def entries(self, path: NodePath) -> list[str]:
        """Names of the node's files and children, sorted, without system entries or orphans."""
        listed = self.storage.listdir(_rel(path))
        names = [n for n in listed if not is_reserved(n)]
        tx = self._active_tx()
        if tx is not None:  # as the transaction sees it: staged files in, removed ones out
            here = _rel(path)
            names = [n for n in names if not tx.pending_delete(_rel(path, n))]
            names += [posixpath.basename(t) for t in tx.moves if posixpath.dirname(t) == here]
            names = list(dict.fromkeys(names))
        unlisted_dirs = [n for n in names if listed.get(n) == "directory"]
        if unlisted_dirs:
            children = set(children_of(self.read_metadata(path)))
            hidden = {n for n in unlisted_dirs if n not in children and self._is_orphan(path, n)}
            names = [n for n in names if n not in hidden]
        return sorted(names)

    def _is_orphan(self, path: NodePath, name: str) -> bool:
        """Whether the unlisted directory `name` of the node is a node's leftover.

        An unlisted directory with a metadata.json at its top is an orphan node (a crashed
        put or remove, a transaction rolled back): a directory stored by ``put(recursive=True)``
        never holds one, since reserved names are refused in it. One holding nothing but
        system files (the temp file of a put killed before its first rename) is one too.
        """
        return _is_orphan_listing(self.storage.listdir(_rel(path, name)))

    def walk(self, path: NodePath = ()) -> Iterator[tuple[NodePath, dict[str, Any]]]:
        """Yield every node below `path` (itself first) with its metadata, in index order.

        The depth is bounded by the tree's levels: a leaf's ``children`` (planted, or written
        by another client) is never followed.
        """
        stack = [path]
        while stack:
            current = stack.pop()
            metadata = self.read_metadata(current)
            yield current, metadata
            if len(current) < len(self.keys):
                stack.extend((*current, c) for c in reversed(children_of(metadata)))

    def exists(self, location: Location, last: Segment | None, shown: str) -> bool:
        """Whether `location` (plus `last`, a node or file name) names something."""
        try:
            if last is None:
                self.resolve(location, shown)
                return True
            path, _ = self.resolve(location, shown)
            metadata = self.read_metadata(path)
            name = resolve_segment(last, metadata, shown, self.describe_node(path))
        except (NotFoundError, UnresolvedPathError):
            return False
        if name in children_of(metadata) and len(path) < len(self.keys):
            return True
        try:
            rel = self.readable(path, name)
        except NotFoundError:
            return False
        kind = self.storage.kind(rel)
        if kind == "directory":
            return not self._is_orphan(path, name)
        return kind is not None

    # -- writing ------------------------------------------------------------------------
    def update(self, path: NodePath, metadata: Mapping[str, object]) -> None:
        """Merge `metadata` into the node's, inside the lock (read-modify-write)."""
        values = check_metadata_update(metadata)
        if not values:
            return  # metatreedb's update() without arguments is a no-op: no lock, no I/O
        with self._write_lock():
            current, version = self._read_for_write(path)
            current.update(values)
            self._write_metadata(path, current, commit=True, expect=version)

    def _write_metadata(
        self,
        path: NodePath,
        metadata: dict[str, Any],
        *,
        commit: bool = False,
        expect: object = None,
    ) -> None:
        """Write (or, in a transaction, stage) metadata; a commit point checks the lease.

        `expect` is the version the read-modify-write read: where the backend can, the write
        is conditional on it, so a writer that stalled past its lease after `check` cannot
        overwrite what the next holder committed (the fence of docs/locking.md).
        """
        tx = self._active_tx()
        if tx is not None:
            tx.stage(path, metadata)
            return
        if commit:
            self.lock.check()  # a writer whose lease was lost must not commit
        self._put_metadata(path, metadata, expect=expect)

    def _put_metadata(
        self, path: NodePath, metadata: dict[str, Any], *, expect: object, durable: bool = True
    ) -> None:
        rel = _rel(path, METADATA_FILE)
        try:
            self.storage.write_atomic(rel, dump_metadata(metadata), durable=durable, expect=expect)
        except ConflictError:
            raise LockLostError(
                self.lock.name,
                f"{self.storage.url_of(rel)} was rewritten by another writer after it was read "
                "(our lease must have expired meanwhile)",
            ) from None

    # -- transactions and the lock ------------------------------------------------------
    def _active_tx(self) -> Transaction | None:
        tx = self._tx.get()
        # a child forked inside a transaction does not own it (nor the lock it holds), and a
        # context copied inside the block (a task, `copy_context().run`) outlives it: a write
        # from there after the block ended must be a plain write, not staged into a dead one
        if tx is None or tx.closed or tx.pid != os.getpid():
            return None
        return tx

    @contextlib.contextmanager
    def _write_lock(self) -> Iterator[None]:
        """Take the DB lock for one mutation (joining the task's transaction, if any).

        The lock is reentrant per thread, so an asyncio task would walk into the lock held by
        another task's transaction and write beside it: that is refused instead.
        """
        if self._tx_thread == (os.getpid(), threading.get_ident()) and self._active_tx() is None:
            raise LockError(
                f"{self.lock.name} is held by a transaction of another task of this thread; "
                "run this write inside that transaction, or after it"
            )
        with self.lock:
            yield

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the lock for the whole block; commit everything at its end, or nothing."""
        outer = self._active_tx()
        if outer is not None:
            try:
                yield  # nested: one unit with the outermost block
            except BaseException as exc:
                outer.failed = outer.failed or exc
                raise
            return
        with self._write_lock():
            tx = Transaction()
            token = self._tx.set(tx)
            self._tx_thread = (os.getpid(), threading.get_ident())
            try:
                try:
                    yield
                except BaseException:
                    self._rollback(tx)
                    raise
                if tx.failed is not None:
                    self._rollback(tx)
                    raise TransactionAbortedError(
                        f"a nested block raised {type(tx.failed).__name__}: {tx.failed}"
                    ) from tx.failed
                self._commit(tx)
            finally:
                tx.closed = True
                self._tx_thread = None
                self._tx.reset(token)

    def _commit(self, tx: Transaction) -> None:
        """Write the transaction's staged metadata, deepest first, after a lease check."""
        writes = tx.writes()  # created nodes first
        if writes or tx.moves or tx.deletes:
            self.lock.check()
        try:
            existing: list[tuple[NodePath, dict[str, Any]]] = []
            for path, metadata in writes:
                if path in tx.created:
                    self._put_metadata(path, metadata, expect=None, durable=False)
                    tx.unsynced.append(_rel(path, METADATA_FILE))
                else:
                    existing.append((path, metadata))
            self._sync_unsynced(tx)  # every new node durable before an index lists it
            for target, staged in list(tx.moves.items()):
                if staged.old_kind != "directory" and not staged.tree:
                    self.storage.rename(staged.path, target)  # one file over another: atomic
                else:
                    self.storage.replace_tree(staged.path, target, staged.old_kind)
                del tx.moves[target]  # moved: no longer ours to delete
            for path, metadata in existing:
                self._put_metadata(path, metadata, expect=tx.versions.get(path))
        except BaseException:
            self._discard_staged(tx)
            raise
        tx.created = set()
        while tx.deletes:
            rel, tree = tx.deletes.pop(0)
            self._delete(rel, tree=tree)
        self._discard_staged(tx)
        # what was written has new versions: later reads in the same block read them again
        tx.cache.clear()
        tx.versions.clear()

    def _rollback(self, tx: Transaction) -> None:
        """Undo what an aborted transaction stored: staged files, its new nodes' directories."""
        self._discard_staged(tx)
        tops = [p for p in tx.created if p[:-1] not in tx.created]
        for path in tops:
            with contextlib.suppress(MetatreeError):
                self.storage.remove_tree(_rel(path))
        tx.created = set()

    def _discard_staged(self, tx: Transaction) -> None:
        for staged in [*tx.moves.values(), *tx.discarded]:
            with contextlib.suppress(MetatreeError):
                self._delete(staged.path, tree=staged.tree)
        tx.moves = {}
        tx.discarded = []

    def _delete(self, rel: str, *, tree: bool) -> None:
        if tree:
            self.storage.remove_tree(rel)
        else:
            self.storage.remove_file(rel)

    def _sync_unsynced(self, tx: Transaction) -> None:
        if tx.unsynced:
            self.storage.sync(tx.unsynced)
            tx.unsynced = []

    def lock_status(self) -> LeaseInfo | None:
        """Who holds the DB lock (None when free); reads the lock object, takes no lock."""
        return self.lock.status()

    def break_lock(self, *, force: bool = False) -> bool:
        """Remove a dead holder's lock (see `BaseLock.break_`)."""
        return self.lock.break_(force=force)

    def put(
        self,
        location: Location,
        source: Source,
        name: str,
        shown: str,
        *,
        force: bool = False,
        recursive: bool = False,
        callback: Callback = DEFAULT_CALLBACK,
    ) -> NodePath:
        """Store `source` as `name` in the node at `location`, creating missing nodes.

        Returns the node's path. Everything that can be checked without storage is checked
        by the caller; what needs the tree is checked here before the first write. Order:
        the new nodes' metadata (so a crash leaves an orphan `_claim` recognises), the file,
        then the one index rewrite that makes it all visible (the commit point).
        """
        with self._write_lock():
            tx = self._active_tx()
            anchor, metadata, version, new = self._walk_for_put(location, shown)
            node = (*anchor, *new)
            target = _rel(node, name)
            claimed = _rel(anchor, new[0]) if new else target
            if tx is not None and tx.pending_delete(claimed):
                # re-creating what this transaction removed: commit it up to here first
                self._commit(tx)
                anchor, metadata, version, new = self._walk_for_put(location, shown)
            old_kind = None
            if new:
                self._check_lookalike(anchor, metadata, new[0])
                self._claim(anchor, new[0])
                # the top new node first: whatever a crash leaves has a metadata.json at its
                # top, so `_claim` knows it for an orphan; nothing lists it until the commit.
                # If this write fails, it met something in the way, which is not ours to undo.
                top = (*anchor, new[0])
                self._write_new_node(top, {CHILDREN: new[1:2]} if new[1:] else {}, tx)
            else:
                old_kind = self._check_target(
                    node, metadata, name, force=force, recursive=recursive
                )
            try:
                self._put_into(
                    anchor,
                    new,
                    node,
                    name,
                    source,
                    tx,
                    force=force,
                    recursive=recursive,
                    callback=callback,
                    old_kind=old_kind,
                )
            except BaseException:
                if new and tx is None and self._holds():
                    # the top new node is ours and unlisted: take back what this put wrote
                    with contextlib.suppress(MetatreeError):
                        self.storage.remove_tree(_rel(top))
                raise
            if new:
                metadata[CHILDREN] = [*children_of(metadata), new[0]]
                self._write_metadata(anchor, metadata, commit=True, expect=version)
        return node

    def _put_into(
        self,
        anchor: NodePath,
        new: list[str],
        node: NodePath,
        name: str,
        source: Source,
        tx: Transaction | None,
        *,
        force: bool,
        recursive: bool,
        callback: Callback,
        old_kind: str | None,
    ) -> None:
        """Write the new nodes below the top one (`put` wrote it) and store the file.

        In a transaction, a file for a node that existed before is staged instead. Nodes are
        written top down (deepest first left ``n/`` holding only ``v1/`` after a crash: a
        "stored directory" to `_claim`, blocking the name for good).
        """
        target = _rel(node, name)
        for depth in range(2, len(new) + 1):
            below = {CHILDREN: [new[depth]]} if depth < len(new) else {}
            self._write_new_node((*anchor, *new[:depth]), below, tx)
        if new and tx is None:
            # the file goes straight into the new node's directory: a writer whose lease ran
            # out meanwhile must not write there (the next holder may own that name now)
            self.lock.check()
        if tx is None or node in tx.created:
            # in a node this transaction created, files are flushed in one batch at its end
            unsynced = None if tx is None else tx.unsynced
            self._store(
                source,
                target,
                recursive,
                callback,
                unsynced,
                new_node=bool(new),
                old_kind=old_kind,
            )
        else:
            if tx.staged_for(target) is not None and not force:  # stored by this transaction
                raise AlreadyExistsError(self.url(node, name))
            staged = Staged(
                reserved_beside(target, "tx"),
                old_kind,
                recursive and isinstance(source, str | os.PathLike) and os.path.isdir(source),
            )
            try:
                self._store(source, staged.path, recursive, callback)
            except BaseException:  # a partial staged copy is nobody's: delete it
                with contextlib.suppress(MetatreeError):
                    self._delete(staged.path, tree=staged.tree)
                raise
            tx.unstage(target)  # only now: a failed replace keeps the earlier staged copy
            tx.moves[target] = staged

    def _holds(self) -> bool:
        """Whether our lease still holds: a writer that lost it must not clean up either.

        Its unlisted node may meanwhile have been cleared as an orphan and re-created, and
        committed, by the next holder: deleting it would delete their work.
        """
        try:
            self.lock.check()
        except LockLostError:
            return False
        return True

    def _write_new_node(
        self, path: NodePath, metadata: dict[str, Any], tx: Transaction | None
    ) -> None:
        """Write a new (still unlisted) node's metadata now; in a transaction, unflushed.

        A transaction counts the node as its own only once the write succeeded: a failed
        write met something in the way, which a rollback must not delete.
        """
        if tx is None:
            self._put_metadata(path, metadata, expect=None)
            return
        self._put_metadata(path, metadata, expect=None, durable=False)
        tx.unsynced.append(_rel(path, METADATA_FILE))
        tx.remember(path, metadata, None)
        tx.created.add(path)

    def _check_lookalike(self, anchor: NodePath, metadata: dict[str, Any], name: str) -> None:
        """Refuse a new node whose name only differs from a sibling's in Unicode form or case.

        NFC and NFD spellings of one name look the same and are two names on Linux but one on
        macOS; names differing in case only are one on case-insensitive filesystems, where the
        new node would land in the sibling's directory and replace its index.
        """
        fold = _fold if self.case_insensitive else _nfc
        wanted = fold(name)
        for sibling in children_of(metadata):
            if fold(sibling) == wanted:
                what = "case or Unicode form" if self.case_insensitive else "Unicode form"
                raise AlreadyExistsError(
                    self.url(anchor, name),
                    f"node {sibling!r} differs from it only in {what}; use that name",
                )

    def _claim(self, anchor: NodePath, name: str) -> None:
        """Make sure a new node `name` starts empty: clear an orphan, refuse anything else.

        The index does not list `name`, so a directory there is either an orphan node (a
        crashed put or remove, a rolled-back transaction: it has a metadata.json), which is
        removed so that the new node never inherits its files, or a directory a user stored
        with ``put(recursive=True)``, which is in the way.
        """
        rel = _rel(anchor, name)
        listed = self.storage.listdir(rel)
        if not listed:
            return
        if not _is_orphan_listing(listed):
            raise AlreadyExistsError(
                self.url(anchor, name), "a stored directory has this name; a node cannot"
            )
        self.storage.remove_tree(rel)

    def _walk_for_put(
        self, location: Location, shown: str
    ) -> tuple[NodePath, dict[str, Any], object, list[str]]:
        """Return the deepest existing node, its metadata and version, and the names to create."""
        path: NodePath = ()
        metadata, version = self._read_for_write(path)
        for index, segment in enumerate(location):
            name = resolve_segment(segment, metadata, shown, self.describe_node(path))
            if name not in children_of(metadata):
                new = [name]
                for later in location[index + 1 :]:
                    if isinstance(later, Placeholder):
                        raise UnresolvedPathError(
                            shown, f"{later} cannot resolve in {name!r}, which does not exist yet"
                        )
                    new.append(later.name)
                try:  # new names follow the portable rules, found ones need not
                    for created in new:
                        check_name(created, shown)
                except PathError as exc:
                    if isinstance(segment, Placeholder):
                        raise UnresolvedPathError(
                            shown, f"{segment} resolves to {name!r}: {exc.reason}"
                        ) from None
                    raise
                return path, metadata, version, new
            path = (*path, name)
            # a leaf has no index to read, and no child to clash with
            if len(path) < len(self.keys):
                metadata, version = self._read_for_write(path)
            else:
                metadata, version = {}, None
        return path, metadata, version, []

    def _check_target(
        self,
        node: NodePath,
        metadata: Mapping[str, Any],
        name: str,
        *,
        force: bool,
        recursive: bool,
    ) -> str | None:
        """Refuse what `put` must not replace; return what is there now (`Storage.kind`).

        Nothing is deleted here: a forced replace puts the new data in place first and the
        old goes only once the new is complete (`_store`), so a failed put loses nothing.
        """
        if name in children_of(metadata):
            raise AlreadyExistsError(self.url(node, name), "a child node has this name")
        kind = self.storage.kind(_rel(node, name))
        if kind is None:
            return None
        if not force:
            raise AlreadyExistsError(self.url(node, name))
        if kind == "directory" and not recursive:
            raise AlreadyExistsError(
                self.url(node, name), "it is a directory: pass recursive=True to replace it"
            )
        return kind

    def _store(
        self,
        source: Source,
        rel: str,
        recursive: bool,
        callback: Callback,
        unsynced: list[str] | None = None,
        *,
        new_node: bool = True,
        old_kind: str | None = None,
    ) -> None:
        """Store a file or a directory; with `unsynced`, skip flushes and list what to sync.

        A directory (or a file replacing one) is uploaded under a reserved staging name in
        the same node and put in place only when complete (`Storage.replace_tree`): a failure
        midway shows nothing and keeps the old data. In a node this put creates, nothing is
        visible before the index lists the node, so files go straight to their place.
        """
        local = os.fspath(source) if isinstance(source, str | os.PathLike) else None
        is_dir = recursive and local is not None and os.path.isdir(local)
        if not is_dir and old_kind != "directory":
            upload(self.storage, source, None, rel, callback, unsynced)
            return
        files = scan_source(local) if is_dir and local is not None else None
        if new_node and old_kind is None:
            upload(self.storage, source, files, rel, callback, unsynced)
            return
        stage = reserved_beside(rel, "staging")
        try:
            upload(self.storage, source, files, stage, callback, None)
            self.storage.replace_tree(stage, rel, old_kind)
        except BaseException:
            with contextlib.suppress(MetatreeError):
                if files is None:
                    self.storage.remove_file(stage)
                else:
                    self.storage.remove_tree(stage)
            raise

    def remove(self, location: Location, last: Segment, shown: str, *, recursive: bool) -> None:
        """Remove a file, or a node with its subtree (index first, then the data).

        In a transaction the data is deleted after the commit, so a rollback keeps it.
        """
        with self._write_lock():
            path, _ = self.resolve(location, shown)
            metadata, version = self._read_for_write(path)
            name = resolve_segment(last, metadata, shown, self.describe_node(path))
            children = children_of(metadata)
            rel = _rel(path, name)
            tx = self._active_tx()
            if name in children and len(path) < len(self.keys):
                if not recursive and self.entries((*path, name)):
                    raise PathError(shown, "the node is not empty: pass recursive=True")
                metadata[CHILDREN] = [c for c in children if c != name]
                self._write_metadata(path, metadata, commit=True, expect=version)
                self._after_commit(tx, (*path, name), rel, tree=True)
                return
            staged = tx is not None and tx.unstage(rel)  # what this transaction stored
            kind = self.storage.kind(rel)
            if kind is None or (kind == "directory" and self._is_orphan(path, name)):
                if staged:
                    return  # it only existed in this transaction, and is gone now
                raise NotFoundError(self.url(path, name), "node or file")
            if kind == "directory" and not recursive:
                raise PathError(shown, "it is a directory: pass recursive=True")
            self._after_commit(tx, None, rel, tree=kind == "directory")

    def _after_commit(
        self, tx: Transaction | None, node: NodePath | None, rel: str, *, tree: bool
    ) -> None:
        """Delete removed data now, or, in a transaction, once it has committed."""
        if tx is None:
            self._delete(rel, tree=tree)
            return
        if node is not None:
            tx.forget(node)  # later reads and updates of it fail, as after a commit
        tx.unstage_below(rel)
        tx.deletes.append((rel, tree))

    # -- files --------------------------------------------------------------------------
    def get(
        self,
        path: NodePath,
        name: str,
        outfile: str | None,
        *,
        recursive: bool,
        chunk_size: int,
        callback: Callback,
    ) -> Iterator[bytes]:
        """Stream a file, or download it (or, with `recursive`, a directory) to `outfile`."""
        rel = self.readable(path, name)
        if outfile is None:
            return self.storage.iter_bytes(rel, chunk_size)
        if recursive and self.storage.kind(rel) == "directory":
            if name not in children_of(self.read_metadata(path)) and self._is_orphan(path, name):
                raise NotFoundError(self.url(path, name), "file or directory")
            download_tree(self.storage, rel, outfile, callback)
            return iter(())
        self.storage.get(rel, outfile, callback)
        return _iter_local(outfile, chunk_size)


def _reopen(storage: Storage, keys: tuple[str, ...], options: dict[str, float]) -> Database:
    """Unpickle: open the database again, with the same lock settings."""
    return Database.open(
        storage, keys, lock_timeout=options["lock_timeout"], lock_ttl=options["lock_ttl"]
    )


def _is_orphan_listing(listed: Mapping[str, str]) -> bool:
    """Whether an unlisted directory's entries are a node's leftovers (see `_is_orphan`)."""
    return METADATA_FILE in listed or all(map(is_reserved, listed))


def _nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def _fold(name: str) -> str:
    return unicodedata.normalize("NFC", name).casefold()


def _probe_case_insensitive(storage: Storage) -> bool:
    """Whether the local filesystem under the root ignores case (macOS, Windows defaults).

    Asks whether the config file is also found under its name in other case: no write, two
    system calls. Only local disk is probed; object stores and HDFS are case-sensitive.
    """
    if not storage.capabilities.same_host_liveness:
        return False
    config = storage.abs(CONFIG_FILE)
    other = os.path.join(os.path.dirname(config), CONFIG_FILE.upper())
    try:
        return os.path.samefile(config, other)
    except OSError:
        return False


def _iter_local(path: str, chunk_size: int) -> Iterator[bytes]:
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            yield chunk


def check_outfile(outfile: str | os.PathLike[str] | None) -> None:
    """Refuse an `outfile` that exists, or whose directory does not, before any I/O."""
    check_local_outfile(outfile)


def check_source(source: object, name: str | None, shown: str, recursive: bool) -> str:
    """Validate what `put` was given and return the stored file's name, before any I/O.

    A local directory put with `recursive` is scanned whole here (every name, every file
    readable, no empty directory), so a bad name deep inside fails before the DB lock.
    """
    if isinstance(source, str | os.PathLike):
        local = os.fspath(source)
        if not os.path.exists(local):
            raise NotFoundError(local, "local file to put")
        if os.path.isdir(local):
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
