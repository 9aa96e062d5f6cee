"""Transaction: many writes under one hold of the DB lock, each touched index written once.

Inside ``with tree.transaction():`` metadata reads are served from a cache filled on first
read (the lock is held, so nobody else can change them), and metadata writes are staged.
Files are stored at once: until an index refers to them they are invisible orphans. At the end
the staged metadata is written deepest first, so every new node is complete before the index
that lists it (DESIGN.md invariant 2), after one check that the lease is still ours. If the
block raises, nothing staged is written.
"""

from __future__ import annotations

import copy
import threading
from dataclasses import dataclass, field
from typing import Any

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

    def get(self, path: NodePath) -> dict[str, Any] | None:
        """Return a copy of the cached metadata (callers may change what they get)."""
        cached = self.cache.get(path)
        return None if cached is None else copy.deepcopy(cached)

    def remember(self, path: NodePath, metadata: dict[str, Any]) -> None:
        """Cache metadata just read from storage."""
        self.cache[path] = copy.deepcopy(metadata)

    def stage(self, path: NodePath, metadata: dict[str, Any]) -> None:
        """Stage a write (the caller gives up `metadata`)."""
        self.cache[path] = metadata
        self.dirty.add(path)

    def writes(self) -> list[tuple[NodePath, dict[str, Any]]]:
        """Return the staged writes, deepest node first, and forget them."""
        order = sorted(self.dirty, key=lambda p: (-len(p), p))
        self.dirty = set()
        return [(path, self.cache[path]) for path in order]
