"""Integrity on read: a recorded file is checked against its sha256 while it streams.

Readers take no lock, so a get can read a file's record, then the bytes of a replacement
that a forced put stored after it (the writer rewrites the record right after the file). A
mismatch is therefore confirmed before it is reported (`Check._confirm`): bytes that match a
record committed meanwhile are accepted, a record that changed to something else makes the
read a `ConflictError` (retry it), and only bytes that differ from a record nobody changed
raise `IntegrityError`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from metatree._records import FileRecord, record_of
from metatree.errors import ConflictError, IntegrityError, NotFoundError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from metatree._core.db import Database
    from metatree._transfer import Moved
    from metatree._types import NodePath

__all__ = ["Check", "settle", "verified", "wait_for_writer"]

_POLL = 0.05
"""First pause between re-reads of a record while a writer holds the lock (doubles to 1 s)."""


@dataclass(slots=True)
class Check:
    """The record one read is checked against, and how to confirm a mismatch."""

    db: Database
    path: NodePath
    """The node holding the file."""
    name: str
    """The file's name in the node (``"dir/file"`` inside a stored directory)."""
    record: FileRecord

    @property
    def url(self) -> str:
        """The file's URL, for errors."""
        return self.db.url(self.path, self.name)

    def moved(self, moved: Moved) -> None:
        """Accept a finished transfer whose size and sha256 match the record, or raise."""
        self.confirm(moved.digest or "", moved.size)

    def confirm(self, digest: str, size: int) -> None:
        """Raise `IntegrityError` unless `digest` and `size` match the record, now or re-read."""
        self._confirm(lambda r: (r.sha256, r.size) == (digest, size), digest)

    def allow_size(self, size: int) -> None:
        """Raise `IntegrityError` if `size` bytes already exceed the record (read or re-read)."""
        self._confirm(lambda r: r.size >= size, f"more than {self.record.size} bytes")

    def missing(self) -> None:
        """Raise for a recorded file that is not stored: `IntegrityError`, or `ConflictError`."""
        self._confirm(lambda _: False, "")

    def _confirm(self, fits: Callable[[FileRecord], bool], read: str) -> None:
        """Accept if the record fits, now or once confirmed (`settle`); keep the one that fits."""
        if not fits(self.record):
            self.record = settle(self.db, self.path, self.name, self.record, fits, read)

    @classmethod
    def unrecorded(cls, db: Database, path: NodePath, name: str) -> Check:
        """Return the check of a file found in a recorded directory without a record of its own.

        Its directory's put did not store it (`IntegrityError`, kind ``"unexpected"``) unless
        a concurrent put records it meanwhile: then it is checked against that record.
        """
        return cls(db, path, name, settle(db, path, name, None, lambda _: True, "a file"))


def settle(
    db: Database,
    path: NodePath,
    name: str,
    first: FileRecord | None,
    fits: Callable[[FileRecord], bool],
    read: str,
) -> FileRecord:
    """Return a record of `name` that `fits` what was read, or raise: corruption or a race.

    `first` (the record the read began with, or None) did not fit. The record is read again.
    Changed since (a forced put or a remove committed meanwhile): if the new record fits, the
    bytes were the new file's; if not, they may be those of a version in between whose
    record is gone, so the read is `ConflictError` (retry it), never `IntegrityError`.
    Unchanged while a writer holds the lock: it may be between the file and its record, so
    wait for the end of that one hold (a new holder, a free or dead lock, or the lease time,
    whichever first). Unchanged after that: the data was changed behind metatree's back,
    `IntegrityError`. In a transaction our own lock excludes every writer: no waiting.
    """
    url = db.url(path, name)
    expected = "" if first is None else first.sha256
    if db.active_tx() is not None:
        raise IntegrityError(url, expected, read)
    waited_for: tuple[object, ...] | None = None
    for _ in _looks(db):
        # the lock is looked at before the record is read: a writer that replaced the file
        # held it from the file to the record, so a hold that ended (or none), then an
        # unchanged record, means no writer replaced it (the other order races)
        holder = _holder(db)
        try:
            again = record_of(db.read_metadata(path), name, url)
        except NotFoundError:
            again = None
        if again is not None and fits(again):
            return again
        if again != first:
            raise ConflictError(url, "the file was replaced or removed while it was read; retry")
        if holder is None or holder != (waited_for or holder):
            break
        waited_for = holder
    raise IntegrityError(url, expected, read)


def wait_for_writer(db: Database) -> None:
    """Wait until the lock's current hold ends (at most the lease time); at once if free.

    For a reader that found a state only a writer's unfinished step explains.
    """
    if db.active_tx() is not None:
        return  # the lock is ours: nobody else is writing
    first = _holder(db)
    for _ in _looks(db):
        if first is None or _holder(db) != first:
            return


def _looks(db: Database) -> Iterator[None]:
    """Yield at once, then after pauses growing from `_POLL` to 1 s, for the lease time."""
    deadline = time.monotonic() + db.lock_options["lock_ttl"]
    pause = _POLL
    while True:
        yield
        if time.monotonic() > deadline:
            return
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


def _holder(db: Database) -> tuple[object, ...] | None:
    """Identify the lock's current hold (None: free, dead, or not metatree's).

    A foreign lock (metatreedb's empty ``.lock``) writes no records, and a dead or expired
    lease finishes nothing: neither is waited for. Renewals keep the identity.
    """
    info = db.lock_status()
    if info is None or info.owner == "foreign" or info.is_dead():
        return None
    return (info.host, info.pid, info.acquired, info.token)


def verified(chunks: Iterator[bytes], check: Check) -> Iterator[bytes]:
    """Yield `chunks`, hashing them; at the end, a mismatch with the record raises.

    More bytes than recorded fail as soon as they arrive, without reading the rest.
    """
    hasher = hashlib.sha256()
    size = 0
    for chunk in chunks:
        size += len(chunk)
        if size > check.record.size:
            check.allow_size(size)
        hasher.update(chunk)
        yield chunk
    check.confirm(hasher.hexdigest(), size)
