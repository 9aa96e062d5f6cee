"""Integrity on read: a recorded file is checked against its sha256 while it streams.

Readers take no lock, so a get can read a file's record, then the bytes of a replacement
that a forced put stored after it (the writer rewrites the record right after the file). A
mismatch is therefore confirmed before it is reported: the record is read again and, while
another writer holds the DB lock, again until it is released (at most the lease time).
Only bytes that match no record the writer ever committed raise `IntegrityError`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from metatree._records import FileRecord, record_of
from metatree.errors import IntegrityError, NotFoundError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from metatree._core.db import Database
    from metatree._transfer import Moved
    from metatree._types import NodePath

__all__ = ["Check", "verified"]

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

    def _confirm(self, fits: Callable[[FileRecord], bool], read: str) -> None:
        """Accept if the record fits; else re-read it while a writer holds the lock.

        In a transaction our own lock excludes every writer, so the first answer is final.
        A node or record gone meanwhile leaves nothing to check against.
        """
        record = self.record
        if fits(record):
            return
        if self.db.active_tx() is not None:
            raise IntegrityError(self.url, record.sha256, read)
        deadline = time.monotonic() + self.db.lock_options["lock_ttl"]
        pause = _POLL
        while True:
            try:
                again = record_of(self.db.read_metadata(self.path), self.name, self.url)
            except NotFoundError:
                return
            if again is None:
                return
            if fits(again):
                self.record = again  # later checks of this read compare with the new record
                return
            if time.monotonic() > deadline or self.db.lock_status() is None:
                raise IntegrityError(self.url, again.sha256, read)
            time.sleep(pause)
            pause = min(pause * 2, 1.0)


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
