"""Pick the DB lock's strategy by filesystem class, through a lazy registry.

As fsspec's ``known_implementations``: dotted class paths, imported only when the filesystem
class is already loaded, never a comparison of protocol strings.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

from metatree._locking._base import BaseLock, NullLock
from metatree._locking._generic import ContentLeaseStore
from metatree._locking._info import MAX_TTL
from metatree._locking._lease import LeaseLock
from metatree._paths import LOCK_FILE
from metatree._registry import ClassRegistry
from metatree.errors import DatabaseError
from metatree.warnings import MetatreeWarning

if TYPE_CHECKING:
    from metatree._storage import Storage

__all__ = ["check_lock_options", "make_lock", "register_lock"]

_REGISTRY = ClassRegistry(
    "lock strategy",
    {  # filesystem class -> a BaseLock, or a LeaseStore for LeaseLock
        "fsspec.implementations.local.LocalFileSystem": "metatree._locking._local.LocalLock",
        "fsspec.implementations.memory.MemoryFileSystem": (
            "metatree._locking._generic.ContentLeaseStore"
        ),
        "s3fs.core.S3FileSystem": "metatree._locking._s3.S3LeaseStore",
        "fsspec.implementations.webhdfs.WebHDFS": "metatree._locking._webhdfs.WebHDFSLeaseStore",
    },
)


def register_lock(fs_class: str, strategy: str, *, clobber: bool = False) -> None:
    """Register a lock strategy (dotted path of a `BaseLock` or `LeaseStore`) for `fs_class`."""
    _REGISTRY.register(fs_class, strategy, clobber=clobber)


def _strategy_for(storage: Storage) -> Any:
    strategy = _REGISTRY.find(storage.fs)
    if strategy is not None:
        return strategy
    warnings.warn(
        f"no lock strategy is registered for {type(storage.fs).__name__}: the DB lock is "
        "exclusive only among the threads of this process (see register_lock)",
        MetatreeWarning,
        stacklevel=4,
    )
    return ContentLeaseStore


def check_lock_options(url: str, ttl: object, timeout: object) -> None:
    """Refuse lock settings that cannot work, before anything is written (`DatabaseError`).

    A lease of zero or negative length would make every commit fail its lease check, and
    a NaN timeout would compare false with everything (a raw ``ValueError`` from a sleep).
    """
    if isinstance(ttl, bool) or not isinstance(ttl, int | float):
        raise DatabaseError(url, f"lock_ttl must be a number of seconds, not {ttl!r}")
    if not (math.isfinite(ttl) and 0 < ttl <= MAX_TTL):
        raise DatabaseError(url, f"lock_ttl must be above 0 and at most {MAX_TTL:g}s, not {ttl!r}")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise DatabaseError(url, f"lock_timeout must be a number of seconds, not {timeout!r}")
    if math.isnan(timeout):
        raise DatabaseError(
            url, "lock_timeout must be a number of seconds (negative: wait forever), not nan"
        )


def make_lock(
    storage: Storage,
    *,
    enabled: bool = True,
    ttl: float = 30.0,
    timeout: float = 60.0,
    **kwargs: Any,
) -> BaseLock:
    """Return the DB lock for `storage`: its backend's strategy, or a `NullLock` if disabled."""
    check_lock_options(storage.url, ttl, timeout)
    timeout = -1.0 if math.isinf(timeout) else float(timeout)  # inf: wait forever, as negative
    if not enabled:
        return NullLock(storage.url_of(LOCK_FILE), timeout=timeout)
    strategy = _strategy_for(storage)
    if issubclass(strategy, BaseLock):
        lock: BaseLock = strategy(storage, LOCK_FILE, timeout=timeout, **kwargs)
        return lock
    return LeaseLock(strategy(storage, LOCK_FILE), ttl=ttl, timeout=timeout, **kwargs)
