"""metatree: a filesystem-backed metadata database for ML artifacts.

A database is a tree with fixed levels (``keys``); every node is a directory holding a
``metadata.json`` (a ``children`` index plus free metadata) and files, on any fsspec
filesystem. See `Metatree`.

Importing ``metatree`` loads nothing else: each public name is imported from its module on
first use (PEP 562 `__getattr__`), so ``metatree --help`` and a local ``ls`` do not pay for
the whole core, the model store and fsck (docs/cli.md has the numbers). Type checkers and
``from metatree import X`` see every name as before (the ``TYPE_CHECKING`` imports).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metatree._core.verify import VerifyReport
    from metatree._node import Node
    from metatree._records import FileRecord, Provenance
    from metatree._storage import Storage, as_storage
    from metatree._tree import Metatree
    from metatree.artifacts import ArtifactStore
    from metatree.backends import Backend, Capabilities, register_backend
    from metatree.datastore import ArchiveStore, DataStore
    from metatree.errors import (
        AlreadyExistsError,
        ArchiveError,
        ConflictError,
        CorruptDatabaseError,
        CorruptMetadataError,
        DatabaseError,
        IntegrityError,
        LockError,
        LockLostError,
        LockTimeout,
        MetadataError,
        MetatreeError,
        NotFoundError,
        PathError,
        QueryError,
        StorageError,
        TemplateSyntaxError,
        TransactionAbortedError,
        UnresolvedPathError,
    )
    from metatree.fsck import FsckReport, GcReport
    from metatree.models import ModelStore
    from metatree.warnings import MetatreeWarning

__version__ = "0.3.0"

_LAZY: dict[str, str] = {
    "AlreadyExistsError": "metatree.errors",
    "ArchiveError": "metatree.errors",
    "ArchiveStore": "metatree.datastore",
    "ArtifactStore": "metatree.artifacts",
    "Backend": "metatree.backends",
    "Capabilities": "metatree.backends",
    "ConflictError": "metatree.errors",
    "CorruptDatabaseError": "metatree.errors",
    "CorruptMetadataError": "metatree.errors",
    "DataStore": "metatree.datastore",
    "DatabaseError": "metatree.errors",
    "FileRecord": "metatree._records",
    "FsckReport": "metatree.fsck",
    "GcReport": "metatree.fsck",
    "IntegrityError": "metatree.errors",
    "LockError": "metatree.errors",
    "LockLostError": "metatree.errors",
    "LockTimeout": "metatree.errors",
    "MetadataError": "metatree.errors",
    "Metatree": "metatree._tree",
    "MetatreeError": "metatree.errors",
    "MetatreeWarning": "metatree.warnings",
    "ModelStore": "metatree.models",
    "Node": "metatree._node",
    "NotFoundError": "metatree.errors",
    "PathError": "metatree.errors",
    "Provenance": "metatree._records",
    "QueryError": "metatree.errors",
    "Storage": "metatree._storage",
    "StorageError": "metatree.errors",
    "TemplateSyntaxError": "metatree.errors",
    "TransactionAbortedError": "metatree.errors",
    "UnresolvedPathError": "metatree.errors",
    "VerifyReport": "metatree._core.verify",
    "as_storage": "metatree._storage",
    "register_backend": "metatree.backends",
}
"""Public name -> the module defining it, imported on first use (PEP 562)."""


if not TYPE_CHECKING:  # hidden from type checkers: a typo'd name stays an error for mypy

    def __getattr__(name: str) -> Any:
        """Import a public name's module on first use and keep the name here (PEP 562).

        A public submodule (``metatree.errors``, ``metatree.fsck``, ...) is imported too, as
        the eager ``__init__`` did before: ``import metatree; metatree.errors.PathError``.
        """
        module = _LAZY.get(name)
        if module is None:
            if name.startswith("_") or importlib.util.find_spec(f"{__name__}.{name}") is None:
                raise AttributeError(f"module 'metatree' has no attribute {name!r}")
            return importlib.import_module(f"{__name__}.{name}")  # binds it here as well
        value = getattr(importlib.import_module(module), name)
        globals()[name] = value  # later lookups are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted({*globals(), *_LAZY})


__all__ = [
    "AlreadyExistsError",
    "ArchiveError",
    "ArchiveStore",
    "ArtifactStore",
    "Backend",
    "Capabilities",
    "ConflictError",
    "CorruptDatabaseError",
    "CorruptMetadataError",
    "DataStore",
    "DatabaseError",
    "FileRecord",
    "FsckReport",
    "GcReport",
    "IntegrityError",
    "LockError",
    "LockLostError",
    "LockTimeout",
    "MetadataError",
    "Metatree",
    "MetatreeError",
    "MetatreeWarning",
    "ModelStore",
    "Node",
    "NotFoundError",
    "PathError",
    "Provenance",
    "QueryError",
    "Storage",
    "StorageError",
    "TemplateSyntaxError",
    "TransactionAbortedError",
    "UnresolvedPathError",
    "VerifyReport",
    "__version__",
    "as_storage",
    "register_backend",
]
