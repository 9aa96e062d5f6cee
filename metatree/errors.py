"""Exceptions raised by metatree.

Every error is a `MetatreeError` and also the builtin that callers already catch, so
``except FileNotFoundError`` keeps working for code written against plain fsspec::

    MetatreeError
    ├── NotFoundError (FileNotFoundError)        nothing at a node or file path
    ├── AlreadyExistsError (FileExistsError)     put without force over an existing file, ...
    ├── PathError (ValueError)                   a location that can never be valid
    │   ├── TemplateSyntaxError                  unmatched ``<`` / ``>`` in a template
    │   └── UnresolvedPathError                  a ``<key>`` whose value is missing or not a name
    ├── MetadataError (ValueError)               metadata a caller tried to write is invalid
    ├── CorruptMetadataError (ValueError)        a stored metadata.json does not parse
    ├── DatabaseError (ValueError)               the root is not (or not this) metatree database
    ├── ConflictError                            an object changed under a conditional write or a read
    ├── TransactionAbortedError                  a nested block raised: the transaction was undone
    ├── LockError
    │   ├── LockTimeout (TimeoutError)           waiting for the DB lock took too long
    │   └── LockLostError                        our lease expired or was broken: nothing committed
    └── StorageError (OSError)                   the backend failed in a way we cannot map

Errors carry typed fields, build their message in ``__init__`` and define ``__reduce__`` so
they survive pickling (an `OSError` subclass would otherwise come back with its arguments
wrapped twice).
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyExistsError",
    "ConflictError",
    "CorruptMetadataError",
    "DatabaseError",
    "LockError",
    "LockLostError",
    "LockTimeout",
    "MetadataError",
    "MetatreeError",
    "NotFoundError",
    "PathError",
    "StorageError",
    "TemplateSyntaxError",
    "TransactionAbortedError",
    "UnresolvedPathError",
]


class MetatreeError(Exception):
    """Base class of every error metatree raises on purpose."""

    exit_code: ClassVar[int] = 1
    """Exit code of the command line interface when this error ends a command."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.message,)


class NotFoundError(MetatreeError, FileNotFoundError):
    """No node or file at `path`."""

    exit_code = 3

    def __init__(self, path: str, what: str = "node or file") -> None:
        super().__init__(f"no {what} at {path!r}")
        self.path = path
        self.what = what

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.path, self.what)


class AlreadyExistsError(MetatreeError, FileExistsError):
    """Something already occupies `path`; `hint` says how to proceed."""

    exit_code = 4

    def __init__(self, path: str, hint: str = "pass force=True to overwrite it") -> None:
        super().__init__(f"{path!r} already exists: {hint}")
        self.path = path
        self.hint = hint

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.path, self.hint)


class PathError(MetatreeError, ValueError):
    """A location or name that can never be valid, refused before any I/O."""

    exit_code = 2

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"invalid location {location!r}: {reason}")
        self.location = location
        self.reason = reason

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.location, self.reason)


class TemplateSyntaxError(PathError):
    """A path template whose ``<`` and ``>`` do not pair up around a key name."""


class UnresolvedPathError(PathError):
    """A ``<key>`` placeholder that the parent node's metadata cannot resolve to a name."""


class MetadataError(MetatreeError, ValueError):
    """Metadata that cannot be stored: reserved key, non-JSON value, NaN, ..."""

    exit_code = 2

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"cannot store metadata {key!r}: {reason}")
        self.key = key
        self.reason = reason

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.key, self.reason)


class CorruptMetadataError(MetatreeError, ValueError):
    """A stored metadata file that does not parse or has the wrong shape.

    It is never read as ``{}``: doing so would make the next write drop the children index.
    """

    exit_code = 5

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(
            f"corrupt metadata at {path!r}: {reason}; restore it from a backup or repair it by hand"
        )
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.path, self.reason)


class DatabaseError(MetatreeError, ValueError):
    """The root cannot be opened as this database (unrelated data, other keys, bad config)."""

    exit_code = 2

    def __init__(self, root: str, reason: str) -> None:
        super().__init__(f"cannot open metatree database at {root!r}: {reason}")
        self.root = root
        self.reason = reason

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.root, self.reason)


class ConflictError(MetatreeError):
    """The object at `path` changed under us: a conditional write lost, or a read saw two versions.

    Raised by the storage layer; the database turns a lost conditional commit into
    `LockLostError` (a writer that lost its lease), and a read that saw the file replaced while
    it streamed surfaces as this error, so the caller can retry.
    """

    exit_code = 4

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path!r} changed concurrently: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.path, self.reason)


class TransactionAbortedError(MetatreeError):
    """A block nested in a transaction raised, and the outer block went on: nothing committed.

    Nested blocks are one unit with the outermost (no savepoints); an exception that left any
    of them rolls the whole transaction back, even if an outer block caught it. The original
    exception is the ``__cause__``.
    """

    exit_code = 4

    def __init__(self, reason: str) -> None:
        super().__init__(f"the transaction was rolled back: {reason}; nothing was committed")
        self.reason = reason

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.reason,)


class LockError(MetatreeError):
    """Base class of the DB-lock errors."""

    exit_code = 6


class LockTimeout(LockError, TimeoutError):
    """The DB lock stayed held by `holder` for longer than `timeout` seconds."""

    def __init__(
        self,
        lock_path: str,
        timeout: float,
        holder: str,
        advice: str = "retry later, or break the lock if its holder is known to be dead",
    ) -> None:
        super().__init__(
            f"timed out after {timeout:g}s waiting for the lock {lock_path!r}, held by {holder}; "
            f"{advice}"
        )
        self.lock_path = lock_path
        self.timeout = timeout
        self.holder = holder
        self.advice = advice  # what to do depends on the lock strategy

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.lock_path, self.timeout, self.holder, self.advice)


class LockLostError(LockError):
    """Our lease on the DB lock expired or was taken: the pending write was not applied."""

    def __init__(self, lock_path: str, reason: str) -> None:
        super().__init__(f"lost the lock {lock_path!r}: {reason}; nothing was committed")
        self.lock_path = lock_path
        self.reason = reason

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.lock_path, self.reason)


class StorageError(MetatreeError, OSError):
    """The storage backend failed at `path` in a way that has no better name."""

    exit_code = 7

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"storage failure at {path!r}: {reason}")
        self.path = path
        self.reason = reason

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return type(self), (self.path, self.reason)
