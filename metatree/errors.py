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
    │   └── CorruptDatabaseError                 its ``.metatree`` config is there but damaged
    │                                            (also a CorruptMetadataError)
    ├── IntegrityError (ValueError)              what was read differs from its file record
    ├── ArchiveError (ValueError)                a stored archive that cannot be extracted safely
    ├── ConflictError                            an object changed under a conditional write or a read
    ├── TransactionAbortedError                  a nested block raised: the transaction was undone
    ├── LockError
    │   ├── LockTimeout (TimeoutError)           waiting for the DB lock took too long
    │   └── LockLostError                        our lease expired or was broken: nothing committed
    └── StorageError (OSError)                   the backend failed in a way we cannot map

Errors carry typed fields and build their message in ``__init__``. They cross process
boundaries (lock holders and test workers run in other processes), so they must survive
pickling, and the builtin way cannot do it: it calls the class again with ``self.args``, which
holds the built message, not the constructor's arguments (and an `OSError` subclass would come
back with them wrapped twice). So `MetatreeError` records the arguments each error was built
with, for every subclass including a user's, and its one `__reduce__` builds it again from them.
"""

from __future__ import annotations

import contextlib
import functools
import pickle
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "AlreadyExistsError",
    "ArchiveError",
    "ConflictError",
    "CorruptDatabaseError",
    "CorruptMetadataError",
    "DatabaseError",
    "IntegrityError",
    "LockError",
    "LockLostError",
    "LockTimeout",
    "MetadataError",
    "MetatreeError",
    "NotFoundError",
    "PathError",
    "QueryError",
    "StorageError",
    "TemplateSyntaxError",
    "TransactionAbortedError",
    "UnresolvedPathError",
]


_ARGUMENTS = "_metatree_arguments"
"""Instance attribute holding ``(args, kwargs)`` of the outermost ``__init__`` call."""


def _recording(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap an ``__init__`` so that an error remembers the arguments it was built with.

    Only the outermost call records: the ``super().__init__(message)`` of a subclass must not
    replace the subclass's own arguments.
    """

    @functools.wraps(init)
    def __init__(self: MetatreeError, *args: Any, **kwargs: Any) -> None:
        if _ARGUMENTS not in self.__dict__:
            self.__dict__[_ARGUMENTS] = (args, kwargs)
        init(self, *args, **kwargs)

    return __init__


def _rebuild(
    cls: type[MetatreeError], args: tuple[Any, ...], kwargs: dict[str, Any] | None
) -> MetatreeError:
    """Unpickle an error: call its class with the arguments it was first built with.

    Where that is impossible (no arguments were recorded: a dataclass adds its ``__init__``
    after `__init_subclass__` ran; or the constructor refuses them now), the error is made
    without its constructor from its ``args``, and the pickled state restores its attributes.
    Unpickling must not fail: in a process pool, that breaks the pool instead of raising.
    """
    if kwargs is not None:
        with contextlib.suppress(Exception):  # any constructor failure: rebuild without it
            return cls(*args, **kwargs)
    error: MetatreeError = cls.__new__(cls, *args)
    return error


def _picklable(value: object) -> bool:
    try:
        pickle.dumps(value)
    except Exception:  # noqa: BLE001 - whatever pickling raises, the value stays behind
        return False
    return True


class MetatreeError(Exception):
    """Base class of every error metatree raises on purpose.

    Every subclass's ``__init__`` is wrapped (in `__init_subclass__`) to record its arguments,
    so that `__reduce__` rebuilds any error, a user's subclass too, with the same type,
    message and attributes.
    """

    exit_code: ClassVar[int] = 1
    """Exit code of the command line interface when this error ends a command."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _recording(cls.__dict__["__init__"])  # type: ignore[method-assign]

    @_recording
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        """Rebuild from the recorded arguments, then restore attributes set since (notes, ...).

        An attribute that cannot be pickled (a lock, a socket) is left behind, not allowed to
        turn the error into a pickling error in another process.
        """
        args, kwargs = self.__dict__.get(_ARGUMENTS, (self.args, None))
        if kwargs is not None and not _picklable((args, kwargs)):
            args, kwargs = self.args, None  # made without its constructor (see `_rebuild`)
        state = {k: v for k, v in self.__dict__.items() if k != _ARGUMENTS and _picklable(v)}
        return _rebuild, (type(self), args, kwargs), state


class NotFoundError(MetatreeError, FileNotFoundError):
    """No node or file at `path`."""

    exit_code = 3

    def __init__(self, path: str, what: str = "node or file") -> None:
        super().__init__(f"no {what} at {path!r}")
        self.path = path
        self.what = what


class AlreadyExistsError(MetatreeError, FileExistsError):
    """Something already occupies `path`; `hint` says how to proceed."""

    exit_code = 4

    def __init__(self, path: str, hint: str = "pass force=True to overwrite it") -> None:
        super().__init__(f"{path!r} already exists: {hint}")
        self.path = path
        self.hint = hint


class PathError(MetatreeError, ValueError):
    """A location or name that can never be valid, refused before any I/O."""

    exit_code = 2

    def __init__(self, location: str, reason: str) -> None:
        super().__init__(f"invalid location {location!r}: {reason}")
        self.location = location
        self.reason = reason


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


class QueryError(MetatreeError, ValueError):
    """A catalog or search request that cannot be answered: a bad filter, column or option.

    Raised before anything is read where the request itself is malformed (an unknown
    operator, a column that is not a str), and for a filter Arrow cannot evaluate on the
    catalog's columns (a number compared with a string column).
    """

    exit_code = 2

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"bad query {what}: {reason}")
        self.what = what
        self.reason = reason


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


class DatabaseError(MetatreeError, ValueError):
    """The root cannot be opened as this database (unrelated data, other keys, bad config)."""

    exit_code = 2

    def __init__(self, root: str, reason: str) -> None:
        super().__init__(f"cannot open metatree database at {root!r}: {reason}")
        self.root = root
        self.reason = reason


class CorruptDatabaseError(DatabaseError, CorruptMetadataError):
    """The root holds a ``.metatree`` config that does not parse or validate.

    Damage, not a usage mistake: "no database here" stays a plain `DatabaseError` (exit 2),
    while a config that is there but broken exits 5 like any corrupt stored file, so a
    script can tell a wrong ``--root`` from a tree that needs repair. Both bases hold, so
    ``except DatabaseError`` and ``except CorruptMetadataError`` both catch it.
    """

    exit_code = 5

    def __init__(self, root: str, reason: str) -> None:
        # the two bases build different messages from different arguments: build ours once
        MetatreeError.__init__(
            self,
            f"cannot open metatree database at {root!r}: {reason}; "
            "restore the .metatree config from a backup or repair it by hand",
        )
        self.root = root
        self.path = root
        self.reason = reason


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


class LockError(MetatreeError):
    """Base class of the DB-lock errors."""

    exit_code = 4  # the CLI table: 4 conflict or lock


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


class LockLostError(LockError):
    """Our lease on the DB lock expired or was taken: the pending write was not applied."""

    def __init__(self, lock_path: str, reason: str) -> None:
        super().__init__(f"lost the lock {lock_path!r}: {reason}; nothing was committed")
        self.lock_path = lock_path
        self.reason = reason


class StorageError(MetatreeError, OSError):
    """The storage backend failed at `path` in a way that has no better name."""

    exit_code = 1  # the CLI table: 1 other (a backend failure has no better class)

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"storage failure at {path!r}: {reason}")
        self.path = path
        self.reason = reason


class IntegrityError(MetatreeError, ValueError):
    """What was read is not what was recorded (the file records of `put`).

    The stored data was changed after metatree recorded it (a failing disk, an interrupted
    copy, another client, an attacker): `kind` says how. ``"mismatched"``: the bytes'
    sha256 or size differ from the record (`expected` is the recorded sha256, `actual` what
    was read); ``"missing"``: a recorded file of a directory is gone (`actual` is empty);
    ``"unexpected"``: a file inside a recorded directory that its put did not store
    (`expected` is empty). A download to a local file never appears under its final name; a
    streamed read raises after its last chunk, or as soon as more bytes than recorded
    arrived (a stream not read to its end is not checked).
    """

    exit_code = 5

    def __init__(self, path: str, expected: str, actual: str) -> None:
        if not actual:
            what = f"recorded sha256 {expected}, but the file is missing"
        elif not expected:
            what = "a file its directory's put did not store (planted, or copied in by hand)"
        else:
            what = f"recorded sha256 {expected}, read {actual}"
        super().__init__(
            f"integrity check failed for {path!r}: {what}; the stored data was changed after "
            "it was recorded (pass verify=False to read it anyway)"
        )
        self.path = path
        self.expected = expected
        self.actual = actual

    @property
    def kind(self) -> str:
        """``"mismatched"``, ``"missing"`` or ``"unexpected"`` (see the class docstring)."""
        if not self.actual:
            return "missing"
        return "mismatched" if self.expected else "unexpected"


class ArchiveError(MetatreeError, ValueError):
    """A stored archive that cannot be extracted safely; nothing was written outside its target.

    Raised for hostile or broken archives (absolute or ``..`` names, links out of the target,
    devices, duplicate entries, a truncated stream) and for local files an extraction would
    overwrite without ``overwrite=True``.
    """

    exit_code = 5

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"archive {path!r}: {reason}")
        self.path = path
        self.reason = reason
