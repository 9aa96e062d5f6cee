"""Metatree: the public entry point, drop-in compatible with metatreedb 0.2.3.

metatreedb's tree object is stateful: ``find``, ``put`` and ``get`` move a cursor, and
``update``, ``metadata``, ``location`` and ``list`` act on the node under it. That is kept, so
``metatree.find("m"); metatree.update(active="v2")`` works; `Node` handles returned by `find`
are the stateless way to do the same.
"""

from __future__ import annotations

import contextlib
import os
from typing import TYPE_CHECKING, Any, Literal, overload

from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from metatree._archive import source_of
from metatree._core import index
from metatree._core.db import Database, children_of, rel_path
from metatree._core.put import put
from metatree._core.read import exists, get, holds, readable, record_at, walk
from metatree._core.remove import remove
from metatree._core.resolve import Ahead, Resolved, Target, descend, resolve, shown_of
from metatree._core.verify import VerifyReport, verify
from metatree._extract import check_extract_options, extracted
from metatree._localfiles import (
    check_callback,
    check_chunk_size,
    check_flag,
    check_local_outfile,
    check_source,
)
from metatree._node import Node
from metatree._paths import Literal as Named
from metatree._paths import LocationLike, Placeholder, parse_location
from metatree._records import FileRecord, check_info, records_of
from metatree._storage import CHUNK_SIZE, Storage, as_storage
from metatree.datastore import bind_references
from metatree.errors import DatabaseError, MetadataError, MetatreeError, NotFoundError, PathError

if TYPE_CHECKING:
    import builtins
    from collections.abc import Callable, Iterator

    import pyarrow as pa
    from fsspec.spec import AbstractFileSystem

    from metatree._locking import LeaseInfo
    from metatree._types import NodePath, Source
    from metatree.artifacts import ArtifactStore
    from metatree.catalog import SearchResult
    from metatree.fsck import FsckReport, GcReport

__all__ = ["Metatree"]


class Metatree:
    """A tree database whose storage engine is a filesystem.

    Parameters
    ----------
    root
        A plain path (``~`` and ``$VAR`` expanded), ``file://``, ``memory://``, ``s3://``,
        ``webhdfs://`` or any fsspec URL, or a `Storage`.
    keys
        The levels of the tree, e.g. ``("model", "version")``. Required to create a database;
        None opens an existing one with its stored keys; other keys than the stored ones
        raise `DatabaseError`.
    locking_enabled
        Whether writers take the DB lock; used when creating (default True). An existing
        database keeps its stored setting.
    fs
        An fsspec filesystem to use instead of the one the URL names (``root`` is then a
        path in it).
    lock_timeout
        Seconds a writer waits for the DB lock before `LockTimeout`.
    lock_ttl
        Lease duration of the DB lock on backends that use leases (S3, WebHDFS, memory): a
        dead writer's lock is taken over this long after its last renewal. Local disk uses
        the kernel's ``flock``, released the moment its holder dies.
    create
        Create the database if `root` holds none (default). With False, a missing database
        raises `DatabaseError`.
    index_threshold
        Children a node keeps inline in its metadata.json (format v1, what metatreedb
        reads) before later ones go to a log of small pieces (format v2: a put then costs
        the same whatever the number of siblings). Default 10 000, or the environment's
        ``METATREE_INDEX_THRESHOLD``. A writer setting, not stored: see `reindex`.
    **storage_options
        Passed to the fsspec filesystem (``endpoint_url=``, ``key=``, ``host=``, ...).

    Examples
    --------
    >>> tree = Metatree(f"memory://doctest-{os.getpid()}", ("model", "version"))
    >>> tree.put("my-model/v1", b"weights", name="model.bin")
    True
    >>> tree.url("my-model/v1/model.bin")
    'memory:///doctest-.../my-model/v1/model.bin'
    >>> tree.find("my-model").update(active="v1")
    >>> b"".join(tree.get("my-model/<active>/model.bin"))
    b'weights'
    """

    def __init__(
        self,
        root: str | Storage,
        keys: tuple[str, ...] | list[str] | None = None,
        locking_enabled: bool | None = None,
        *,
        fs: AbstractFileSystem | None = None,
        lock_timeout: float = 60.0,
        lock_ttl: float = 30.0,
        create: bool = True,
        index_threshold: int | None = None,
        **storage_options: Any,
    ) -> None:
        if index_threshold is not None and (
            type(index_threshold) is not int or index_threshold < 0
        ):
            raise DatabaseError(repr(index_threshold), "index_threshold is an int >= 0")
        storage = as_storage(root, fs, **storage_options)
        self._db = Database.open(
            storage,
            keys,
            locking_enabled,
            create=create,
            lock_timeout=lock_timeout,
            lock_ttl=lock_ttl,
        )
        if index_threshold is not None:
            self._db.index_threshold = index_threshold
        self._cursor = Node(self._db, ())

    @classmethod
    def _from_db(cls, db: Database) -> Metatree:
        tree = cls.__new__(cls)
        tree._db = db
        tree._cursor = Node(db, ())
        return tree

    def __reduce__(self) -> tuple[Any, tuple[Database]]:
        return Metatree._from_db, (self._db,)

    def __repr__(self) -> str:
        return f"Metatree({self.root!r}, {self.keys!r})"

    # -- properties ---------------------------------------------------------------------
    @property
    def root(self) -> str:
        """The database root as a URL."""
        return self._db.storage.url

    @property
    def keys(self) -> tuple[str, ...]:
        """The levels of the tree."""
        return self._db.keys

    @property
    def storage(self) -> Storage:
        """The storage (filesystem and root) of the database."""
        return self._db.storage

    @property
    def node(self) -> Node:
        """The node under the cursor (moved by `find`, `put` and `get`)."""
        return self._cursor

    @property
    def location(self) -> str:
        """URL of the node under the cursor."""
        return self._cursor.location

    @property
    def files(self) -> ArtifactStore:
        """ZenML's artifact-store file API over this database's root (docs/artifacts.md).

        Confined to the root; the database's own files (``metadata.json``, ``.metatree*``)
        are neither listed nor written, and a directory holding a node is never removed.
        """
        from metatree.artifacts import ArtifactStore

        return ArtifactStore.of(self)

    @property
    def metadata(self) -> dict[str, Any]:
        """Metadata of the node under the cursor."""
        return self._cursor.metadata

    # -- operations ---------------------------------------------------------------------
    def find(self, location: LocationLike) -> Node:
        """Return the node at `location` and move the cursor to it.

        `location` is ``"a/b"`` (``<key>`` segments resolve from the parent's metadata) or a
        dict ``{level: name | {"value": name} | {"metadata": key}}``; ``""`` is the root.

        Raises
        ------
        NotFoundError
            A node on the way is not in its parent's index.
        PathError
            The location is malformed, or a ``<key>`` does not resolve to a name.
        """
        # metatreedb resets the cursor first: a failed find, a malformed one too, leaves it
        # on the root (code ported from it updates after a failed find knowing that)
        self._cursor = Node(self._db, ())
        node = resolve(self._db, Target.node(location, self.keys))
        self._cursor = Node(self._db, node.path)
        return self._cursor

    def reindex(self, location: LocationLike = "", *, format: int) -> int:
        """Store a node's children index inline (``format=1``) or as a log (``format=2``).

        A node switches to the log by itself past `index_threshold` children (docs/format.md,
        "Format v2"); this converts one back once it is small again (metatreedb 0.2.3 then
        sees all its children), or ahead of a bulk load. Takes the DB lock; a node already in
        the format is left as it is. Returns the node's number of children.

        Raises
        ------
        MetadataError
            `format` is not 1 or 2, or the node is a leaf (it has no index).
        """
        if format not in (1, 2) or type(format) is not int:
            raise MetadataError(repr(format), "the index format is 1 (inline) or 2 (log)")
        with self._db.write_lock():
            node = resolve(self._db, Target.node(location, self.keys))
            if node.is_leaf:
                raise MetadataError(node.describe(), "a leaf has no children index")
            metadata, version = node.read()
            if self._db.active_tx() is not None:
                raise MetadataError(node.describe(), "reindex cannot run inside a transaction")
            convert = index.to_inline if format == 1 else index.to_log
            convert(self._db, node.path, metadata, version)
            return len(children_of(metadata))

    def exists(self, location: str) -> bool:
        """Whether `location` names a node or a file (a malformed one still raises)."""
        if not isinstance(location, str):
            raise PathError(repr(location), "exists takes a str location")
        if not location.strip("/"):
            return True
        return exists(self._db, *Target.file(location, self.keys))

    def url(self, location: str) -> str:
        """Return the URL of the node or file at `location`, for tools that take URLs.

        `location` is resolved as `get` resolves it (``<key>`` segments too); ``""`` is the
        root. The cursor stays. `put` returns True (metatreedb's return), so this is where
        the stored file's URL comes from. The URL names committed storage: inside a
        transaction, a file this transaction put has none until it commits.

        Raises
        ------
        NotFoundError
            Nothing is stored at `location` (or, in a transaction, not yet committed).
        UnresolvedPathError
            A ``<key>`` does not resolve to a name, as for `get`.
        """
        if not isinstance(location, str):
            raise PathError(repr(location), "url takes a str location")
        if not location.strip("/"):
            return self.root
        where, last = Target.file(location, self.keys)
        node = self._node_of(where, Ahead(own=True))
        name = node.name(last)
        url = self._db.url(node.path, name)
        if name in children_of(node.metadata) and not node.is_leaf:
            return url  # a child node
        if readable(self._db, node.path, name) != rel_path(node.path, name):
            raise NotFoundError(url, "committed file (this transaction stores it at commit)")
        if not holds(node, name):
            raise NotFoundError(url, "node or file")
        return url

    def _node_of(self, where: Target, ahead: Ahead | None = None) -> Resolved:
        """Resolve the node part of a file location; none means the node under the cursor.

        `ahead`: what the caller reads next, sent with the resolution's last wave.
        """
        if where.segments:
            return resolve(self._db, where, ahead)
        return Resolved(self._db, self._cursor.path, where.shown)

    def put(
        self,
        location: LocationLike,
        filepath: Source,
        force: bool = False,
        recursive: bool = False,
        *,
        name: str | None = None,
        callback: Callback = DEFAULT_CALLBACK,
        info: dict[str, Any] | None = None,
        archive: bool = False,
        include: list[str] | tuple[str, ...] | None = None,
        exclude: list[str] | tuple[str, ...] | None = None,
        hidden: bool = False,
    ) -> bool:
        """Store a file in the node at `location`, creating the nodes on the way.

        Each stored file is recorded in the node's metadata (size, sha256, time and
        provenance: `stat`, `Node.files`), and `get` checks it against that record.

        Parameters
        ----------
        location
            The node, as in `find`. Missing nodes are created (``<key>`` segments only
            resolve in nodes that exist).
        filepath
            A local file (or, with `recursive`, a directory), bytes, or a binary file object.
        force
            Replace a file of the same name; without it that is `AlreadyExistsError`.
        recursive
            Store a local directory with everything below it.
        name
            The stored name: required for bytes and file objects, the local name otherwise.
        callback
            An fsspec callback, told the size and the progress of the upload.
        info
            More provenance for the file records (JSON values, at most 64 KiB), such as
            ``{"run": "r42", "commit": "abc123"}``.
        archive
            Store the local directory `filepath` as one ``<name>.tar.gz`` (streamed, never
            held whole; the same directory gives the same bytes: docs/archives.md), with a
            ``python-info.json`` inside. `include` and `exclude` are glob patterns on the
            relative paths and names; hidden files only with `hidden`. `get` with
            ``extract_to=`` unpacks it safely.

        Returns
        -------
        bool
            True, as metatreedb 0.2.3 returns (its own tests assert ``put(...) == True``);
            every failure raises. `url` gives the stored file's URL.
        """
        check_callback(callback, shown_of(location))  # not metatreedb's argument: the cursor stays
        self._cursor = Node(self._db, ())  # metatreedb walks from the root (see _put_target)
        target = Target.node(location, self.keys)
        try:
            filepath, name = source_of(filepath, name, archive, include, exclude, hidden, recursive)
            stored = check_source(filepath, name, target.shown, recursive)
            extra = check_info(info, target.shown)
            path = put(
                self._db,
                target,
                filepath,
                stored,
                force=force,
                recursive=recursive,
                callback=callback,
                info=extra,
            )
        except Exception:
            self._cursor = Node(self._db, self._put_target(target))
            raise
        self._cursor = Node(self._db, path)
        return True

    def _put_target(self, target: Target) -> NodePath:
        """Where metatreedb's cursor is after a failed put: the node, or the root.

        metatreedb walks (and creates) the location first and checks the file after, so a
        put that fails on its file (missing, already stored, unwritable) leaves its cursor
        on the target node, and one whose walk fails (an unresolved ``<key>``, a node to
        make inside a stored file: ``"a.bin/m"``) on the root.
        This replays that walk read-only: a node the put would have created is a cursor on
        a node that does not exist here (``update`` then raises instead of writing
        elsewhere). Only failures pay for these reads.
        """
        try:
            node, missing, later = descend(self._db, target)
            if missing is None:
                if not node.is_leaf:
                    node.read()  # as the put did: a node it cannot read leaves the root
                return node.path
            path = (*node.path, missing)
            for segment in later:
                if self._db.storage.kind("/".join(path)) == "file":
                    return ()  # metatreedb's walk cannot make a node inside a stored file
                if isinstance(segment, Placeholder):
                    return ()  # no metadata to resolve it in: metatreedb's walk fails
                path = (*path, segment.name)
        except MetatreeError:
            return ()
        return path

    def get(
        self,
        location: str,
        outfile: str | os.PathLike[str] | None = None,
        recursive: bool = False,
        *,
        chunk_size: int = CHUNK_SIZE,
        callback: Callback = DEFAULT_CALLBACK,
        verify: bool = True,
        extract_to: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
    ) -> Iterator[bytes]:
        """Stream the file at ``"node/location/file"``; ``<key>`` works in every segment.

        A bare file name (one segment) is a file of the node under the cursor, as in
        metatreedb: ``tree.find("m/v1"); tree.get("model.pkl")``. With `outfile`, the file (or, with `recursive`, a directory) is downloaded there
        first and the returned iterator reads the local copy. Moves the cursor to the node,
        also when the file is missing (as metatreedb; docs/differences.md has the rules).

        A file with a record (`stat`) is checked against its sha256 while it streams: a
        download is checked before it appears at `outfile`; a stream raises at its end, after
        the last chunk, so a caller writing chunks somewhere must discard them on
        `IntegrityError`. ``verify=False`` reads without the check (and without reading the
        record: one request fewer). Files stored without a record (by metatreedb) are read
        unchecked.

        With `extract_to`, a stored ``.tar.gz`` (``put(..., archive=True)``) is unpacked into
        that local directory (created if missing) and an empty iterator is returned. Every
        member is checked (no absolute or ``..`` names, no links out, no devices: `ArchiveError`)
        and nothing appears before the whole archive was read and verified; existing files
        are refused unless `overwrite`.

        Raises
        ------
        NotFoundError
            No such node or file (metatreedb returned None).
        AlreadyExistsError
            `outfile` exists already.
        IntegrityError
            The bytes read differ from the file's record, and no concurrent put explains it.
        ConflictError
            The file was replaced (twice) or removed by concurrent puts while it was read:
            read it again.
        """
        check_chunk_size(chunk_size, str(location))
        check_flag(verify, "verify", str(location))
        into = check_extract_options(extract_to, overwrite, outfile, recursive, str(location))
        check_callback(callback, str(location))
        check_local_outfile(outfile)  # first, as metatreedb: the cursor has not moved yet
        self._db.storage.refuse_local(outfile, str(location))
        self._db.storage.refuse_local(into, str(location))
        target = None if outfile is None else os.fspath(outfile)
        if _finds_a_node(location, self.keys):
            self._cursor = Node(self._db, ())  # metatreedb's get calls find: root first
        try:
            where, last = Target.file(location, self.keys)
        except PathError:
            self._find_node_of(location)  # metatreedb walks to the node before the file name
            raise
        file = last.name if isinstance(last, Named) and not recursive else None
        node = self._node_of(where, Ahead(own=verify or file is None, file=file))
        if where.segments:
            self._cursor = Node(self._db, node.path)  # on the node even if its file is missing
        chunks = get(
            node,
            node.name(last),
            target,
            recursive=recursive,
            chunk_size=chunk_size,
            callback=callback,
            verify=verify,
        )
        return extracted(chunks, into, overwrite=overwrite, name=str(location))

    def stat(self, location: str) -> FileRecord:
        """Return the record of the file at `location`: size, sha256, created, provenance.

        The location resolves as in `get`; the cursor stays. Reads the node's metadata.json
        only (no request to the file).

        Raises
        ------
        NotFoundError
            No such node or file, or a file stored without a record (by metatreedb, or by
            a version before records).
        """
        raw: object = location  # callers without type checking may pass anything
        if not isinstance(raw, str) or not location.strip("/"):
            raise PathError(repr(location), "stat takes the str location of a file")
        where, last = Target.file(location, self.keys)
        node = self._node_of(where, Ahead(own=True))
        return record_at(node, node.name(last))

    def verify(
        self,
        location: str = "",
        recursive: bool = True,
        *,
        progress: Callable[[int], object] | None = None,
    ) -> VerifyReport:
        """Check stored files against their records; return what is ok, mismatched, missing.

        `location` is a node (its files; with `recursive`, those of every node below it too)
        or a file. Each recorded file is read once and hashed (no download); files without a
        record are listed as ``unrecorded``. Takes no lock: a file replaced meanwhile by a
        concurrent put is checked against its new record. The cursor stays. `progress` is
        called with the number of nodes checked so far (the CLI's counter; see `search`).
        """
        raw: object = location
        if not isinstance(raw, str):
            raise PathError(repr(location), "verify takes a str location")
        check_flag(recursive, "recursive", location)
        if not location.strip("/"):
            root = Resolved(self._db, (), location)
            return verify(root, None, recursive=recursive, progress=progress)
        where, last = Target.file(location, self.keys)
        node = resolve(self._db, where)  # from the root: never the cursor's node
        return verify(node, node.name(last), recursive=recursive, progress=progress)

    def fsck(
        self,
        repair: bool = False,
        verify: bool = False,
        force: bool = False,
        *,
        progress: Callable[[int], object] | None = None,
    ) -> FsckReport:
        """Check the whole tree for damage; with `repair`, fix what is safe (docs/fsck.md).

        Reads every node and lists its directory; with `verify` every recorded file is hashed
        too (else only sizes are compared). Without `repair` nothing is written. `repair`
        works under the DB lock, moves rather than deletes (into ``.metatree.quarantine``),
        and is idempotent; `force` also fixes what loses a record or metadata. `progress` is
        called with the number of nodes read so far by each pass over the tree.
        """
        from metatree.fsck import fsck

        for value, name in ((repair, "repair"), (verify, "verify"), (force, "force")):
            check_flag(value, name, self._db.storage.url)
        return fsck(self._db, repair=repair, verify=verify, force=force, progress=progress)

    def gc(self, dry_run: bool = True) -> GcReport:
        """Delete the quarantine and unreferenced DataStore value files; `dry_run` only lists."""
        from metatree.fsck import gc

        check_flag(dry_run, "dry_run", self._db.storage.url)
        return gc(self._db, dry_run=dry_run)

    def _find_node_of(self, location: object) -> None:
        """Move the cursor where metatreedb's get leaves it when the file name is refused.

        metatreedb finds the node part first (moving its cursor there) and only then looks
        at the file name, which returns None or raises: a file name we refuse (a reserved
        ``metadata.json``) must leave the cursor on the node as well. A node part that does
        not parse or resolve leaves the cursor where `get` put it (the root, after a reset).
        """
        if not _finds_a_node(location, self.keys):
            return
        node = str(location).strip("/").rsplit("/", 1)[0]
        with contextlib.suppress(MetatreeError):
            found = resolve(self._db, Target(parse_location(node, self.keys), str(location)))
            self._cursor = Node(self._db, found.path)

    def update(self, **metadata: object) -> None:
        """Merge `metadata` into the metadata of the node under the cursor."""
        self._cursor.update(**metadata)

    def list(self) -> list[str]:
        """Names of the files and child nodes of the node under the cursor, sorted."""
        return self._cursor.list()

    @contextlib.contextmanager
    def transaction(self, concurrency: int | None = None) -> Iterator[Metatree]:
        """Hold the DB lock for a block of writes; write each touched index once at the end.

        Bulk imports pay one lock round trip instead of one per write. Metadata changes are
        staged and written when the block ends (deepest node first); if the block raises,
        none is written (files already stored stay as unlisted orphans). Each node's change
        commits whole, but the nodes commit one after another: a write that fails at the
        end (a full disk) leaves the nodes written before it committed, and raises.

        On remote stores (S3, WebHDFS) puts that create their node send their uploads in
        batches, `concurrency` at a time (the backend's default when None: 32 on S3, 8 on
        other remote stores; 1 sends them one after another). Each put is still checked
        when it is called; a local file is read when its batch is sent (at the latest when
        the block ends), so leave it in place until then.

        Examples
        --------
        >>> tree = Metatree(f"memory://doctest-tx-{os.getpid()}", ("model", "version"))
        >>> with tree.transaction():
        ...     for i in range(3):
        ...         _ = tree.put(f"m/v{i}", b"w", name="model.bin")
        >>> tree.find("m").children
        ['v0', 'v1', 'v2']
        """
        width: object = concurrency  # callers without type checking may pass anything
        if width is not None and (
            isinstance(width, bool) or not isinstance(width, int) or width < 1
        ):
            raise PathError(self.root, f"concurrency must be a positive int, not {concurrency!r}")
        with self._db.transaction(concurrency):
            yield self

    def lock_status(self) -> LeaseInfo | None:
        """Who holds the DB lock now (owner, host, pid, expiry, token), None when it is free."""
        return self._db.lock_status()

    def break_lock(self, *, force: bool = False) -> bool:
        """Remove the lock of a dead holder; a live holder's only with `force` (S3, WebHDFS).

        A lease that is expired, or whose process is gone on this host, is dead. On local
        disk the lock is the kernel's ``flock``, which no other process can break: this only
        clears a ``.lock`` left behind (by a killed writer or by metatreedb).

        Returns
        -------
        bool
            Whether a lock object was removed.
        """
        return self._db.break_lock(force=force)

    @overload
    def walk(
        self, location: LocationLike = "", *, files: Literal[False] = False
    ) -> Iterator[tuple[Node, dict[str, Any]]]: ...

    @overload
    def walk(
        self, location: LocationLike = "", *, files: Literal[True]
    ) -> Iterator[tuple[Node, dict[str, Any], dict[str, FileRecord]]]: ...

    def walk(
        self, location: LocationLike = "", *, files: bool = False
    ) -> Iterator[tuple[Any, ...]]:
        """Yield each node at and below `location` with its metadata, depth first.

        With ``files=True`` each node comes with its file records too (as `Node.files`,
        from the same read: no request more).
        """
        check_flag(files, "files", shown_of(location))
        start = resolve(self._db, Target.node(location, self.keys))  # the cursor stays
        for path, metadata in walk(self._db, start.path):
            node = Node(self._db, path)
            shown = bind_references(metadata, node)
            if files:
                yield node, shown, records_of(metadata, node.location)
            else:
                yield node, shown

    def catalog(
        self,
        under: str = "",
        depth: int | str | None = None,
        columns: builtins.list[str] | None = None,
        *,
        on_error: Literal["raise", "skip"] = "raise",
        concurrency: int | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> pa.Table:
        """Return one `pyarrow.Table` row per node under `under` (docs/catalog.md).

        `under` narrows the scan before it reads: per level a name, a glob (``"fraud/*"``) or
        a ``<key>`` placeholder (``"*/<production>"``); every node matching it and below it
        is a row. `depth` keeps only one level (1 for the first key, or the key's name).
        `columns` keeps only those metadata keys. Each level's metadata.json files are read
        together (`concurrency` at a time; the backend's default when None): one read per
        node. A node that cannot be read raises its error, or with ``on_error="skip"`` is left
        out; `search` reports what it skipped.
        """
        from metatree.catalog import build_catalog

        return build_catalog(
            self._db,
            under,
            depth,
            columns,
            on_error=on_error,
            concurrency=concurrency,
            progress=progress,
        )

    def search(
        self,
        filter: Any = None,
        under: str = "",
        depth: int | str | None = None,
        *,
        on_error: Literal["raise", "skip"] = "raise",
        concurrency: int | None = None,
        progress: Callable[[int], object] | None = None,
    ) -> SearchResult:
        """Return the nodes under `under` whose catalog row passes `filter` (docs/catalog.md).

        `filter` is a `pyarrow.compute` expression (``pc.field("accuracy") > 0.9``) or a dict
        of conditions, all of which must hold: ``{"framework": "torch", "accuracy": (">",
        0.9)}`` (operators ``==`` ``!=`` ``<`` ``<=`` ``>`` ``>=`` ``in`` ``not in``
        ``is_null`` ``not_null`` ``starts_with``). The result gives `Node` handles, the
        Arrow table and a pandas frame.

        `progress` (also on `catalog`, `export_catalog`, `verify`, `fsck`) is called with the
        number of nodes read so far, after each batch of reads: a counter for a person
        watching a long walk (the ``metatree`` command draws one on a terminal). None, the
        default, costs nothing.
        """
        from metatree.catalog import search

        return search(
            self._db,
            filter,
            under,
            depth,
            on_error=on_error,
            concurrency=concurrency,
            progress=progress,
        )

    def export_catalog(
        self,
        url: str,
        partition_by: str | None = None,
        *,
        under: str = "",
        depth: int | str | None = None,
        columns: builtins.list[str] | None = None,
        on_error: Literal["raise", "skip"] = "raise",
        concurrency: int | None = None,
        progress: Callable[[int], object] | None = None,
        **storage_options: Any,
    ) -> str:
        """Write the catalog as a Parquet dataset to `url` (any fsspec URL); return `url`.

        For DuckDB, polars, Spark, Dask, Ray: ``SELECT * FROM read_parquet('url/**/*.parquet',
        hive_partitioning=true)``. `partition_by` a key level partitions it Hive-style. The
        target must be outside the database and absent or empty.
        """
        from metatree._export import export_catalog

        return export_catalog(
            self._db,
            url,
            partition_by,
            under=under,
            depth=depth,
            columns=columns,
            on_error=on_error,
            concurrency=concurrency,
            storage_options=storage_options,
            progress=progress,
        )

    def remove(self, location: str, recursive: bool = False) -> None:
        """Remove the file or node at `location` (a node with content needs `recursive`).

        The index is rewritten first, so a crash leaves at worst unlisted data.
        """
        raw: object = location  # callers without type checking may pass anything
        if not isinstance(raw, str) or not location.strip("/"):
            raise PathError(str(location), "name a node or file below the root")
        remove(self._db, *Target.file(location, self.keys), recursive=recursive)
        self._cursor = Node(self._db, ())


def _finds_a_node(location: object, keys: tuple[str, ...]) -> bool:
    """Whether metatreedb's ``get(location)`` calls ``find`` (which resets its cursor).

    It does when the location has a node part that parses for it: at most one name per
    level once its own ``strip("/")`` is applied (more raise before the reset).
    """
    if not isinstance(location, str):
        return False
    *node, _ = location.strip("/").split("/")
    return bool(node) and len("/".join(node).strip("/").split("/")) <= len(keys)
