"""`ClassRegistry`: what to use for a filesystem, by its class (as fsspec's registry).

Entries are dotted paths, so nothing is imported before it is needed: a filesystem class whose
module is not loaded cannot be the class of a live filesystem object, and the registered
implementation is imported only when it is picked. Never compares protocol strings (which may
be tuples, and which subclasses share).
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = ["ClassRegistry"]


class ClassRegistry:
    """Map filesystem classes (dotted) to implementations (dotted), looked up by isinstance."""

    def __init__(self, kind: str, entries: dict[str, str]) -> None:
        self.kind = kind
        self._entries = dict(entries)

    def register(self, fs_class: str, implementation: str, *, clobber: bool = False) -> None:
        """Register `implementation` for instances of `fs_class` (both dotted paths)."""
        if fs_class in self._entries and not clobber:
            raise ValueError(f"a {self.kind} is already registered for {fs_class}")
        self._entries[fs_class] = implementation

    def find(self, fs: object) -> Any | None:
        """Return the implementation registered for the first class `fs` is an instance of."""
        for fs_class, implementation in self._entries.items():
            module, _, name = fs_class.rpartition(".")
            cls = getattr(sys.modules.get(module), name, None)
            if cls is not None and isinstance(fs, cls):
                module, _, name = implementation.rpartition(".")
                return getattr(importlib.import_module(module), name)
        return None
