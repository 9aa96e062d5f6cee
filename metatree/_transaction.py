"""Transaction: many writes under one hold of the DB lock, each touched index written once.

Inside ``with tree.transaction():`` metadata reads are served from a cache filled on first
read (the lock is held, so nobody else can change them), and metadata writes are staged.
Files are stored at once: until an index refers to them they are invisible orphans. At the end,
after one check that the lease is still ours, the metadata of the nodes the transaction
created is written, every file of those nodes is made durable in one batch, and only then are
the indexes of existing nodes rewritten, deepest first: every new node is complete and durable
before an index lists it (DESIGN.md invariant 2). If the block raises, nothing staged is
written.

The batch matters on local disk, where one fsync per file costs a journal commit each (about
1.6 ms per put of two files on the development machine, against 0.4 ms batched).
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any

from metatree._metadata import CHILDREN

__all__ = ["Transaction"]

NodePath = tuple[str, ...]


@dataclass
class Transaction:
    """Staged metadata of one transaction, owned by the thread that opened it."""

    thread: int = field(default_factory=threading.get_ident)
    """Only this thread's operations join the transaction."""
    cache: dict[NodePath, dict[str, Any]] = field(default_factory=dict)
    """Metadata as the transaction sees it (read or staged)."""
    dirty: set[NodePath] = field(default_factory=set)
    """Nodes whose metadata must be written at the end."""
    created: set[NodePath] = field(default_factory=set)
    """Nodes this transaction created: nothing lists them until it commits."""
    unsynced: list[str] = field(default_factory=list)
    """Files (relative paths) written without a flush, to be made durable before the commit."""

    def get(self, path: NodePath) -> dict[str, Any] | None:
        """Return a copy of the cached metadata (callers may change what they get)."""
        cached = self.cache.get(path)
        return None if cached is None else _copy(cached)

    def remember(self, path: NodePath, metadata: dict[str, Any]) -> None:
        """Cache metadata just read from storage."""
        self.cache[path] = _copy(metadata)

    def stage(self, path: NodePath, metadata: dict[str, Any]) -> None:
        """Stage a write (the caller gives up `metadata`)."""
        self.cache[path] = metadata
        self.dirty.add(path)

    def writes(self) -> list[tuple[NodePath, dict[str, Any]]]:
        """Return the staged writes, created nodes first, then deepest first; forget them."""
        order = sorted(self.dirty, key=lambda p: (p not in self.created, -len(p), p))
        self.dirty = set()
        return [(path, self.cache[path]) for path in order]


def _copy(metadata: dict[str, Any]) -> dict[str, Any]:
    """Copy metadata deeply, but the children index (a list of str) with one C-level copy.

    A plain deepcopy visits every name of the index: at 10 000 children it dominated a
    transaction's CPU time.
    """
    children = metadata.get(CHILDREN)
    if not isinstance(children, list):
        return copy.deepcopy(metadata)
    rest = copy.deepcopy({k: v for k, v in metadata.items() if k != CHILDREN})
    return {CHILDREN: list(children), **rest}
