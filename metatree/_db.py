"""Database: the tree's operations, built only on `Storage` primitives and the DB lock.

Nodes are addressed by their path, a tuple of names from the root. A node exists when its
parent's ``children`` index lists it; writes keep that true by ordering (DESIGN.md invariant 2):
a file, then new nodes' metadata.json deepest first, then the one index rewrite that makes
them visible. A crash at any step leaves at worst an unlisted orphan.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import TYPE_CHECKING, Any, TypeAlias

from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from metatree._locking import BaseLock, LeaseInfo, check_lock_options, make_lock
from metatree._metadata import (
    CHILDREN,
    Config,
    check_keys,
    check_metadata_update,
    dump_metadata,
    load_metadata,
)
from metatree._paths import (
    CONFIG_FILE,
    METADATA_FILE,
    Literal,
    Location,
    Placeholder,
    Segment,
    check_name,
    is_reserved,
    resolve_segment,
)
from metatree._transaction import Transaction
from metatree.errors import (
    AlreadyExistsError,
    DatabaseError,
    NotFoundError,
    PathError,
    UnresolvedPathError,
)
from metatree.warnings import MetatreeWarning

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from metatree._backends import Source
    from metatree._storage import Storage

__all__ = ["Database", "NodePath", "check_outfile", "check_source"]

NodePath: TypeAlias = tuple[str, ...]
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

    def __init__(
        self, storage: Storage, config: Config, lock: BaseLock, lock_options: dict[str, float]
    ) -> None:
        self.storage = storage
        self.config = config
        self.lock = lock
        self.lock_options = lock_options
        self._tx: Transaction | None = None

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
        except NotFoundError:
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
        tx = self._active_tx()
        if tx is not None:
            cached = tx.get(path)
            if cached is None:
                cached = self._read_metadata(path)
                tx.remember(path, cached)
            return cached
        return self._read_metadata(path)

    def _read_metadata(self, path: NodePath) -> dict[str, Any]:
        rel = _rel(path, METADATA_FILE)
        try:
            data = self.storage.read_bytes(rel)
        except NotFoundError:
            raise NotFoundError(self.url(path), "node") from None
        if not data and not path and self._fresh_legacy_root():
            return {}
        return load_metadata(data, self.storage.url_of(rel))

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
            name = resolve_segment(segment, metadata, shown)
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
        return path, resolve_segment(file, metadata, shown), metadata

    def entries(self, path: NodePath) -> list[str]:
        """Names of the node's files and children, sorted, without system entries."""
        return sorted(n for n in self.storage.listdir(_rel(path)) if not is_reserved(n))

    def walk(self, path: NodePath = ()) -> Iterator[tuple[NodePath, dict[str, Any]]]:
        """Yield every node below `path` (itself first) with its metadata, in index order."""
        stack = [path]
        while stack:
            current = stack.pop()
            metadata = self.read_metadata(current)
            yield current, metadata
            stack.extend((*current, c) for c in reversed(children_of(metadata)))

    def exists(self, location: Location, last: Segment | None, shown: str) -> bool:
        """Whether `location` (plus `last`, a node or file name) names something."""
        try:
            if last is None:
                self.resolve(location, shown)
                return True
            path, _ = self.resolve(location, shown)
            metadata = self.read_metadata(path)
            name = resolve_segment(last, metadata, shown)
        except (NotFoundError, UnresolvedPathError):
            return False
        return name in children_of(metadata) or self.storage.kind(_rel(path, name)) is not None

    # -- writing ------------------------------------------------------------------------
    def update(self, path: NodePath, metadata: Mapping[str, object]) -> None:
        """Merge `metadata` into the node's, inside the lock (read-modify-write)."""
        values = check_metadata_update(metadata)
        if not values:
            return  # metatreedb's update() without arguments is a no-op: no lock, no I/O
        with self.lock:
            current = self.read_metadata(path)
            current.update(values)
            self._write_metadata(path, current, commit=True)

    def _write_metadata(
        self, path: NodePath, metadata: dict[str, Any], *, commit: bool = False
    ) -> None:
        """Write (or, in a transaction, stage) metadata; a commit point checks the lease."""
        tx = self._active_tx()
        if tx is not None:
            tx.stage(path, metadata)
            return
        if commit:
            self.lock.check()  # a writer whose lease was lost must not commit
        self.storage.write_atomic(_rel(path, METADATA_FILE), dump_metadata(metadata))

    # -- transactions and the lock ------------------------------------------------------
    def _active_tx(self) -> Transaction | None:
        tx = self._tx
        return tx if tx is not None and tx.thread == threading.get_ident() else None

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the lock for the whole block; write each touched index once at the end."""
        with self.lock:
            if self._active_tx() is not None:
                yield  # nested: the outer transaction commits
                return
            self._tx = Transaction()
            try:
                yield
                self._flush()
            finally:
                self._tx = None

    def _flush(self) -> None:
        """Write the transaction's staged metadata, deepest first, after a lease check."""
        tx = self._active_tx()
        if tx is None:
            return
        writes = tx.writes()  # created nodes first
        if writes:
            self.lock.check()
        for path, metadata in writes:
            rel = _rel(path, METADATA_FILE)
            if path in tx.created:
                self.storage.write_atomic(rel, dump_metadata(metadata), durable=False)
                tx.unsynced.append(rel)
                continue
            self._sync_unsynced(tx)  # every new node durable before an index lists it
            self.storage.write_atomic(rel, dump_metadata(metadata))
        self._sync_unsynced(tx)
        tx.created = set()

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
        by the caller; what needs the tree is checked here before the first write.
        """
        with self.lock:
            anchor, metadata, new = self._walk_for_put(location, shown)
            node = (*anchor, *new)
            if not new:
                self._check_target(node, metadata, name, force=force, recursive=recursive)
            tx = self._active_tx()
            if tx is not None:
                tx.created.update((*anchor, *new[:depth]) for depth in range(1, len(new) + 1))
            # in a node this transaction created, files are flushed in one batch at its end
            unsynced = tx.unsynced if tx is not None and node in tx.created else None
            self._store(source, _rel(node, name), recursive, callback, unsynced)
            # new nodes, deepest first, so each is complete before its parent lists it
            for depth in range(len(new), 0, -1):
                below = {CHILDREN: [new[depth]]} if depth < len(new) else {}
                self._write_metadata((*anchor, *new[:depth]), below)
            if new:
                metadata[CHILDREN] = [*children_of(metadata), new[0]]
                self._write_metadata(anchor, metadata, commit=True)  # the commit point
        return node

    def _walk_for_put(
        self, location: Location, shown: str
    ) -> tuple[NodePath, dict[str, Any], list[str]]:
        """Return the deepest existing node, its metadata, and the names still to create."""
        path: NodePath = ()
        metadata = self.read_metadata(path)
        for index, segment in enumerate(location):
            name = resolve_segment(segment, metadata, shown)
            if name not in children_of(metadata):
                new = [name]
                for later in location[index + 1 :]:
                    if isinstance(later, Placeholder):
                        raise UnresolvedPathError(
                            shown, f"{later} cannot resolve in {name!r}, which does not exist yet"
                        )
                    new.append(later.name)
                return path, metadata, new
            path = (*path, name)
            # a leaf has no index to read, and no child to clash with
            metadata = self.read_metadata(path) if len(path) < len(self.keys) else {}
        return path, metadata, []

    def _check_target(
        self,
        node: NodePath,
        metadata: Mapping[str, Any],
        name: str,
        *,
        force: bool,
        recursive: bool,
    ) -> None:
        if name in children_of(metadata):
            raise AlreadyExistsError(self.url(node, name), "a child node has this name")
        kind = self.storage.kind(_rel(node, name))
        if kind is None:
            return
        if not force:
            raise AlreadyExistsError(self.url(node, name))
        if kind == "directory":
            if not recursive:
                raise AlreadyExistsError(
                    self.url(node, name), "it is a directory: pass recursive=True to replace it"
                )
            self.storage.remove_tree(_rel(node, name))
        elif recursive:
            self.storage.remove_file(_rel(node, name))

    def _store(
        self,
        source: Source,
        rel: str,
        recursive: bool,
        callback: Callback,
        unsynced: list[str] | None = None,
    ) -> None:
        """Store a file or a directory; with `unsynced`, skip flushes and list what to sync."""
        if not (recursive and isinstance(source, str | os.PathLike) and os.path.isdir(source)):
            targets = [(source, rel)]
        else:
            base = os.fspath(source)
            targets = [
                (local, f"{rel}/{os.path.relpath(local, base).replace(os.sep, '/')}")
                for folder, _, files in os.walk(base)
                for local in (os.path.join(folder, file) for file in sorted(files))
            ]
        for one, target in targets:
            self.storage.put(one, target, callback, durable=unsynced is None)
            if unsynced is not None:
                unsynced.append(target)

    def remove(self, location: Location, last: Segment, shown: str, *, recursive: bool) -> None:
        """Remove a file, or a node with its subtree (index first, then the data)."""
        with self.lock:
            self._flush()  # data is deleted at once: what the transaction staged goes first
            path, _ = self.resolve(location, shown)
            metadata = self.read_metadata(path)
            name = resolve_segment(last, metadata, shown)
            children = children_of(metadata)
            rel = _rel(path, name)
            if name in children:
                if not recursive and self.entries((*path, name)):
                    raise PathError(shown, "the node is not empty: pass recursive=True")
                metadata[CHILDREN] = [c for c in children if c != name]
                self._write_metadata(path, metadata, commit=True)  # the commit point
                self._flush()
                self.storage.remove_tree(rel)
                return
            kind = self.storage.kind(rel)
            if kind is None:
                raise NotFoundError(self.url(path, name), "node or file")
            if kind == "directory":
                if not recursive:
                    raise PathError(shown, "it is a directory: pass recursive=True")
                self.storage.remove_tree(rel)
            else:
                self.storage.remove_file(rel)

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
        rel = _rel(path, name)
        if outfile is None:
            return self.storage.iter_bytes(rel, chunk_size)
        if recursive and self.storage.kind(rel) == "directory":
            files = list(self.storage.walk_files(rel))
            for sub in files:
                local = os.path.join(outfile, *sub.split("/"))
                os.makedirs(os.path.dirname(local), exist_ok=True)
                self.storage.get(f"{rel}/{sub}", local, callback)
            return iter(())
        self.storage.get(rel, outfile, callback)
        return _iter_local(outfile, chunk_size)


def _reopen(storage: Storage, keys: tuple[str, ...], options: dict[str, float]) -> Database:
    """Unpickle: open the database again, with the same lock settings."""
    return Database.open(
        storage, keys, lock_timeout=options["lock_timeout"], lock_ttl=options["lock_ttl"]
    )


def _iter_local(path: str, chunk_size: int) -> Iterator[bytes]:
    with open(path, "rb") as stream:
        while chunk := stream.read(chunk_size):
            yield chunk


def check_outfile(outfile: str | None) -> None:
    """Refuse to download over an existing local path, before any I/O."""
    if outfile is not None and os.path.lexists(outfile):
        raise AlreadyExistsError(outfile, "get will not overwrite a local file")


def check_source(source: object, name: str | None, shown: str, recursive: bool) -> str:
    """Validate what `put` was given and return the stored file's name, before any I/O."""
    if isinstance(source, str | os.PathLike):
        local = os.fspath(source)
        if not os.path.exists(local):
            raise NotFoundError(local, "local file to put")
        if os.path.isdir(local) and not recursive:
            raise PathError(shown, f"{local!r} is a directory: pass recursive=True")
        chosen = name if name is not None else os.path.basename(os.path.normpath(local))
    elif isinstance(source, bytes | bytearray | memoryview) or hasattr(source, "read"):
        if name is None:
            raise PathError(shown, "put of bytes or a file object needs name=")
        chosen = name
    else:
        raise PathError(shown, f"cannot put a {type(source).__name__}: give a path, bytes or file")
    return check_name(chosen, shown)
