"""metatree: a filesystem-backed metadata database for ML artifacts.

A database is a tree with fixed levels (``keys``); every node is a directory holding a
``metadata.json`` (a ``children`` index plus free metadata) and files, on any fsspec
filesystem. See `Metatree`.
"""

from __future__ import annotations

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
