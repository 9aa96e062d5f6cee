"""Node: a handle on one node of the tree.

A `Node` is a value (database + path); it holds no metadata snapshot, so every property reads
the current state. metatreedb 0.2.3 returned a whole tree object from ``find``; what code did
with it (``.update``, ``.metadata``, ``.location``, ``.list()``, ``.get(file)``) works here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fsspec.callbacks import DEFAULT_CALLBACK, Callback

from metatree._archive import source_of
from metatree._core.db import children_of
from metatree._core.put import put
from metatree._core.read import entries, get
from metatree._core.resolve import Resolved, Target
from metatree._extract import check_extract_options, extracted
from metatree._localfiles import (
    check_callback,
    check_chunk_size,
    check_flag,
    check_local_outfile,
    check_source,
)
from metatree._metadata import check_metadata_update
from metatree._paths import Literal, parse_file_location
from metatree._records import FileRecord, check_info, records_of
from metatree._storage import CHUNK_SIZE
from metatree.datastore import ArchiveStore, DataStore, bind_references, plan_values, store_values
from metatree.errors import NotFoundError, PathError

if TYPE_CHECKING:
    import os
    from collections.abc import Iterator, Sequence

    from metatree._core.db import Database
    from metatree._types import NodePath, Source

__all__ = ["Node"]


@dataclass(frozen=True, slots=True)
class Node:
    """One node of a metatree database."""

    db: Database = field(repr=False, compare=False)
    """The database the node belongs to."""
    path: NodePath
    """Names from the root to the node; ``()`` is the root."""
    url: str = field(default="", compare=True)
    """The database root's URL (part of equality: paths of two databases differ)."""

    def __post_init__(self) -> None:
        if not self.url:
            object.__setattr__(self, "url", self.db.storage.url)

    @property
    def location(self) -> str:
        """The node's URL, e.g. ``file:///tmp/repo/my-model/v2``."""
        return self.db.url(self.path)

    @property
    def name(self) -> str:
        """The node's own name (``""`` for the root)."""
        return self.path[-1] if self.path else ""

    @property
    def key(self) -> str | None:
        """The tree level this node is at (None for the root)."""
        return self.db.keys[len(self.path) - 1] if self.path else None

    @property
    def is_leaf(self) -> bool:
        """Whether the node is at the deepest level (it can hold files, never children)."""
        return len(self.path) == len(self.db.keys)

    @property
    def metadata(self) -> dict[str, Any]:
        """The node's metadata.json as it is now, ``children`` included (as metatreedb).

        The file records (`files`) are left out: they are metatree's, not the user's.
        """
        return bind_references(self.db.read_metadata(self.path), self)

    @property
    def files(self) -> dict[str, FileRecord]:
        """The node's file records: name -> size, sha256, created, provenance (one request).

        Files inside a stored directory are named by their path (``"ckpt/weights.bin"``).
        Files stored without a record (by metatreedb) are not listed; `list` lists them.
        """
        return records_of(self.db.read_metadata(self.path), self.location)

    @property
    def children(self) -> list[str]:
        """Names of the child nodes, in insertion order (a leaf has none, whatever is stored)."""
        return [] if self.is_leaf else list(children_of(self.metadata))

    @property
    def exists(self) -> bool:
        """Whether the node is still in the tree (it may have been removed since found)."""
        if not self.path:
            return True
        try:
            parent = self.db.read_metadata(self.path[:-1])
        except NotFoundError:
            return False
        return self.path[-1] in children_of(parent)

    def child(self, name: str) -> Node:
        """Return the child node `name`; `NotFoundError` if the index does not list it."""
        if self.is_leaf or name not in self.children:
            raise NotFoundError(self.db.url(self.path, name), "node")
        return Node(self.db, (*self.path, name))

    def iter_children(self) -> Iterator[Node]:
        """Yield the child nodes in index order."""
        for name in self.children:
            yield Node(self.db, (*self.path, name))

    def update(self, **metadata: object) -> None:
        """Merge `metadata` into the node's (values keep their JSON types).

        A `DataStore` or `ArchiveStore` value is stored by reference: its files are put into
        this node and the metadata keeps a reference, in one locked transaction; the files a
        replaced reference named go in it too (metatree/datastore.py).
        """
        stored = {k: v for k, v in metadata.items() if isinstance(v, DataStore | ArchiveStore)}
        if not stored:
            self.db.update(self.path, metadata)
            return
        values = check_metadata_update({k: v for k, v in metadata.items() if k not in stored})
        check_metadata_update(dict.fromkeys(stored))  # the keys' own rules
        plans = {field: plan_values(field, value) for field, value in stored.items()}
        with self.db.transaction():
            for field, value in stored.items():
                values[field] = store_values(self, field, value, plans[field])
            self.db.update_checked(self.path, values)

    def list(self) -> list[str]:
        """Names of the node's files and child nodes, sorted."""
        return entries(self.db, self.path)

    def put(
        self,
        source: Source,
        *,
        name: str | None = None,
        force: bool = False,
        recursive: bool = False,
        callback: Callback = DEFAULT_CALLBACK,
        info: dict[str, Any] | None = None,
        archive: bool = False,
        include: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        hidden: bool = False,
    ) -> bool:
        """Store a file in this node; return True as `Metatree.put` (`Metatree.url` has the URL)."""
        shown = "/".join(self.path)
        check_callback(callback, shown)
        source, name = source_of(source, name, archive, include, exclude, hidden, recursive)
        name = check_source(source, name, shown, recursive)
        extra = check_info(info, shown)
        target = Target(tuple(Literal(n) for n in self.path), shown)
        put(
            self.db,
            target,
            source,
            name,
            force=force,
            recursive=recursive,
            callback=callback,
            info=extra,
        )
        return True

    def get(
        self,
        file: str,
        outfile: str | None = None,
        recursive: bool = False,
        *,
        chunk_size: int = CHUNK_SIZE,
        callback: Callback = DEFAULT_CALLBACK,
        verify: bool = True,
        extract_to: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
    ) -> Iterator[bytes]:
        """Stream the file `file` of this node (a name or ``<key>``); see `Metatree.get`."""
        check_chunk_size(chunk_size, str(file))
        check_callback(callback, str(file))
        check_flag(verify, "verify", str(file))
        into = check_extract_options(extract_to, overwrite, outfile, recursive, str(file))
        raw: object = file  # callers without type checking may pass anything
        if not isinstance(raw, str) or "/" in file.strip("/"):
            raise PathError(str(file), "Node.get takes a file name; use Metatree.get for paths")
        _, segment = parse_file_location(file, ())
        check_local_outfile(outfile)
        self.db.storage.refuse_local(outfile, str(file))
        self.db.storage.refuse_local(into, str(file))
        node = Resolved(self.db, self.path, file)
        chunks = get(
            node,
            node.name(segment),
            outfile,
            recursive=recursive,
            chunk_size=chunk_size,
            callback=callback,
            verify=verify,
        )
        return extracted(chunks, into, overwrite=overwrite, name=file)
