"""Make the DB lock: check the settings, then ask the backend for its strategy.

Each backend brings its own lock (`metatree.backends.base.Backend.make_lock`): local disk's
flock, a lease on the store's conditional writes elsewhere.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from metatree._locking._base import BaseLock, NullLock
from metatree._locking._info import MAX_TTL
from metatree._names import LOCK_FILE
from metatree.errors import DatabaseError

if TYPE_CHECKING:
    from metatree._storage import Storage

__all__ = ["check_lock_options", "make_lock"]


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
    return storage.backend.make_lock(storage, LOCK_FILE, ttl=ttl, timeout=timeout, **kwargs)
