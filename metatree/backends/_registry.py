"""The one registry: which `Backend` serves a filesystem, by the filesystem's class.

As fsspec's ``known_implementations``, entries are dotted paths, so nothing is imported before it is needed: a filesystem class whose
module is not loaded cannot be the class of a live filesystem object, and the registered
implementation is imported only when it is picked. Never compares protocol strings (which may
be tuples, and which subclasses share).
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fsspec.spec import AbstractFileSystem

    from metatree.backends.base import Backend

__all__ = ["backend_for", "register_backend"]


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
        """Return the implementation registered for the most specific class of `fs`.

        Found along the class's method resolution order, so a backend registered for a
        subclass (``class MyS3(S3FileSystem)``) wins over the one of its base, whatever the
        order of registration. Of two entries naming one class (``s3fs.S3FileSystem`` and
        ``s3fs.core.S3FileSystem``), the later registration wins.
        """
        loaded: dict[type, str] = {}
        for fs_class, implementation in self._entries.items():
            module, _, name = fs_class.rpartition(".")
            cls = getattr(sys.modules.get(module), name, None)
            if isinstance(cls, type):
                loaded[cls] = implementation  # one class, two spellings: the later one wins
        for cls in type(fs).__mro__:
            if cls in loaded:
                module, _, name = loaded[cls].rpartition(".")
                return getattr(importlib.import_module(module), name)
        return None


_REGISTRY = ClassRegistry(
    "backend",
    {
        "fsspec.implementations.local.LocalFileSystem": "metatree.backends.local.LocalBackend",
        "fsspec.implementations.memory.MemoryFileSystem": "metatree.backends.memory.MemoryBackend",
        "s3fs.core.S3FileSystem": "metatree.backends.s3.S3Backend",
        "fsspec.implementations.webhdfs.WebHDFS": "metatree.backends.webhdfs.WebHDFSBackend",
        "gcsfs.core.GCSFileSystem": "metatree.backends.gcs.GCSBackend",  # lock: opt-in (gcs.py)
        "adlfs.spec.AzureBlobFileSystem": "metatree.backends.azure.AzureBackend",
    },
)


def register_backend(fs_class: str, backend_class: str, *, clobber: bool = False) -> None:
    """Serve instances of `fs_class` with `backend_class` (both dotted paths, imported lazily).

    The backend brings its DB-lock strategy (`Backend.make_lock`), so this is the one thing to
    register for a new filesystem (docs/backends.md).
    """
    _REGISTRY.register(fs_class, backend_class, clobber=clobber)


def backend_for(fs: AbstractFileSystem) -> Backend:
    """Return the backend registered for `fs`'s class, or the generic one."""
    cls = _REGISTRY.find(fs)
    if cls is None:
        from metatree.backends.generic import GenericBackend

        cls = GenericBackend
    backend: Backend = cls(fs)
    return backend
