"""Database: a node's metadata read and written, transactions, and the DB lock around writes.

Nodes are addressed by their path, a tuple of names from the root. A node exists when its
parent's ``children`` index lists it; writes keep that true by ordering (DESIGN.md invariant 2):
a file, then new nodes' metadata.json deepest first, then the one index rewrite that makes
them visible. A crash at any step leaves at worst an unlisted orphan. The operations built on
this live beside it in `metatree._core`: `resolve` (locations to nodes), `plan` and `put`,
`remove`, `read` (listing, exists, get); `open` reads or creates the config.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import threading
from typing import TYPE_CHECKING, Any

from metatree._core import index
from metatree._core.open import open_config, probe_case_insensitive
from metatree._core.transaction import Transaction
from metatree._locking import BaseLock, LeaseInfo, check_lock_options, make_lock
from metatree._metadata import (
    CHILDREN,
    Config,
    check_keys,
    check_metadata_update,
    dump_metadata,
    load_metadata,
)
from metatree._metadata_cache import MetadataCache
from metatree._names import METADATA_FILE
from metatree.errors import (
    ConflictError,
    CorruptMetadataError,
    LockError,
    LockLostError,
    MetadataError,
    MetatreeError,
    NotFoundError,
    TransactionAbortedError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from metatree._storage import Storage
    from metatree._types import NodePath, Version

    Fetched = Callable[[], tuple[bytes, Version]]
    """A node's metadata.json and its version, as a `Wave` read it (or will, when asked)."""

__all__ = ["Database", "children_of", "rel_path"]


_REREADS = 3
"""Reads of a node whose log was replaced under the read (`index.Replaced`) before the
next one's `CorruptMetadataError` is reported: a reindex replaces it once."""


def rel_path(path: NodePath, *more: str) -> str:
    """Return the storage path (``/``-joined, relative to the root) of a node or a file in it."""
    return "/".join((*path, *more))


def children_of(metadata: Mapping[str, Any]) -> list[str] | index.Children:
    """Return the node's children index: the inline list (v1) or a `index.Children` (v2)."""
    children: list[str] | index.Children = metadata.get(CHILDREN, [])
    return children


class Database:
    """A metatree database on a `Storage`.

    Use `Database.open`; the constructor takes already validated parts.
    """

    max_metadata_bytes: int = 256 * 2**20
    """A metadata.json larger than this is corrupt, and only this much of it is read: a
    planted giant index must not be read whole. 256 MiB holds an index of several million
    children inline; a node past `index_threshold` keeps later ones in a log
    (`metatree._core.index`)."""

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
        self.case_insensitive = probe_case_insensitive(storage)
        self.index_threshold = index.default_threshold()
        """Children a node keeps inline (format v1) before its index becomes a log (v2)."""
        self.index_cache = index.LogCache()
        self.metadata_cache = MetadataCache()
        """Large metadata.json documents parsed and validated, by their exact bytes."""

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return _reopen, (self.storage, self.config.keys, self.lock_options)

    @property
    def keys(self) -> tuple[str, ...]:
        """The levels of the tree."""
        return self.config.keys

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

        `keys` must match the stored ones (None reads them); see `open_config`.
        """
        wanted = None if keys is None else check_keys(keys, storage.url)
        check_lock_options(storage.url, lock_ttl, lock_timeout)  # before anything is written
        config = open_config(storage, wanted, locking_enabled, create=create, stacklevel=3)
        lock = make_lock(
            storage, enabled=config.locking_enabled, ttl=lock_ttl, timeout=lock_timeout
        )
        return cls(storage, config, lock, {"lock_timeout": lock_timeout, "lock_ttl": lock_ttl})

    # -- reading ------------------------------------------------------------------------
    def url(self, path: NodePath, *more: str) -> str:
        """Return the URL of a node or of a file in it."""
        return self.storage.url_of(rel_path(path, *more))

    def read_metadata(self, path: NodePath) -> dict[str, Any]:
        """Read a node's metadata.json (one request; none when a transaction has it)."""
        return self.read_for_write(path)[0]

    def read_for_write(
        self, path: NodePath, fetched: Fetched | None = None
    ) -> tuple[dict[str, Any], object]:
        """Return a node's metadata and its stored version (for a conditional commit).

        `fetched` gives the node's metadata.json as a wave already read it (`fetch`), used
        unless the transaction has the node; None reads it now.
        """
        tx = self.active_tx()
        if tx is not None:
            if path and tx.pending_delete(rel_path(path)):
                raise NotFoundError(self.url(path), "node (removed in this transaction)")
            cached = tx.get(path)
            if cached is None:
                metadata, version = self._read_metadata(path, fetched)
                tx.remember(path, metadata, version)
                return metadata, version
            return cached, tx.versions.get(path)
        return self._read_metadata(path, fetched)

    def fetch(self, path: NodePath) -> Fetched:
        """Return the read of a node's metadata.json as a job for a `Wave` (bytes, version)."""
        return functools.partial(
            self.storage.read_versioned, rel_path(path, METADATA_FILE), self.max_metadata_bytes
        )

    def unread(self, path: NodePath) -> bool:
        """Whether reading the node's metadata would send a request (the transaction has none)."""
        tx = self.own_tx()
        return tx is None or (tx.get(path) is None and not tx.pending_delete(rel_path(path)))

    def _read_metadata(
        self, path: NodePath, fetched: Fetched | None = None
    ) -> tuple[dict[str, Any], object]:
        for attempt in range(_REREADS + 1):
            try:
                return self._read_once(path, fetched)
            except index.Replaced as exc:
                if attempt == _REREADS:  # it stays so: damage, not a reindex
                    raise CorruptMetadataError(exc.url, exc.reason) from None
                fetched = None  # its log changed under the read: read the node again
        raise AssertionError("unreachable")  # pragma: no cover

    def _read_once(
        self, path: NodePath, fetched: Fetched | None = None
    ) -> tuple[dict[str, Any], object]:
        rel = rel_path(path, METADATA_FILE)
        try:
            data, version = (fetched or self.fetch(path))()
        except NotFoundError:
            if fetched is not None:
                # read in a wave, maybe before its parent's index that lists it: read again,
                # after that index, as a read one level at a time would (its parent's index
                # lists a node only once its metadata.json is stored: invariant 2)
                return self._read_once(path)
            self._check_missing_index(path)
            raise NotFoundError(self.url(path), "node") from None
        if not data and not path and self._fresh_legacy_root():
            return {}, version
        if len(data) > self.max_metadata_bytes:
            self._check_size(data, self.storage.url_of(rel))
        # the URL, for errors, is made only when one is raised: a read of a cached document
        # costs little more than its bytes
        parsed = self.metadata_cache.parse(data, rel, functools.partial(self.storage.url_of, rel))
        if parsed is None:
            metadata = load_metadata(data, self.storage.url_of(rel))
        else:  # a v2 node's mirror comes from the cache (`index.mirror_of`), not a copy
            metadata = parsed.fresh(children=parsed.doc.get(index.INDEX_KEY) is None)
        index.attach(self, path, metadata, None, parsed)
        return metadata, version

    def parse_metadata(self, data: bytes, url: str, rel: str | None = None) -> dict[str, Any]:
        """Parse a node's metadata.json as read (`url` names it in errors), its size checked.

        Also for reads that fetched many at once (`metatree._core.scan`). A large document
        read again with the same bytes is not validated again (`MetadataCache`); `rel`, its
        storage path, is the key reads share (default: the URL).
        """
        self._check_size(data, url)
        return self.metadata_cache.load(data, url, rel)

    def _check_size(self, data: bytes, url: str) -> None:
        if len(data) > self.max_metadata_bytes:
            raise CorruptMetadataError(url, f"larger than {self.max_metadata_bytes} bytes")

    def _check_missing_index(self, path: NodePath) -> None:
        """Raise `CorruptMetadataError` for an unreadable index that is a directory, or the root's."""
        rel = rel_path(path, METADATA_FILE)
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

    # -- writing ------------------------------------------------------------------------
    def update(self, path: NodePath, metadata: Mapping[str, object]) -> None:
        """Merge `metadata` into the node's, inside the lock (read-modify-write)."""
        values = check_metadata_update(metadata)
        if not values:
            return  # metatreedb's update() without arguments is a no-op: no lock, no I/O
        self.update_checked(path, values)

    def update_checked(self, path: NodePath, values: Mapping[str, Any]) -> None:
        """Merge checked values (references included: metatree/datastore.py) into the node's."""
        from metatree._core.update import update

        update(self, path, values)

    def write_metadata(
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
        tx = self.active_tx()
        if tx is not None:
            tx.stage(path, metadata)
            return
        if commit:
            self.lock.check()  # a writer whose lease was lost must not commit
        self.put_metadata(path, metadata, expect=expect)

    def put_metadata(
        self, path: NodePath, metadata: dict[str, Any], *, expect: object, durable: bool = True
    ) -> None:
        """Write a node's metadata now, conditional on `expect` (a lost race is `LockLostError`).

        A v2 node's index changes go to its log (`index.write`), the rest to metadata.json.
        """
        if isinstance(metadata.get(CHILDREN), index.Children):
            index.write(self, path, metadata, expect=expect, durable=durable)
        else:
            self.put_inline(path, metadata, expect=expect, durable=durable)

    def put_inline(
        self, path: NodePath, metadata: dict[str, Any], *, expect: object, durable: bool = True
    ) -> None:
        """Write metadata.json itself, conditional on `expect`."""
        rel = rel_path(path, METADATA_FILE)
        inline = index.inline_form(metadata)
        data = self.dump_checked(path, inline)
        try:
            self.storage.write_atomic(rel, data, durable=durable, expect=expect)
        except ConflictError:
            raise LockLostError(
                self.lock.name,
                f"{self.storage.url_of(rel)} was rewritten by another writer after it was read "
                "(our lease must have expired meanwhile)",
            ) from None
        # an update of a large node's own metadata keeps its index: the next read of these
        # bytes need not check those names again (`MetadataCache.prime`)
        self.metadata_cache.prime(data, rel, inline)

    def dump_checked(self, path: NodePath, metadata: Mapping[str, Any]) -> bytes:
        """Serialise a node's metadata, refusing what could never be read back (too large)."""
        data = dump_metadata(index.inline_form(metadata))
        if len(data) > self.max_metadata_bytes:
            raise MetadataError(
                self.url(path, METADATA_FILE),
                f"the node's metadata.json would be {len(data)} bytes, over the "
                f"{self.max_metadata_bytes} this database reads; nothing was written",
            )
        return data

    def delete(self, rel: str, *, tree: bool) -> None:
        """Remove a file, or with `tree` a directory, at the storage path `rel`."""
        if tree:
            self.storage.remove_tree(rel)
        else:
            self.storage.remove_file(rel)

    # -- transactions and the lock ------------------------------------------------------
    def active_tx(self) -> Transaction | None:
        """Return the task's transaction, if any, its deferred puts flushed for the asker."""
        tx = self.own_tx()
        if tx is not None and tx.pending and not tx.deferring:
            tx.flush(self.storage)
        return tx

    def own_tx(self) -> Transaction | None:
        """Return the transaction this task is in, if any, as it is (nothing flushed)."""
        tx = self._tx.get()
        # a child forked inside a transaction does not own it (nor the lock it holds), and a
        # context copied inside the block (a task, `copy_context().run`) outlives it: a write
        # from there after the block ended must be a plain write, not staged into a dead one.
        # Another thread running a copy (`asyncio.to_thread`) does not hold the lock either:
        # its writes wait for the lock, they never stage into the owner's transaction
        if tx is None or tx.closed or tx.pid != os.getpid() or tx.thread != threading.get_ident():
            return None
        return tx

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Take the DB lock for one mutation (joining the task's transaction, if any).

        The lock is reentrant per thread, so an asyncio task would walk into the lock held by
        another task's transaction and write beside it: that is refused instead.
        """
        if self._tx_thread == (os.getpid(), threading.get_ident()) and self.own_tx() is None:
            raise LockError(
                f"{self.lock.name} is held by a transaction of another task of this thread; "
                "run this write inside that transaction, or after it"
            )
        with self.lock:
            yield

    def owns_writes(self) -> bool:
        """Whether what this task wrote is provably its own: locking is on and our lease holds.

        Asked before a failed put deletes what it wrote: without locking, or with a lease
        broken meanwhile, another writer may own the same path now. The stored lease is read
        (`BaseLock.confirm`): a lease broken with ``break_lock(force=True)`` is seen only there.
        """
        if not self.config.locking_enabled:
            return False
        try:
            self.lock.confirm()  # one request: a lease broken by force is seen only there
        except LockLostError:
            return False
        return True

    @contextlib.contextmanager
    def transaction(self, concurrency: int | None = None) -> Iterator[None]:
        """Hold the lock for the whole block; commit everything at its end, or nothing.

        `concurrency`: the uploads a flush keeps in flight (None: the backend's default).
        """
        outer = self.own_tx()
        if outer is not None:
            try:
                yield  # nested: one unit with the outermost block
            except BaseException as exc:
                outer.failed = outer.failed or exc
                raise
            return
        with self.write_lock():
            tx = Transaction(concurrency=concurrency, check=self.lock.check)
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
                self.commit(tx)
            finally:
                tx.closed = True
                self._tx_thread = None
                self._tx.reset(token)

    def commit(self, tx: Transaction) -> None:
        """Write the transaction's staged metadata, deepest first, after a lease check.

        A transaction that failed (a nested block raised, a flush failed) never commits,
        not even the part before a re-put of a name it removed (`metatree._core.put`).
        Until the first change a reader can see (a staged replacement moved in, an index
        rewritten), a failure rolls everything back; after it, the rest is discarded.
        """
        if tx.failed is not None:
            raise TransactionAbortedError(
                f"the transaction failed earlier ({type(tx.failed).__name__}: {tx.failed}); "
                "nothing more is committed"
            ) from tx.failed
        try:
            tx.flush(self.storage)  # the deferred puts: nothing is visible yet
        except BaseException:
            self._rollback(tx)
            raise
        writes = tx.writes()  # created nodes first
        if writes or tx.moves or tx.deletes:
            self.lock.check()
        visible = False
        try:
            existing = [(path, metadata) for path, metadata in writes if path not in tx.created]
            tx.write_created(self, [(p, m) for p, m in writes if p in tx.created])
            if tx.unsynced:  # every new node durable before an index lists it
                self.storage.sync(list(dict.fromkeys(tx.unsynced)))  # a node written twice
                tx.unsynced = []
            visible = True
            for target, staged in list(tx.moves.items()):
                if staged.old_kind != "directory" and not staged.tree:
                    self.storage.rename(staged.path, target)  # one file over another: atomic
                else:
                    self.storage.replace_tree(staged.path, target, staged.old_kind)
                del tx.moves[target]  # moved: no longer ours to delete
            for path, metadata in existing:
                self.put_metadata(path, metadata, expect=tx.versions.get(path))
        except BaseException:
            if visible:
                self._discard_staged(tx)
            else:  # nothing a reader sees changed: the new nodes go too
                self._rollback(tx)
            raise
        tx.created = set()
        while tx.deletes:
            rel, tree = tx.deletes.pop(0)
            self.delete(rel, tree=tree)
        self._discard_staged(tx)
        tx.committed()

    def _rollback(self, tx: Transaction) -> None:
        """Undo what an aborted transaction stored: staged files, its new nodes' directories."""
        tx.drop_pending()
        self._discard_staged(tx)
        tops = [p for p in tx.created if p[:-1] not in tx.created]
        for path in tops:
            with contextlib.suppress(MetatreeError):
                self.storage.remove_tree(rel_path(path))
        tx.created = set()

    def _discard_staged(self, tx: Transaction) -> None:
        for staged in [*tx.moves.values(), *tx.discarded]:
            with contextlib.suppress(MetatreeError):
                self.delete(staged.path, tree=staged.tree)
        tx.moves = {}
        tx.discarded = []

    def lock_status(self) -> LeaseInfo | None:
        """Who holds the DB lock (None when free); reads the lock object, takes no lock."""
        return self.lock.status()

    def break_lock(self, *, force: bool = False) -> bool:
        """Remove a dead holder's lock (see `BaseLock.break_`)."""
        return self.lock.break_(force=force)


def _reopen(storage: Storage, keys: tuple[str, ...], options: dict[str, float]) -> Database:
    """Unpickle: open the database again, with the same lock settings."""
    return Database.open(
        storage, keys, lock_timeout=options["lock_timeout"], lock_ttl=options["lock_ttl"]
    )
