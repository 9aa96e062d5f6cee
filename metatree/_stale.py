"""When fsck calls a lease stale: the holder provably gone, or silent by the storage's clock.

A lease body carries ``expires`` from the *holder's* clock; judged on ours, a holder whose
clock runs minutes slow looks long expired while it renews every ``ttl / 3`` (and one whose
clock runs fast looks alive long after it died). The storage keeps its own clock: S3 stamps
``LastModified``, Azure ``Last-Modified``, WebHDFS ``modificationTime``, a local or NFS disk
``mtime``, each on every renewal. So besides a holder provably gone on this machine
(`LeaseInfo.holder_gone`), fsck calls a lease stale only when both clocks agree: its
``expires`` passed more than `SKEW` seconds ago on our clock, *and* the storage last wrote
the lock object more than its ``ttl`` + `SKEW` seconds ago, compared with our clock. A live
holder rewrites it every ``ttl / 3``, so a live lease is called stale only if our clock runs
more than ``ttl`` + 60 s ahead of the storage's: that is the bound (docs/fsck.md). A store
that reports no modification time leaves the holder's clock alone to judge, as `break_lock` does.
"""

from __future__ import annotations

import datetime
import time
from typing import TYPE_CHECKING, Any

from metatree.backends.base import translate_errors
from metatree.errors import MetatreeError

if TYPE_CHECKING:
    from metatree._locking import LeaseInfo
    from metatree._storage import Storage

__all__ = ["SKEW", "silent", "written_at"]

SKEW = 60.0
"""Seconds of clock difference allowed (between the holder, the storage, and us)."""


def written_at(storage: Storage, rel: str) -> float | None:
    """Return when the storage last wrote `rel`, in POSIX seconds on its clock (None: unknown)."""
    try:
        with translate_errors(storage.url_of(rel)):
            details = storage.backend.fs.info(storage.abs(rel))
    except (MetatreeError, OSError):
        return None
    return _seconds(details)


_TIME_KEYS = (
    *(("LastModified", 1.0), ("last_modified", 1.0)),  # s3fs, adlfs
    *(("mtime", 1.0), ("modificationTime", 1e-3)),  # local disk and gcsfs, WebHDFS
)


def _seconds(details: dict[str, Any]) -> float | None:
    """Read a modification time from an fsspec ``info`` dict, whatever the filesystem names it."""
    for key, scale in _TIME_KEYS:
        value = details.get(key)
        if isinstance(value, datetime.datetime):
            return value.timestamp()
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) * scale
    created = details.get("created")  # fsspec's memory filesystem: a new file per write
    return created.timestamp() if isinstance(created, datetime.datetime) else None


def silent(storage: Storage, rel: str, info: LeaseInfo) -> bool:
    """Whether the lease at `rel` is expired on our clock and unwritten for long on the storage's."""
    if not info.expires or info.expires + SKEW >= time.time():
        return False
    written = written_at(storage, rel)
    return written is None or written + info.ttl + SKEW < time.time()
